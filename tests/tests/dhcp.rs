//! The DHCP probe against a real DHCP server (dnsmasq) in a namespace pair:
//! an offer is seen and decoded; with the server stopped none is; and the
//! probe changes nothing: no address, no route, no lease anywhere. Needs
//! root and dnsmasq (installed here when missing); never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, Proc};
use serde_json::Value;

const SERVER: &str = "10.99.0.1";
const MAC: &str = "02:00:5e:10:00:42";

/// dnsmasq, installed (dnsmasq-base) when missing; panics when impossible.
fn dnsmasq() -> PathBuf {
    let find = || {
        ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return p;
    }
    let out = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsmasq-base",
        ])
        .output()
        .expect("run apt-get");
    find().unwrap_or_else(|| {
        panic!(
            "dnsmasq is missing and could not be installed (apt-get install dnsmasq-base): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A client namespace (c0, MAC fixed, no IPv4 address) wired to a server
/// namespace (s0, 10.99.0.1/24).
fn pair() -> (Netns, Netns) {
    let client = Netns::new("dhcpc");
    let server = Netns::new("dhcps");
    client.ip(&format!(
        "link add c0 address {MAC} type veth peer name s0 netns {}",
        server.name
    ));
    // No IPv6 on c0: its link-local address and routes would appear while
    // the test runs (DAD) and blur the "nothing changed" comparison.
    let out = client
        .command("sysctl")
        .args([
            "-qw",
            "net.ipv6.conf.c0.disable_ipv6=1",
            // Reverse-path filtering as RHEL and systemd set it: without an
            // address on c0 the kernel drops the OFFER before any UDP socket.
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.c0.rp_filter=1",
        ])
        .output()
        .expect("sysctl runs");
    assert!(out.status.success(), "sysctl: {out:?}");
    client.ip("link set c0 up");
    server.ip(&format!("addr add {SERVER}/24 dev s0"));
    server.ip("link set s0 up");
    (client, server)
}

/// dnsmasq serving 10.99.0.50-99 on s0, DHCP only, its lease file in `dir`.
fn serve(server: &Netns, dir: &Path) -> Proc {
    let p = Proc(
        server
            .command(dnsmasq())
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=s0",
                "--bind-interfaces",
                "--dhcp-range=10.99.0.50,10.99.0.99,255.255.255.0,1h",
                "--log-dhcp",
            ])
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dnsmasq.log")).expect("log"))
            .spawn()
            .expect("start dnsmasq"),
    );
    // Ready once its DHCP socket is bound (`ss` lists it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = server
            .command("ss")
            .args(["-ulnH", "sport", "= :67"])
            .output()
            .expect("ss");
        if !out.stdout.is_empty() {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not start: {}",
            std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn probe(ns: &Netns, args: &[&str]) -> (Output, i32) {
    let out = ns
        .command(preflight_bin())
        .arg("probe")
        .args(args)
        .output()
        .expect("preflight runs");
    let code = out.status.code().expect("exit code");
    (out, code)
}

fn probe_json(ns: &Netns, args: &[&str]) -> (Value, i32) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (out, code) = probe(ns, &a);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe --json is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v[0].clone(), code)
}

/// What a probe must not change: addresses and routes of the client
/// namespace (every table), and the lease directories of the usual clients.
fn footprint(ns: &Netns) -> String {
    let mut s = String::new();
    for args in [
        ["-4", "addr", "show"].as_slice(),
        ["-4", "route", "show", "table", "all"].as_slice(),
        ["-6", "route", "show", "table", "all"].as_slice(),
    ] {
        let out = ns.command("ip").args(args).output().expect("ip");
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for dir in [
        "/var/lib/dhcp",
        "/var/lib/dhclient",
        "/var/lib/NetworkManager",
        "/run/systemd/netif/leases",
        "/var/lib/udhcpc",
    ] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            s.push_str(&format!("{dir}: {names:?}\n"));
        }
    }
    s
}

fn offered_address(v: &Value) -> std::net::Ipv4Addr {
    let a: std::net::Ipv4Addr = v["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no offered address in {v}"));
    assert!(
        (50..=99).contains(&a.octets()[3]) && a.octets()[..3] == [10, 99, 0],
        "{a} is outside the server's range"
    );
    a
}

#[test]
fn an_offer_is_seen_then_none_and_nothing_changes() {
    let (client, server) = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let before = footprint(&client);
    let dnsmasq = serve(&server, dir.path());

    // The interface has no IPv4 address: the DISCOVER still goes out.
    let (v, code) = probe_json(&client, &["dhcp@c0"]);
    assert_eq!(code, 0, "an offer came: {v}");
    assert_eq!(v["offered"], true, "{v}");
    assert_eq!(v["interface"], "c0");
    assert_eq!(v["server"], SERVER, "{v}");
    assert_eq!(v["could_not_send"], false);
    assert!(v["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v}");
    let first = offered_address(&v);

    // Table form, same answer (dnsmasq offers the same address again).
    let (out, code) = probe(&client, &["dhcp@c0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("dhcp via c0: offer of {first} from {SERVER}")),
        "{text}"
    );

    // An OFFER without a REQUEST commits nothing: dnsmasq has no lease for
    // us, and the client namespace has no new address, route or lease file.
    let log = std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default();
    assert!(log.contains("DHCPOFFER(s0)"), "dnsmasq log: {log}");
    assert!(
        !log.contains("DHCPREQUEST"),
        "the probe sent a REQUEST: {log}"
    );
    let leases = std::fs::read_to_string(dir.path().join("leases")).unwrap_or_default();
    assert!(
        !leases.to_lowercase().contains(MAC),
        "dnsmasq committed a lease for the probe: {leases}"
    );
    assert_eq!(footprint(&client), before, "the probe changed the node");

    // Server stopped: no offer, exit 1 (not 2: the probe was sent).
    drop(dnsmasq);
    let t = Instant::now();
    let (v, code) = probe_json(&client, &["dhcp@c0", "--timeout", "1s"]);
    assert_eq!(code, 1, "no offer: {v}");
    assert_eq!(v["offered"], false, "{v}");
    assert_eq!(v["could_not_send"], false, "{v}");
    assert!(
        v.get("server").is_none() && v.get("address").is_none(),
        "{v}"
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "waited the timeout");
    let (out, code) = probe(&client, &["dhcp@c0", "--timeout", "1s"]);
    assert_eq!(code, 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NO OFFER"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(footprint(&client), before, "the probe changed the node");
}

#[test]
fn bad_targets_exit_64_and_unprobeable_ones_exit_2() {
    let (client, _server) = pair();
    for bad in [
        "dhcp@",
        "dhcp:c0",
        "dhcp",
        "dhcp@a/b",
        "dhcp@0123456789abcdef",
    ] {
        let (out, code) = probe(&client, &[bad]);
        assert_eq!(code, 64, "{bad}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("dhcp@DEVICE"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (v, code) = probe_json(&client, &["dhcp@nosuch0"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["could_not_send"], true);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no interface nosuch0")),
        "{v}"
    );
    let (v, code) = probe_json(&client, &["dhcp@lo"]);
    assert_eq!(code, 2, "{v}");

    // Without privileges: fails closed and names the capability.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("preflight");
    std::fs::copy(preflight_bin(), &bin).expect("copy the binary");
    for p in [dir.path(), bin.as_path()] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = client
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["probe", "dhcp@c0"])
        .output()
        .expect("setpriv (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    // c0 has no address and rp_filter is on: the packet socket comes first.
    assert!(
        text.contains("CANNOT PROBE") && text.contains("CAP_NET_RAW"),
        "{text}"
    );
    // With an address, only port 68 needs a privilege.
    client.ip("addr add 10.99.0.10/24 dev c0");
    let out = client
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["probe", "dhcp@c0"])
        .output()
        .expect("setpriv (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("CANNOT PROBE") && text.contains("CAP_NET_BIND_SERVICE"),
        "{text}"
    );
}

/// The agent with `agent.dhcp_probe = true` and a static os-net-config file
/// probes the addressed interface at start and reports the offer.
#[test]
fn the_agent_reports_the_dhcp_probe() {
    let (client, server) = pair();
    client.ip("addr add 10.99.0.10/24 dev c0");
    let dir = tempfile::tempdir().expect("tempdir");
    let _dnsmasq = serve(&server, dir.path());
    std::fs::write(
        dir.path().join("osnet.yaml"),
        "network_config:\n  - type: interface\n    name: c0\n    addresses:\n      - ip_netmask: 10.99.0.10/24\n",
    )
    .expect("osnet");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "[agent]\nnode = \"dnode\"\nlisten = \"127.0.0.1:9101\"\nos_net_config = \"{}\"\nprobe_gateways = false\ndhcp_probe = true\n",
            dir.path().join("osnet.yaml").display()
        ),
    )
    .expect("config");
    let _agent = Proc(
        client
            .command(preflight_bin())
            .args(["agent", "--config"])
            .arg(dir.path().join("agent.toml"))
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let probes = loop {
        let out = client
            .command("curl")
            .args(["-sf", "http://127.0.0.1:9101/v1/report"])
            .output()
            .expect("curl runs");
        let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(p) = v.as_ref().map(|v| v["dhcp_probes"].clone()) {
            if p.is_array() {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never reported a DHCP probe: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(probes.as_array().map(Vec::len), Some(1), "{probes}");
    assert_eq!(probes[0]["interface"], "c0");
    assert_eq!(probes[0]["offered"], true, "{probes}");
    assert_eq!(probes[0]["server"], SERVER);
    offered_address(&probes[0]);
    assert!(probes[0]["checked_at"].is_string());
}
