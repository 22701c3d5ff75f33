//! The member path check on a real bond in a real kernel (the host has no
//! bonding and no 802.1Q): in a VM, bond0 (active-backup) over a0 and a1,
//! cabled to two "switch" namespaces; bond0 carries 10.100.0.0/24 and
//! bond0.200 (VLAN 200). Switch A carries both; switch B's port lacks VLAN
//! 200. With no preflight configuration, `preflight inspect` is no-go with
//! BOND_PORT_NO_PATH naming a1 and VLAN 200 while every link has carrier;
//! the backup member's untagged path answers (an inactive member's frames
//! reach the packet socket); the frames on the wire are RFC 5227 probes
//! (sender 0.0.0.0), never from the bond's MAC; no peer learns the node's
//! addresses; and once switch B carries VLAN 200 the node is go. The
//! rig test (vm_rig.rs) adds learning bridges, LLDP and the agent.

use std::time::Duration;

use preflight_tests::vm::{Vm, VmSpec};
use serde_json::Value;

const SETUP: &str = r#"#!/bin/sh
IP=/sbin/ip
kv=$(uname -r)
for m in llc stp bridge garp mrp 8021q; do insmod /lib/modules/$kv/$m.ko 2>/dev/null; done
$IP netns add swA && $IP netns add swB || exit 1
$IP link add a0 type veth peer name b0 netns swA || exit 1
$IP link add a1 type veth peer name b1 netns swB || exit 1
$IP link add bond0 type bond mode active-backup miimon 100 || exit 1
$IP link set a0 master bond0 && $IP link set a1 master bond0 || exit 1
$IP link set bond0 up && $IP link set a0 up && $IP link set a1 up || exit 1
$IP link add link bond0 name bond0.200 type vlan id 200 || exit 1
$IP addr add 10.100.0.5/24 dev bond0 && $IP addr add 10.200.0.5/24 dev bond0.200 || exit 1
$IP link set bond0.200 up || exit 1
# Gateways of routes through each network: the targets.
$IP route add 10.9.0.0/24 via 10.100.0.1 dev bond0 || exit 1
$IP route add 10.8.0.0/24 via 10.200.0.1 dev bond0.200 || exit 1
for s in swA swB; do $IP -n $s link set lo up; done
$IP -n swA link set b0 up && $IP -n swA addr add 10.100.0.1/24 dev b0 || exit 1
$IP -n swA link add link b0 name b0.200 type vlan id 200 || exit 1
$IP -n swA addr add 10.200.0.1/24 dev b0.200 && $IP -n swA link set b0.200 up || exit 1
# Switch B: the untagged network only; VLAN 200 is missing on this port.
$IP -n swB link set b1 up && $IP -n swB addr add 10.100.0.1/24 dev b1 || exit 1
sleep 1
echo ok
"#;

fn inspect(vm: &mut Vm) -> (i32, Value) {
    let out = vm.run(
        "/bin/preflight inspect --json --node vm",
        Duration::from_secs(60),
    );
    let v: Value = serde_json::from_str(&out.output)
        .unwrap_or_else(|e| panic!("inspect --json ({e}):\n{}", out.output));
    (out.status, v)
}

fn codes(v: &Value) -> Vec<(String, String, String)> {
    v["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap_or_default().to_owned(),
                        f["subject"].as_str().unwrap_or_default().to_owned(),
                        f["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn path<'a>(v: &'a Value, member: &str, target: &str) -> &'a Value {
    v["member_paths"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|p| p["member"] == member && p["target"] == target)
        })
        .unwrap_or_else(|| panic!("no member path {member} -> {target}: {v}"))
}

#[test]
fn a_backup_member_missing_a_vlan_is_no_go_and_the_check_disturbs_nothing() {
    let overlay = overlay();
    let mut vm = Vm::boot(&VmSpec {
        nics: 1,
        memory_mib: 768,
        overlay: Some(overlay),
        files: vec![("/mp.sh".to_owned(), SETUP.as_bytes().to_vec())],
        ..VmSpec::default()
    });
    let setup = vm.sh("/mp.sh");
    assert!(setup.ends_with("ok"), "{setup}");
    let bond_mac = vm.sh("cat /sys/class/net/bond0/address").trim().to_owned();
    let a0_perm = vm
        .sh("cat /sys/class/net/a0/bonding_slave/perm_hwaddr")
        .trim()
        .to_owned();
    let a1_perm = vm
        .sh("cat /sys/class/net/a1/bonding_slave/perm_hwaddr")
        .trim()
        .to_owned();
    assert_eq!(
        vm.sh("cat /sys/class/net/bond0/bonding/active_slave")
            .trim(),
        "a0"
    );

    // Capture what the check puts on both wires.
    vm.sh("(/sbin/ip netns exec swA timeout 30 /usr/sbin/tcpdump -Z root -U -i b0 -e -n -l arp > /tmp/capA 2>/tmp/capA.log &) ; (/sbin/ip netns exec swB timeout 30 /usr/sbin/tcpdump -Z root -U -i b1 -e -n -l arp > /tmp/capB 2>/tmp/capB.log &) ; sleep 2");
    let (status, v) = inspect(&mut vm);
    let findings = codes(&v);
    assert_eq!(status, 1, "no-go; findings {findings:?}");
    let no_path: Vec<_> = findings
        .iter()
        .filter(|(c, _, _)| c == "BOND_PORT_NO_PATH")
        .collect();
    assert_eq!(no_path.len(), 1, "{findings:?}");
    assert_eq!(no_path[0].1, "bond0/a1/bond0.200");
    assert!(
        no_path[0].2.starts_with(
            "bond0 member a1 cannot reach 10.200.0.1 on bond0.200 (VLAN 200): 0/3 ARP answered while a0 reaches it; a failover to a1 cuts bond0.200 off"
        ),
        "{}",
        no_path[0].2
    );
    assert!(
        !findings
            .iter()
            .any(|(c, _, _)| c.starts_with("BOND_PORT_DOWN")),
        "every link has carrier: {findings:?}"
    );
    // The backup member's untagged path answered: an inactive member
    // delivers to the packet socket bound to it.
    assert_eq!(path(&v, "a1", "10.100.0.1")["up"], true, "{v}");
    assert_eq!(path(&v, "a0", "10.200.0.1")["up"], true, "{v}");
    assert_eq!(path(&v, "a0", "10.200.0.1")["vlan"], 200, "{v}");
    // Never the bond's MAC: a1 uses its permanent address; a0's permanent
    // address is the bond's, so it uses a locally administered variant.
    assert_eq!(path(&v, "a1", "10.100.0.1")["source_mac"], a1_perm.as_str());
    let a0_src = path(&v, "a0", "10.100.0.1")["source_mac"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(a0_perm, bond_mac, "the bond took a0's address");
    assert_ne!(a0_src, bond_mac);
    let text = vm.run("/bin/preflight inspect --node vm", Duration::from_secs(60));
    assert!(
        text.output
            .contains("path a1 -> 10.200.0.1 on bond0.200 (VLAN 200): 0/3 ARP answered"),
        "{}",
        text.output
    );

    // `preflight probe arp:IP@MEMBER` sends the same safe frame (it used
    // the member's current MAC, the bond's, out of the backup port).
    let arp = vm.run(
        "/bin/preflight probe arp:10.100.0.1@a1 --count 2 --json",
        Duration::from_secs(30),
    );
    assert_eq!(arp.status, 0, "{}", arp.output);
    vm.sh("sleep 1; kill $(pidof tcpdump) 2>/dev/null; sleep 1; true");
    let cap = vm.sh("cat /tmp/capA /tmp/capB /tmp/capA.log");
    eprintln!("ARP on the wires during inspect:\n{cap}");
    assert!(
        cap.contains("tell 0.0.0.0"),
        "RFC 5227 probes on the wire:\n{cap}"
    );
    for line in cap.lines().filter(|l| l.contains("Request")) {
        assert!(
            line.contains("tell 0.0.0.0"),
            "a request that names a sender address: {line}"
        );
        assert!(
            !line.starts_with(&bond_mac) && !line.contains(&format!(" {bond_mac} >")),
            "a frame from the bond's MAC: {line}"
        );
    }
    assert!(
        cap.contains("vlan 200"),
        "the VLAN's requests are tagged:\n{cap}"
    );
    let from_a1 = cap
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{a1_perm} > ")) || l.contains(&format!(" {a1_perm} > "))
        })
        .count();
    assert!(
        from_a1 >= 5,
        "a1's requests carry its permanent MAC:\n{cap}"
    );
    let neigh = vm.sh("/sbin/ip -n swA neigh show; /sbin/ip -n swB neigh show");
    assert!(
        !neigh.contains("10.100.0.5") && !neigh.contains("10.200.0.5"),
        "a peer learnt the node's address:\n{neigh}"
    );
    // The gateway knows the node by the bond's MAC; 100 rounds of checks
    // through both members leave that entry as it was.
    vm.sh("ping -c 1 -W 2 10.100.0.1");
    let before = vm.sh("/sbin/ip -n swA neigh show 10.100.0.5");
    assert!(before.contains(&bond_mac), "{before}");
    let rounds = vm.run(
        "/bin/preflight probe path:10.100.0.1@a0 path:10.100.0.1@a1 path:10.200.0.1@a0/200 --count 100 --interval 10ms --json",
        Duration::from_secs(120),
    );
    assert_eq!(rounds.status, 0, "{}", rounds.output);
    let after = vm.sh("/sbin/ip -n swA neigh show 10.100.0.5");
    assert!(after.contains(&bond_mac), "after 100 rounds: {after}");
    assert_eq!(
        vm.sh("cat /sys/class/net/bond0/bonding/active_slave")
            .trim(),
        "a0",
        "the check never changes the active member"
    );

    // Bounded: the check adds at most 2 s to inspect, even with a path
    // that never answers.
    let t = vm.sh("s=$(cut -d' ' -f1 /proc/uptime); /bin/preflight inspect --node vm >/dev/null; m=$(cut -d' ' -f1 /proc/uptime); /bin/preflight inspect --node vm --no-path-check >/dev/null; e=$(cut -d' ' -f1 /proc/uptime); echo \"times $s $m $e\"");
    let times: Vec<f64> = t
        .lines()
        .find_map(|l| l.strip_prefix("times "))
        .map(|l| l.split(' ').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(times.len(), 3, "{t}");
    let (with, without) = (times[1] - times[0], times[2] - times[1]);
    eprintln!("inspect with the path check {with:.2} s, without {without:.2} s");
    assert!(with - without <= 2.0, "added {:.2} s", with - without);

    // --no-path-check: no member paths, no finding (and go here).
    let out = vm.run(
        "/bin/preflight inspect --json --node vm --no-path-check",
        Duration::from_secs(60),
    );
    let skipped: Value = serde_json::from_str(&out.output).expect("JSON");
    assert!(skipped.get("member_paths").is_none(), "{skipped}");
    assert_eq!(out.status, 0, "{:?}", codes(&skipped));

    // The agent, with no configuration at all: the finding in its report
    // and the path in its metrics.
    vm.sh("(PREFLIGHT_NODE=vm /bin/preflight agent > /tmp/agent.log 2>&1 &) ; sleep 1");
    let seen = vm.run(&wait_report(true, 30), Duration::from_secs(60));
    assert_eq!(
        seen.status,
        0,
        "the agent never reported BOND_PORT_NO_PATH: {}\n{}",
        seen.output,
        vm.sh("cat /tmp/agent.log")
    );
    let metrics =
        vm.sh("wget -q -O - http://127.0.0.1:9101/metrics | grep preflight_bond_member_path_up");
    assert!(
        metrics.contains(r#"preflight_bond_member_path_up{bond="bond0",member="a1",network="bond0.200",target="10.200.0.1"} 0"#)
            && metrics.contains(r#"preflight_bond_member_path_up{bond="bond0",member="a0",network="bond0.200",target="10.200.0.1"} 1"#),
        "{metrics}"
    );

    // Switch B gets VLAN 200: the agent clears the finding, inspect is go.
    vm.sh("/sbin/ip -n swB link add link b1 name b1.200 type vlan id 200 && /sbin/ip -n swB addr add 10.200.0.1/24 dev b1.200 && /sbin/ip -n swB link set b1.200 up");
    let (status, v) = inspect(&mut vm);
    assert_eq!(
        status,
        0,
        "go once switch B carries VLAN 200: {:?}",
        codes(&v)
    );
    assert_eq!(path(&v, "a1", "10.200.0.1")["up"], true, "{v}");
    let cleared = vm.run(&wait_report(false, 45), Duration::from_secs(60));
    assert_eq!(
        cleared.status, 0,
        "the agent kept BOND_PORT_NO_PATH: {}",
        cleared.output
    );

    // Removed again while the agent runs: the finding within one interval
    // (10 s) plus the tries (3 x 1 s).
    let t = vm.run(
        &format!("s=$(cut -d' ' -f1 /proc/uptime); /sbin/ip -n swB link del b1.200 && {} && e=$(cut -d' ' -f1 /proc/uptime) && echo \"took $s $e\"", wait_report(true, 30)),
        Duration::from_secs(60),
    );
    assert_eq!(t.status, 0, "no finding after the VLAN went: {}", t.output);
    let took: Vec<f64> = t
        .output
        .lines()
        .find_map(|l| l.strip_prefix("took "))
        .map(|l| l.split(' ').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(took.len(), 2, "{}", t.output);
    let secs = took[1] - took[0];
    eprintln!("VLAN removed -> BOND_PORT_NO_PATH in the agent's report: {secs:.1} s");
    assert!(secs <= 15.0, "took {secs:.1} s");
    vm.shutdown();
}

/// A guest command that waits up to `limit_s` until the agent's report
/// has (or, with `present` false, no longer has) BOND_PORT_NO_PATH.
fn wait_report(present: bool, limit_s: u32) -> String {
    let test = if present { "" } else { "!" };
    format!(
        "ok=1; i=0; while [ $i -lt {} ]; do if {test} wget -q -O - http://127.0.0.1:9101/v1/report | grep -q BOND_PORT_NO_PATH; then ok=0; break; fi; sleep 0.2; i=$((i + 1)); done; [ $ok = 0 ]",
        limit_s * 5
    )
}

/// The rig's initramfs overlay (tests/vm/rig-prepare.sh: bridge, 8021q,
/// tcpdump), prepared when missing.
fn overlay() -> std::path::PathBuf {
    preflight_tests::require_root("the member path VM test");
    let script = preflight_tests::workspace().join("tests/vm/rig-prepare.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run tests/vm/rig-prepare.sh");
    assert!(
        out.status.success(),
        "tests/vm/rig-prepare.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("the overlay dir")
            .trim(),
    )
}

const LACP: &str = r#"#!/bin/sh
IP=/sbin/ip
$IP netns add sw || exit 1
$IP link add a0 type veth peer name b0 netns sw || exit 1
$IP link add a1 type veth peer name b1 netns sw || exit 1
$IP link add bond0 type bond mode 802.3ad miimon 100 lacp_rate fast || exit 1
$IP link set a0 master bond0 && $IP link set a1 master bond0 || exit 1
$IP -n sw link set lo up
$IP -n sw link add sbond type bond mode 802.3ad miimon 100 lacp_rate fast || exit 1
$IP -n sw link set b0 master sbond && $IP -n sw link set b1 master sbond || exit 1
$IP -n sw link set sbond up && $IP -n sw addr add 10.100.0.1/24 dev sbond || exit 1
$IP link set bond0 up && $IP addr add 10.100.0.5/24 dev bond0 || exit 1
$IP route add 10.9.0.0/24 via 10.100.0.1 dev bond0 || exit 1
# LACP negotiates within ~5 s.
sleep 8
echo ok
"#;

/// An 802.3ad bond is one port for its partner, which sends the reply to a
/// member's probe down the link its hash picks: the check reads the reply
/// on every member, so a healthy LACP bond is go with every path up.
#[test]
fn an_lacp_bond_whose_partner_hashes_replies_to_either_member_is_go() {
    let mut vm = Vm::boot(&VmSpec {
        nics: 1,
        memory_mib: 768,
        overlay: Some(overlay()),
        files: vec![("/lacp.sh".to_owned(), LACP.as_bytes().to_vec())],
        ..VmSpec::default()
    });
    let setup = vm.sh("/lacp.sh");
    assert!(setup.ends_with("ok"), "{setup}");
    vm.sh("(/sbin/ip netns exec sw timeout 30 /usr/sbin/tcpdump -Z root -U -i b0 -e -n -l arp > /tmp/cap0 2>/dev/null &) ; (/sbin/ip netns exec sw timeout 30 /usr/sbin/tcpdump -Z root -U -i b1 -e -n -l arp > /tmp/cap1 2>/dev/null &) ; sleep 2");
    let (status, v) = inspect(&mut vm);
    vm.sh("sleep 1; kill $(pidof tcpdump) 2>/dev/null; sleep 1; true");
    eprintln!(
        "replies per link:\nb0:\n{}\nb1:\n{}",
        vm.sh("grep Reply /tmp/cap0 || true"),
        vm.sh("grep Reply /tmp/cap1 || true")
    );
    let findings = codes(&v);
    assert!(
        !findings.iter().any(|(c, _, _)| c == "BOND_PORT_NO_PATH"),
        "{findings:?}"
    );
    assert_eq!(path(&v, "a0", "10.100.0.1")["up"], true, "{v}");
    assert_eq!(path(&v, "a1", "10.100.0.1")["up"], true, "{v}");
    assert_eq!(status, 0, "go: {findings:?}");
    vm.shutdown();
}
