//! Real netlink in network namespaces made by the test: veth pairs and a
//! bridge. Needs root (CI runs as root); never skips.

use std::process::Stdio;
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::preflight_bin;
use preflight_tests::watcher::Watcher;
use serde_json::Value;

/// br0 with ports v0b, v1b; their peers v0a (192.0.2.10/24, default route)
/// and v1a outside the bridge.
fn bridged() -> Netns {
    let ns = Netns::new("bridge");
    for l in [
        "link add br0 type bridge",
        "link add v0a type veth peer name v0b",
        "link add v1a type veth peer name v1b",
        "link set v0b master br0",
        "link set v1b master br0",
        "link set br0 up",
        "link set v0a up",
        "link set v0b up",
        "link set v1a up",
        "link set v1b up",
        "addr add 192.0.2.10/24 dev v0a",
        "addr add 198.51.100.1/24 dev br0",
        "route add default via 192.0.2.1",
    ] {
        ns.ip(l);
    }
    ns
}

fn inspect_json(ns: &Netns) -> (Value, i32) {
    let out = ns
        .command(preflight_bin())
        .args(["inspect", "--json"])
        .output()
        .expect("preflight runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().expect("exit code"))
}

fn iface<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in inspect output"))
}

/// Waits until carrier settles (veth carrier comes up asynchronously).
fn settle(ns: &Netns, name: &str, carrier: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if iface(&inspect_json(ns).0, name)["carrier"] == carrier {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} carrier never became {carrier}");
}

/// "CODE subject" of every finding in an inspect/baseline JSON answer, sorted.
fn finding_codes(v: &Value) -> Vec<String> {
    let mut codes: Vec<String> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["code"].as_str().expect("code"),
                f["subject"].as_str().expect("subject")
            )
        })
        .collect();
    codes.sort();
    codes
}

#[test]
fn inspect_reports_carrier_oper_state_and_addresses_exactly() {
    let ns = bridged();
    settle(&ns, "v1a", true);
    let (v, code) = inspect_json(&ns);
    assert_eq!(code, 0, "healthy namespace is go: {v}");
    assert_eq!(v["verdict"], "go");
    for name in ["br0", "v0a", "v0b", "v1a", "v1b"] {
        let i = iface(&v, name);
        assert_eq!(i["carrier"], true, "{name}");
        assert_eq!(i["admin_up"], true, "{name}");
        assert_eq!(i["oper_state"], "up", "{name}");
    }
    let br0 = iface(&v, "br0")["index"].clone();
    assert_eq!(iface(&v, "v0b")["controller"], br0);
    assert_eq!(iface(&v, "v0a")["controller"], Value::Null);
    assert_eq!(iface(&v, "v0a")["kind"], "veth");
    let v0a = iface(&v, "v0a")["index"].clone();
    let v4: Vec<String> = v["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter(|a| a["ifindex"] == v0a && !a["address"].as_str().expect("str").contains(':'))
        .map(|a| {
            format!(
                "{}/{} {}",
                a["address"].as_str().expect("s"),
                a["prefix_len"],
                a["permanent"]
            )
        })
        .collect();
    assert_eq!(v4, ["192.0.2.10/24 true"]);
    let defaults: Vec<&Value> = v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| r["prefix_len"] == 0)
        .collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["gateway"], "192.0.2.1");

    // Peer down: v1b admin down, v1a admin up without carrier -> no carrier warning.
    ns.ip("link set v1b down");
    settle(&ns, "v1a", false);
    let (v, code) = inspect_json(&ns);
    assert_eq!(code, 0, "a warning does not block");
    let f = &v["findings"][0];
    assert_eq!(
        (
            f["code"].as_str(),
            f["subject"].as_str(),
            f["severity"].as_str()
        ),
        (Some("LINK_NO_CARRIER"), Some("v1a"), Some("warning"))
    );
    assert_eq!(iface(&v, "v1a")["oper_state"], "lowerlayerdown");
    assert_eq!(iface(&v, "v1b")["admin_up"], false);
}

#[test]
fn inspect_exits_1_on_a_critical_finding() {
    let ns = bridged();
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("preflight.toml");
    std::fs::write(&cfg, "[policy.severity]\nLINK_NO_CARRIER = \"critical\"\n")
        .expect("write config");
    ns.ip("link set v1b down");
    settle(&ns, "v1a", false);
    let out = ns
        .command(preflight_bin())
        .args(["inspect", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NO-GO") && text.contains("LINK_NO_CARRIER") && text.contains("v1a"),
        "{text}"
    );
}

#[test]
fn watch_reports_no_carrier_when_the_peer_goes_down_and_clears_when_it_returns() {
    let ns = bridged();
    settle(&ns, "v1a", true);
    let w = Watcher::start(ns.command(preflight_bin()), &[]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        ns.ip("link set v1b down");
        let v = w.expect(
            "appeared",
            "LINK_NO_CARRIER",
            "v1a",
            Duration::from_secs(10),
        );
        assert_eq!(v["finding"]["severity"], "warning");
        ns.ip("link set v1b up");
        w.expect("cleared", "LINK_NO_CARRIER", "v1a", Duration::from_secs(10));
    }
}

#[test]
fn watch_recovers_from_netlink_overrun_and_converges() {
    let ns = Netns::new("storm");
    // A tiny receive buffer guarantees ENOBUFS during the storm below.
    let w = Watcher::start(ns.command(preflight_bin()), &["--netlink-rcvbuf", "1024"]);
    std::thread::sleep(Duration::from_millis(500));
    let n = 150;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(format!("link add s{i}a type veth peer name s{i}b"));
        batch.push(format!("link set s{i}a up"));
    }
    ns.ip_batch(&batch);
    // Every sNa is admin up with its peer down: one finding each, none lost.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < n && Instant::now() < deadline {
        if let Some(v) = w.next_line(Duration::from_secs(1)) {
            if v["change"] == "appeared" && v["finding"]["code"] == "LINK_NO_CARRIER" {
                seen.insert(
                    v["finding"]["subject"]
                        .as_str()
                        .expect("subject")
                        .to_owned(),
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        n,
        "findings lost after overrun; stderr: {}",
        w.stderr()
    );
    let log = w.stderr();
    assert!(
        log.contains("ENOBUFS"),
        "the storm should have overrun the 1 KiB buffer and forced a re-read: {log}"
    );
}

/// The seed's fallback in a namespace: a statically configured interface
/// loses its static address to a dynamic one, and its default route.
#[test]
fn expected_state_catches_dhcp_fallback_and_lost_route() {
    let ns = bridged();
    settle(&ns, "v1a", true);
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("osnet.yaml");
    std::fs::write(
        &cfg,
        "network_config:\n  - type: interface\n    name: v0a\n    use_dhcp: false\n    mtu: 1500\n    addresses:\n      - ip_netmask: 192.0.2.10/24\n    routes:\n      - default: true\n        next_hop: 192.0.2.1\n",
    )
    .expect("write os-net-config");
    let inspect = |ns: &Netns| {
        let out = ns
            .command(preflight_bin())
            .args(["inspect", "--json", "--os-net-config"])
            .arg(&cfg)
            .output()
            .expect("runs");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        let codes = finding_codes(&v);
        (out.status.code(), codes, v)
    };
    let (code, codes, v) = inspect(&ns);
    assert_eq!(
        (code, codes.clone()),
        (Some(0), vec![]),
        "matches its configuration: {codes:?}"
    );
    assert_eq!(v["expected_from"], cfg.display().to_string());

    // The fallback: the static address replaced by a leased one; the
    // default route goes with the old address.
    ns.ip("addr flush dev v0a scope global");
    ns.ip("addr add 192.0.2.77/24 dev v0a valid_lft 300 preferred_lft 300");
    let (code, codes, _) = inspect(&ns);
    assert_eq!(code, Some(1));
    assert_eq!(
        codes,
        [
            "DEFAULT_ROUTE_MISSING v0a",
            "EXPECTED_ADDRESS_MISSING v0a/192.0.2.10",
            "UNEXPECTED_DHCP v0a"
        ]
    );

    // Back to the configuration: go again.
    ns.ip("addr flush dev v0a scope global");
    ns.ip("addr add 192.0.2.10/24 dev v0a");
    ns.ip("route add default via 192.0.2.1");
    let (code, codes, _) = inspect(&ns);
    assert_eq!((code, codes), (Some(0), vec![]));

    // Only the route lost.
    ns.ip("route del default");
    let (_, codes, _) = inspect(&ns);
    assert_eq!(codes, ["DEFAULT_ROUTE_MISSING v0a"]);

    // A broken file is a critical finding, never a silent go.
    std::fs::write(&cfg, "network_config: 3\n").expect("write");
    let (code, codes, _) = inspect(&ns);
    assert_eq!(code, Some(1));
    assert!(
        codes.contains(&"EXPECTATIONS_INVALID expectations".to_string()),
        "{codes:?}"
    );
}

#[test]
fn baseline_before_and_after_reports_every_difference() {
    let ns = bridged();
    settle(&ns, "v1a", true);
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("baseline.json");
    let out = ns
        .command(preflight_bin())
        .args(["baseline", "save", "--out"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compare = |ns: &Netns| {
        let out = ns
            .command(preflight_bin())
            .args(["baseline", "compare", "--json"])
            .arg(&file)
            .output()
            .expect("runs");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        let codes = finding_codes(&v);
        (out.status.code(), codes)
    };
    assert_eq!(compare(&ns), (Some(0), vec![]), "unchanged node");
    ns.ip("link set v0a mtu 1400");
    ns.ip("route del default");
    ns.ip("link set v1b nomaster");
    let (code, codes) = compare(&ns);
    assert_eq!(code, Some(1));
    assert_eq!(
        codes,
        ["DEFAULT_ROUTE_MISSING v0a", "MTU_MISMATCH v0a"],
        "{codes:?}"
    );
    ns.ip("link del v1a");
    let (_, codes) = compare(&ns);
    assert!(
        codes.contains(&"EXPECTED_INTERFACE_MISSING v1a".to_string()),
        "{codes:?}"
    );
}

/// Reachability: the agent probes the configured default gateway through its
/// interface by ICMP and by ARP. The gateway drops ICMP echo -> only the ICMP
/// probe fails (ARP still answers: the path is there, a filter is not); the
/// gateway loses its address (links stay up) -> both fail, REACHABILITY_FAILED;
/// it answers again -> recovery of both.
#[test]
fn agent_probe_reports_reachability_failed_and_recovery() {
    let node = Netns::new("pnode");
    let gw = Netns::new("pgw");
    node.ip("link add up0 type veth peer name gp0");
    node.ip(&format!("link set gp0 netns {}", gw.name));
    node.ip("addr add 192.0.2.10/24 dev up0");
    node.ip("link set up0 up");
    gw.ip("addr add 192.0.2.1/24 dev gp0");
    gw.ip("link set gp0 up");
    node.ip("route add default via 192.0.2.1");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("osnet.yaml"),
        "network_config:\n  - type: interface\n    name: up0\n    addresses:\n      - ip_netmask: 192.0.2.10/24\n    routes:\n      - default: true\n        next_hop: 192.0.2.1\n",
    )
    .expect("osnet");
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "[agent]\nnode = \"pnode\"\nlisten = \"127.0.0.1:9101\"\nos_net_config = \"{}\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"150ms\"\nprobe_fail_after = 3\nprobe_recover_after = 2\n",
            dir.join("osnet.yaml").display()
        ),
    )
    .expect("config");
    let _agent = preflight_tests::Proc(
        node.command(preflight_bin())
            .args(["agent", "--config"])
            .arg(dir.join("agent.toml"))
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    );
    let report = || -> Option<Value> {
        let out = node
            .command("curl")
            .args(["-sf", "http://127.0.0.1:9101/v1/report"])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let wait = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = report() {
                if pred(&v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent never reported: {what}; last: {:?}",
                report()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    const ICMP: &str = "icmp 192.0.2.1 via up0";
    const ARP: &str = "arp 192.0.2.1 via up0";
    let failed = |v: &Value, target: &str| {
        v["findings"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["code"] == "REACHABILITY_FAILED" && f["subject"] == target)
        })
    };
    let answered = |v: &Value, target: &str| {
        v["probes"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p["target"] == target && p["failed"] == false && p["consecutive_failures"] == 0
            })
        })
    };
    let v = wait("ICMP and ARP probes of the gateway ok", &|v| {
        answered(v, ICMP) && answered(v, ARP)
    });
    assert!(!failed(&v, ICMP) && !failed(&v, ARP), "{v:#}");
    let arp = v["probes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["target"] == ARP))
        .expect("ARP probe in the report");
    assert!(arp["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{arp}");
    // The same probes by hand: `preflight probe`.
    let probe = |args: &[&str]| {
        let out = node
            .command(preflight_bin())
            .arg("probe")
            .args(args)
            .output()
            .expect("preflight probe");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = probe(&["arp:192.0.2.1@up0", "icmp:192.0.2.1@up0", "-c", "2"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("arp 192.0.2.1 via up0: ok, 2/2 answered"),
        "{text}"
    );
    let (code, text) = probe(&["arp:192.0.2.1"]);
    assert_eq!(
        code,
        Some(64),
        "ARP without an interface is bad usage: {text}"
    );
    assert!(text.contains("arp:IPV4@DEVICE"), "{text}");
    // The gateway drops ICMP echo: only the ICMP probe fails.
    gw.command("sysctl")
        .args(["-qw", "net.ipv4.icmp_echo_ignore_all=1"])
        .status()
        .expect("sysctl");
    let v = wait("ICMP failed, ARP still answered", &|v| {
        failed(v, ICMP) && answered(v, ARP)
    });
    assert!(!failed(&v, ARP), "{v:#}");
    assert_eq!(v["verdict"], "no-go");
    gw.command("sysctl")
        .args(["-qw", "net.ipv4.icmp_echo_ignore_all=0"])
        .status()
        .expect("sysctl");
    wait("ICMP recovered", &|v| {
        !failed(v, ICMP) && v["verdict"] == "go"
    });
    // The gateway stops answering anything; every link stays up.
    gw.ip("addr del 192.0.2.1/24 dev gp0");
    let v = wait("REACHABILITY_FAILED for ICMP and ARP", &|v| {
        failed(v, ICMP) && failed(v, ARP)
    });
    assert_eq!(v["verdict"], "no-go");
    let arp = v["probes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["target"] == ARP))
        .expect("ARP probe in the report");
    assert!(
        arp["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no ARP reply")),
        "{arp}"
    );
    let (code, text) = probe(&["arp:192.0.2.1@up0", "-c", "2", "--timeout", "100ms"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED, 0/2 answered"), "{text}");
    assert!(
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["code"] != "LINK_NO_CARRIER"),
        "links are up: {v:#}"
    );
    gw.ip("addr add 192.0.2.1/24 dev gp0");
    let v = wait("recovery", &|v| {
        !failed(v, ICMP) && !failed(v, ARP) && v["verdict"] == "go"
    });
    assert!(answered(&v, ICMP) && answered(&v, ARP), "{v:#}");
}

/// preflight's own `[expect]` section, without any os-net-config file.
#[test]
fn configured_expectations_in_toml() {
    let ns = bridged();
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("expect.toml");
    std::fs::write(&cfg, "[[expect.interface]]\nname = \"v0a\"\naddresses = [\"192.0.2.10/24\"]\ndefault_gateway = \"192.0.2.1\"\n").expect("write");
    let run = |ns: &Netns| {
        let out = ns
            .command(preflight_bin())
            .args(["inspect", "--json", "--config"])
            .arg(&cfg)
            .output()
            .expect("runs");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        (
            out.status.code(),
            v["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .map(|f| f["code"].as_str().expect("code").to_owned())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(&ns), (Some(0), vec![]));
    ns.ip("addr del 192.0.2.10/24 dev v0a");
    let (code, codes) = run(&ns);
    assert_eq!(code, Some(1));
    assert!(
        codes.contains(&"EXPECTED_ADDRESS_MISSING".to_string())
            && codes.contains(&"DEFAULT_ROUTE_MISSING".to_string()),
        "{codes:?}"
    );
}
