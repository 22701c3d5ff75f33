//! Real-kernel bonding: boots a Debian kernel under qemu, builds bonds over
//! virtio NICs and veth pairs, pulls virtual cables through the qemu monitor
//! and checks every verdict of `preflight inspect` inside the guest.
//!
//! Two scenario groups, one VM boot each. Set PREFLIGHT_UPDATE_FIXTURES=1 to
//! rewrite tests/fixtures/netlink/*.bin from these kernels.

use std::time::{Duration, Instant};

use preflight_tests::vm::{fixture, Vm, VmSpec};
use serde_json::Value;

const IP: &str = "/sbin/ip";

fn inspect(vm: &mut Vm, extra: &str) -> (Value, i32) {
    let out = vm.run(
        &format!("preflight inspect --json --node vm {extra}"),
        Duration::from_secs(60),
    );
    let v: Value = serde_json::from_str(&out.output)
        .unwrap_or_else(|e| panic!("inspect --json output is not JSON ({e}):\n{}", out.output));
    (v, out.status)
}

fn has(v: &Value, code: &str, subject: &str) -> bool {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["code"] == code && f["subject"] == subject)
}

fn criticals(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "critical")
        .map(|f| {
            format!(
                "{} {}",
                f["code"].as_str().unwrap_or("?"),
                f["subject"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Polls inspect until `pred` holds; panics with the last answer after `limit`
/// (a bound against hanging, not a latency assertion).
fn wait_for(
    vm: &mut Vm,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value, i32) -> bool,
) -> (Value, i32) {
    let deadline = Instant::now() + limit;
    loop {
        let (v, code) = inspect(vm, "");
        if pred(&v, code) {
            return (v, code);
        }
        assert!(
            Instant::now() < deadline,
            "never reached: {what} within {limit:?}; last answer (exit {code}):\n{v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bond_json<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["bonds"]
        .as_array()
        .expect("bonds")
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no bond {name}: {v:#}"))
}

/// Captures the raw dump in the guest; checks it decodes; writes it as a
/// fixture when PREFLIGHT_UPDATE_FIXTURES is set.
fn capture(vm: &mut Vm, name: &str) {
    let b64 = vm.sh("preflight debug capture -o /tmp/c.bin 2>/dev/null && base64 /tmp/c.bin");
    let bytes = base64_decode(&b64);
    let decoded = vm.sh("preflight debug decode /tmp/c.bin >/dev/null && echo decoded");
    assert!(decoded.ends_with("decoded"));
    if std::env::var_os("PREFLIGHT_UPDATE_FIXTURES").is_some() {
        std::fs::write(fixture(&format!("netlink/{name}.bin")), &bytes).expect("write fixture");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("byte"));
        }
    }
    out
}

fn make_bond(vm: &mut Vm, bond: &str, opts: &str, ports: &[&str]) {
    let mut cmd = format!("{IP} link add {bond} type bond {opts}");
    for p in ports {
        cmd.push_str(&format!(
            " && {IP} link set {p} down && {IP} link set {p} master {bond}"
        ));
    }
    for p in ports {
        cmd.push_str(&format!(" && {IP} link set {p} up"));
    }
    cmd.push_str(&format!(" && {IP} link set {bond} up"));
    vm.sh(&cmd);
}

#[test]
fn active_backup_cable_pulls() {
    let mut vm = Vm::boot(&VmSpec::default());
    make_bond(
        &mut vm,
        "bond0",
        "mode active-backup miimon 100",
        &["eth0", "eth1"],
    );

    // 1. Both ports up: go.
    let (v, code) = wait_for(
        &mut vm,
        "healthy active-backup bond",
        Duration::from_secs(30),
        |v, c| {
            c == 0
                && bond_json(v, "bond0")["ports"]
                    .as_array()
                    .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["mii_status"] == "up"))
        },
    );
    assert_eq!(code, 0);
    assert!(criticals(&v).is_empty(), "{v:#}");
    let b = bond_json(&v, "bond0");
    assert_eq!(b["mode"], "active-backup");
    assert_eq!(b["miimon_ms"], 100);
    assert_eq!(b["active_port"], "eth0");
    capture(&mut vm, "ab-healthy");

    // ARP probes through the bond, to the gateway of qemu's user network
    // (inside this VM's own network): answered while the bond has a path.
    vm.sh(&format!("{IP} addr add 10.0.2.15/24 dev bond0"));
    let arp = |vm: &mut Vm| {
        vm.run(
            "preflight probe arp:10.0.2.2@bond0 --count 3 --timeout 500ms 2>&1",
            Duration::from_secs(30),
        )
    };
    let out = arp(&mut vm);
    assert_eq!(out.status, 0, "ARP through a healthy bond: {}", out.output);
    assert!(
        out.output
            .contains("arp 10.0.2.2 via bond0: ok, 3/3 answered"),
        "{}",
        out.output
    );

    // 2. The seed failure: cable pulled on the backup port; the bond stays up.
    vm.set_link(1, false);
    let (v, code) = wait_for(
        &mut vm,
        "BOND_PORT_DOWN bond0/eth1",
        Duration::from_secs(30),
        |v, _| has(v, "BOND_PORT_DOWN", "bond0/eth1"),
    );
    assert_eq!(code, 1, "no-go exits 1");
    assert_eq!(v["verdict"], "no-go");
    let b = bond_json(&v, "bond0");
    assert_eq!(b["carrier"], true, "the bond itself is still up: {b:#}");
    assert_eq!(b["oper_state"], "up");
    let eth1 = b["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "eth1")
        .expect("eth1");
    assert_eq!(eth1["mii_status"], "down");
    assert!(eth1["link_failure_count"].as_u64().expect("count") >= 1);
    assert!(has(&v, "BOND_DEGRADED", "bond0"));
    assert!(!has(&v, "BOND_DOWN", "bond0"));
    capture(&mut vm, "ab-port-down");

    // The backup is down, the active port carries ARP: still answered.
    let out = arp(&mut vm);
    assert_eq!(out.status, 0, "{}", out.output);

    // Cable back: go again.
    vm.set_link(1, true);
    wait_for(
        &mut vm,
        "go after the cable is back",
        Duration::from_secs(30),
        |v, c| c == 0 && criticals(v).is_empty(),
    );

    // The active port is pulled: the bond fails over to eth1 and the ARP
    // probe through bond0 is answered over the new path.
    vm.set_link(0, false);
    wait_for(
        &mut vm,
        "failover to eth1",
        Duration::from_secs(30),
        |v, _| bond_json(v, "bond0")["active_port"] == "eth1",
    );
    let out = arp(&mut vm);
    assert_eq!(out.status, 0, "ARP after failover: {}", out.output);
    vm.set_link(0, true);
    wait_for(
        &mut vm,
        "go after eth0 is back",
        Duration::from_secs(30),
        |v, c| c == 0 && criticals(v).is_empty(),
    );

    // 3. Both cables pulled: BOND_DOWN.
    vm.set_link(0, false);
    vm.set_link(1, false);
    let (v, code) = wait_for(
        &mut vm,
        "BOND_DOWN bond0",
        Duration::from_secs(30),
        |v, _| has(v, "BOND_DOWN", "bond0"),
    );
    assert_eq!(code, 1);
    assert!(
        has(&v, "BOND_PORT_DOWN", "bond0/eth0") && has(&v, "BOND_PORT_DOWN", "bond0/eth1"),
        "{v:#}"
    );
    capture(&mut vm, "ab-both-down");
    // No path at all: the ARP probe gets no answer, exit 1.
    let out = arp(&mut vm);
    assert_eq!(out.status, 1, "ARP through a dead bond: {}", out.output);
    assert!(
        out.output.contains("FAILED, 0/3 answered") && out.output.contains("no ARP reply"),
        "{}",
        out.output
    );
    vm.set_link(0, true);
    vm.set_link(1, true);
    wait_for(
        &mut vm,
        "go after both cables are back",
        Duration::from_secs(30),
        |v, c| c == 0 && criticals(v).is_empty(),
    );

    // 8. Flapping: the watch reports LINK_FLAPPING, and once the flapping
    // stops nothing stays stuck: port-down findings clear and the flap
    // warning clears when its (5 s) window has passed.
    vm.sh(r#"printf '[policy.flapping]\nwindow = "5s"\nmax_changes = 4\n' > /tmp/flap.toml"#);
    vm.sh("preflight inspect --watch --json --node vm --config /tmp/flap.toml > /tmp/watch.log 2>/tmp/watch.err & echo $! > /tmp/watch.pid");
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..4 {
        vm.set_link(1, false);
        std::thread::sleep(Duration::from_millis(400));
        vm.set_link(1, true);
        std::thread::sleep(Duration::from_millis(400));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let log = loop {
        let log = vm.sh("cat /tmp/watch.log");
        if log.contains(r#""change":"cleared""#)
            && log
                .lines()
                .any(|l| l.contains("LINK_FLAPPING") && l.contains(r#""change":"cleared""#))
        {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "LINK_FLAPPING never appeared and cleared; watch log:\n{log}\nstderr:\n{}",
            vm.sh("cat /tmp/watch.err")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let changes: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("watch line is JSON"))
        .collect();
    assert!(
        changes.iter().any(|c| c["change"] == "appeared"
            && c["finding"]["code"] == "LINK_FLAPPING"
            && c["finding"]["subject"] == "bond0/eth1"),
        "{log}"
    );
    // For every finding of the pulls, the last change is "cleared": nothing
    // lost or stuck. BOND_PORT_PATH_UNCHECKED is not one of them: this bond
    // has no gateway or neighbour to check its members' paths against, and
    // says so for as long as it runs (a warning).
    let mut last = std::collections::BTreeMap::new();
    for c in changes
        .iter()
        .filter(|c| c["finding"]["code"] != "BOND_PORT_PATH_UNCHECKED")
    {
        last.insert(
            (
                c["finding"]["code"].to_string(),
                c["finding"]["subject"].to_string(),
            ),
            c["change"].as_str().expect("change").to_owned(),
        );
    }
    assert!(
        last.values().all(|c| c == "cleared"),
        "stuck findings: {last:?}\n{log}"
    );
    let (_, code) = inspect(&mut vm, "");
    assert_eq!(code, 0);
    vm.shutdown();
}

#[test]
fn lacp_and_configuration_faults() {
    let mut vm = Vm::boot(&VmSpec::default());

    // 4. 802.3ad over qemu's user network: no LACP partner exists there.
    make_bond(
        &mut vm,
        "bond0",
        "mode 802.3ad miimon 100 lacp_rate fast",
        &["eth0", "eth1"],
    );
    let (v, code) = wait_for(
        &mut vm,
        "LACP faults on bond0",
        Duration::from_secs(40),
        |v, _| {
            has(v, "LACP_NOT_NEGOTIATED", "bond0/eth0")
                && v["findings"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["code"] == "LACP_AGGREGATOR_SPLIT"))
        },
    );
    assert_eq!(code, 1);
    let b = bond_json(&v, "bond0");
    assert_eq!(
        b["carrier"], true,
        "an 802.3ad bond without partner still has carrier: {b:#}"
    );
    assert_eq!(b["ad_info"]["partner_mac"], "00:00:00:00:00:00");
    capture(&mut vm, "lacp-no-partner");
    vm.sh(&format!("{IP} link del bond0"));

    // 5. Healthy 802.3ad between two bonds over veth pairs inside the guest.
    vm.sh(&format!(
        "{IP} link add a0 type veth peer name b0 && {IP} link add a1 type veth peer name b1"
    ));
    make_bond(
        &mut vm,
        "bonda",
        "mode 802.3ad miimon 100 lacp_rate fast",
        &["a0", "a1"],
    );
    make_bond(
        &mut vm,
        "bondb",
        "mode 802.3ad miimon 100 lacp_rate fast",
        &["b0", "b1"],
    );
    let (v, _) = wait_for(
        &mut vm,
        "LACP negotiated between bonda and bondb",
        Duration::from_secs(60),
        |_, c| c == 0,
    );
    for port in bond_json(&v, "bonda")["ports"].as_array().expect("ports") {
        assert_eq!(
            port["ad_actor_state"], 63,
            "active, short timeout, aggregating, in sync, collecting, distributing: {port:#}"
        );
    }
    capture(&mut vm, "lacp-veth-healthy");
    vm.sh(&format!("{IP} link set b1 down"));
    let (v, code) = wait_for(
        &mut vm,
        "no-go after b1 down",
        Duration::from_secs(30),
        |v, _| has(v, "BOND_PORT_DOWN", "bonda/a1"),
    );
    assert_eq!(code, 1);
    assert!(has(&v, "BOND_DEGRADED", "bonda"), "{v:#}");
    vm.sh(&format!(
        "{IP} link del bonda && {IP} link del bondb && {IP} link del a0 && {IP} link del a1"
    ));

    // 6. No link monitor.
    vm.sh(&format!("{IP} link add m0 type veth peer name n0 && {IP} link add m1 type veth peer name n1 && {IP} link set n0 up && {IP} link set n1 up"));
    make_bond(
        &mut vm,
        "bondm",
        "mode active-backup miimon 0 arp_interval 0",
        &["m0", "m1"],
    );
    let (v, code) = wait_for(
        &mut vm,
        "BOND_NO_LINK_MONITOR",
        Duration::from_secs(30),
        |v, _| has(v, "BOND_NO_LINK_MONITOR", "bondm"),
    );
    assert_eq!(code, 1);
    assert_eq!(bond_json(&v, "bondm")["miimon_ms"], 0);
    capture(&mut vm, "ab-no-monitor");
    vm.sh(&format!("{IP} link del bondm"));

    // 7. A bond with a single port.
    vm.sh(&format!(
        "{IP} link add s0 type veth peer name t0 && {IP} link set t0 up"
    ));
    make_bond(&mut vm, "bonds", "mode active-backup miimon 100", &["s0"]);
    let (v, code) = wait_for(
        &mut vm,
        "BOND_DEGRADED on a single-port bond",
        Duration::from_secs(30),
        |v, _| has(v, "BOND_DEGRADED", "bonds"),
    );
    assert_eq!(code, 1);
    assert!(
        !has(&v, "BOND_PORT_DOWN", "bonds/s0"),
        "the one port is up: {v:#}"
    );
    capture(&mut vm, "ab-single-port");
    vm.shutdown();
}

/// The seed, replayed: a node with a static bond configuration (its
/// os-net-config file) falls back to DHCP on every interface. busybox udhcpc
/// gets a lease from qemu's user-network DHCP server (inside the VM's own
/// network). preflight must say no-go, naming the DHCP address and the
/// missing static one.
#[test]
fn seed_replay_dhcp_fallback() {
    let mut vm = Vm::boot(&VmSpec::default());
    vm.sh(concat!(
        "printf 'network_config:\\n  - type: linux_bond\\n    name: bond0\\n    use_dhcp: false\\n",
        "    bonding_options: \"mode=active-backup miimon=100\"\\n    addresses:\\n      - ip_netmask: 192.0.2.10/24\\n",
        "    routes:\\n      - default: true\\n        next_hop: 192.0.2.1\\n    members:\\n",
        "      - type: interface\\n        name: nic1\\n      - type: interface\\n        name: nic2\\n' > /tmp/config.yaml"
    ));
    make_bond(
        &mut vm,
        "bond0",
        "mode active-backup miimon 100",
        &["eth0", "eth1"],
    );
    vm.sh(&format!(
        "{IP} addr add 192.0.2.10/24 dev bond0 && {IP} route add default via 192.0.2.1"
    ));
    let (v, code) = wait_for(
        &mut vm,
        "go against the static configuration",
        Duration::from_secs(30),
        |v, c| {
            c == 0
                && bond_json(v, "bond0")["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p["mii_status"] == "up"))
        },
    );
    assert_eq!(code, 0);
    let out = vm.run(
        "preflight inspect --json --node vm --os-net-config /tmp/config.yaml",
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status, 0,
        "healthy node matches its os-net-config file:\n{}",
        out.output
    );
    drop(v);

    // The configurator's "safe" fallback: tear the bond down, DHCP on every NIC.
    vm.sh(&format!(
        "{IP} link del bond0 && {IP} link set eth0 up && {IP} link set eth1 up"
    ));
    vm.sh("udhcpc -i eth0 -n -q -t 5 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; udhcpc -i eth1 -n -q -t 5 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; true");
    let leases = vm.sh(&format!("{IP} -4 addr show"));
    assert!(
        leases.contains("10.0.2.15"),
        "udhcpc got a lease from qemu's DHCP server:\n{leases}"
    );
    let out = vm.run(
        "preflight inspect --json --node vm --os-net-config /tmp/config.yaml",
        Duration::from_secs(60),
    );
    assert_eq!(out.status, 1, "the fallback is no-go:\n{}", out.output);
    let v: Value = serde_json::from_str(&out.output).expect("json");
    assert!(has(&v, "UNEXPECTED_DHCP", "eth0"), "{v:#}");
    assert!(
        has(&v, "EXPECTED_ADDRESS_MISSING", "bond0/192.0.2.10"),
        "{v:#}"
    );
    assert!(has(&v, "EXPECTED_INTERFACE_MISSING", "bond0"), "{v:#}");
    assert!(
        has(&v, "DEFAULT_ROUTE_MISSING", "bond0"),
        "the default route now goes via the DHCP server: {v:#}"
    );
    vm.shutdown();
}

/// Issue 15, the seed's root cause on a real kernel: a 4-NIC node built as its
/// os-net-config file says (nic1 static, bond1 of nic2 + nic3, nic4 static).
/// Pulling the cable of the NIC behind nic2 must say NIC_RENUMBERED (the next
/// os-net-config run would shift nic2..nic4 onto other NICs) and
/// BOND_PORT_DOWN, and must not call the NICs that are fine missing.
#[test]
fn nic_renumbering_after_a_cable_pull() {
    let mut vm = Vm::boot(&VmSpec {
        nics: 4,
        ..VmSpec::default()
    });
    vm.sh(concat!(
        "printf 'network_config:\\n",
        "  - type: interface\\n    name: nic1\\n    addresses:\\n      - ip_netmask: 192.0.2.10/24\\n",
        "  - type: linux_bond\\n    name: bond1\\n    bonding_options: \"mode=active-backup miimon=100\"\\n",
        "    addresses:\\n      - ip_netmask: 198.51.100.10/24\\n",
        "    members:\\n      - type: interface\\n        name: nic2\\n      - type: interface\\n        name: nic3\\n",
        "  - type: interface\\n    name: nic4\\n    addresses:\\n      - ip_netmask: 203.0.113.10/24\\n' > /tmp/config.yaml"
    ));
    make_bond(
        &mut vm,
        "bond1",
        "mode active-backup miimon 100",
        &["eth1", "eth2"],
    );
    vm.sh(&format!(
        "{IP} link set eth0 up && {IP} link set eth3 up && {IP} addr add 192.0.2.10/24 dev eth0 && {IP} addr add 198.51.100.10/24 dev bond1 && {IP} addr add 203.0.113.10/24 dev eth3"
    ));
    let file = "--os-net-config /tmp/config.yaml";
    let healthy = |v: &Value, c: i32| {
        c == 0
            && v["nic_mapping"]["nic2"]["in_force"] == "eth1"
            && v["nic_mapping"]
                .as_object()
                .is_some_and(|m| m.len() == 4 && m.values().all(|x| x["reason"].is_null()))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (v, code) = loop {
        let (v, code) = inspect(&mut vm, file);
        if healthy(&v, code) || Instant::now() > deadline {
            break (v, code);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        healthy(&v, code),
        "healthy 4-NIC node is go (exit {code}): {v:#}"
    );
    for (nic, dev) in [
        ("nic1", "eth0"),
        ("nic2", "eth1"),
        ("nic3", "eth2"),
        ("nic4", "eth3"),
    ] {
        assert_eq!(v["nic_mapping"][nic]["next_run"], dev, "{v:#}");
    }

    vm.set_link(1, false); // the cable of eth1, behind nic2
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (v, code) = inspect(&mut vm, file);
        if code == 1 && has(&v, "NIC_RENUMBERED", "nic2") && has(&v, "BOND_PORT_DOWN", "bond1/eth1")
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no NIC_RENUMBERED after the pull: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let m = &v["nic_mapping"]["nic2"];
    assert_eq!(
        (m["in_force"].as_str(), m["next_run"].as_str()),
        (Some("eth1"), Some("eth2")),
        "{v:#}"
    );
    let msg = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "NIC_RENUMBERED" && f["subject"] == "nic2")
        .and_then(|f| f["message"].as_str())
        .expect("message")
        .to_owned();
    assert!(
        msg.contains("eth1") && msg.contains("eth2") && msg.contains("no carrier"),
        "{msg}"
    );
    let crit = criticals(&v);
    let false_missing: Vec<&String> = crit
        .iter()
        .filter(|c| {
            c.starts_with("EXPECTED_")
                || (c.starts_with("BOND_MEMBER_MISSING") && !c.ends_with("/eth1"))
        })
        .collect();
    assert!(
        false_missing.is_empty(),
        "nothing is missing but eth1's carrier: {crit:?}"
    );
    // The table shows both mappings.
    let table = vm.run(
        "preflight inspect --node vm --os-net-config /tmp/config.yaml",
        Duration::from_secs(60),
    );
    assert!(
        table.output.contains("SHIFTED: eth1 has no carrier"),
        "{}",
        table.output
    );

    vm.set_link(1, true);
    let (v, code) = wait_for(
        &mut vm,
        "go after the cable is back",
        Duration::from_secs(30),
        |v, c| c == 0 && !has(v, "BOND_PORT_DOWN", "bond1/eth1"),
    );
    let (v2, code2) = inspect(&mut vm, file);
    assert_eq!(code2, 0, "go with the file again: {:?}", criticals(&v2));
    assert!(!has(&v2, "NIC_RENUMBERED", "nic2"), "{v2:#}");
    drop((v, code));
    vm.shutdown();
}
