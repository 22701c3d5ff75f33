//! The member path check's probe on the real kernel, in namespaces this
//! test makes (the host has no bonding and no 802.1Q: the bond and VLAN
//! proof is the VM rig's): `preflight probe path:IP@DEV` is answered by a
//! peer that has the address and not by one that has none; the frame that
//! leaves is an RFC 5227 probe (sender IP 0.0.0.0) from the interface's own
//! MAC, or from a locally administered variant when another interface of
//! the node uses that MAC (as a bond's first member's does); and the peer
//! learns nothing: no neighbour entry for the node's address. Needs root;
//! never skips.

use std::process::Output;
use std::time::Duration;

use preflight_tests::netns::Netns;
use preflight_tests::preflight_bin;
use serde_json::Value;

const MAC: &str = "02:00:5e:10:00:42";
const PEER: &str = "10.98.0.1";
const NODE: &str = "10.98.0.2";

/// A node namespace (c0, MAC fixed, 10.98.0.2/24) wired to a peer
/// namespace (s0, 10.98.0.1/24 when `answering`).
fn pair(answering: bool) -> (Netns, Netns) {
    let node = Netns::new("mpn");
    let peer = Netns::new("mpp");
    node.ip(&format!(
        "link add c0 address {MAC} type veth peer name s0 netns {}",
        peer.name
    ));
    for (ns, dev) in [(&node, "c0"), (&peer, "s0")] {
        // No IPv6: its neighbour discovery would blur the neighbour check.
        let out = ns
            .command("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")])
            .output()
            .expect("sysctl runs");
        assert!(out.status.success(), "sysctl: {out:?}");
    }
    node.ip(&format!("addr add {NODE}/24 dev c0"));
    node.ip("link set c0 up");
    if answering {
        peer.ip(&format!("addr add {PEER}/24 dev s0"));
    }
    peer.ip("link set s0 up");
    (node, peer)
}

fn probe(node: &Netns, target: &str) -> (Output, Value) {
    let out = node
        .command(preflight_bin())
        .args([
            "probe",
            target,
            "--count",
            "3",
            "--timeout",
            "500ms",
            "--json",
        ])
        .output()
        .expect("preflight runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

/// ARP requests seen in `ns` while `run` runs: (source MAC, sender IP).
fn capture(ns: &Netns, run: impl FnOnce()) -> Vec<([u8; 6], [u8; 4])> {
    let path = format!("/var/run/netns/{}", ns.name);
    // A packet socket opened inside the namespace stays in it.
    let sock = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let all = i32::from(0x0003u16.to_be());
        let s = socket2::Socket::new(
            socket2::Domain::PACKET,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(all)),
        )
        .expect("a packet socket (root)");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        s
    })
    .join()
    .expect("capture thread");
    run();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = std::io::Read::read(&mut &sock, &mut buf) {
        let f = &buf[..n];
        if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&f[6..12]);
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&f[28..32]);
            out.push((mac, ip));
        }
    }
    out
}

fn neighbours(ns: &Netns) -> String {
    let out = ns
        .command("ip")
        .args(["-4", "neigh", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_member_path_probe_is_answered_and_teaches_the_peer_nothing() {
    let (node, peer) = pair(true);
    let mut result = None;
    let frames = capture(&peer, || {
        result = Some(probe(&node, &format!("path:{PEER}@c0")));
    });
    let (out, v) = result.expect("probed");
    assert!(
        out.status.success(),
        "preflight probe path:{PEER}@c0: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v[0]["answered"], 3, "{v}");
    assert!(!frames.is_empty(), "the peer saw no ARP request");
    for (mac, ip) in &frames {
        assert_eq!(
            preflight_probe_mac(*mac),
            MAC,
            "source MAC: the interface's own (no other interface uses it)"
        );
        assert_eq!(ip, &[0, 0, 0, 0], "sender IP 0.0.0.0 (RFC 5227 probe)");
    }
    let n = neighbours(&peer);
    assert!(
        !n.contains(NODE),
        "the peer learnt the node's address from a probe: {n}"
    );
}

#[test]
fn a_member_path_probe_uses_no_mac_another_interface_has() {
    let (node, peer) = pair(true);
    // Another interface with c0's MAC, as a bond's members carry the
    // bond's (its first member's permanent) address.
    node.ip(&format!(
        "link add c1 address {MAC} type veth peer name c1p"
    ));
    let mut result = None;
    let frames = capture(&peer, || {
        result = Some(probe(&node, &format!("path:{PEER}@c0")));
    });
    let (out, v) = result.expect("probed");
    assert!(
        out.status.success(),
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        v[0]["answered"], 3,
        "answered though sent from another MAC: {v}"
    );
    assert!(!frames.is_empty(), "the peer saw no ARP request");
    for (mac, ip) in &frames {
        let m = preflight_probe_mac(*mac);
        assert_ne!(m, MAC, "a MAC another interface uses");
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast: {m}");
        assert_eq!(ip, &[0, 0, 0, 0]);
    }
    assert!(!neighbours(&peer).contains(NODE));
}

#[test]
fn a_member_path_probe_to_nobody_gets_no_answer() {
    let (node, _peer) = pair(false);
    let (out, v) = probe(&node, &format!("path:{PEER}@c0"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "not answered is exit 1: {v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v[0]["answered"], 0, "{v}");
    assert_eq!(v[0]["sent"], 3, "{v}");
}

fn preflight_probe_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
