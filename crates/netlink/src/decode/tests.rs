//! Decoder tests on bytes captured from real kernels with
//! `preflight debug capture` (see tests/fixtures/netlink/README.md).

use super::*;
use preflight_model::{OperState, Snapshot};

const VETH_BRIDGE: &[u8] = include_bytes!("../../../../tests/fixtures/netlink/veth-bridge.bin");

fn snapshot(bytes: &[u8]) -> Snapshot {
    decode_capture(bytes).expect("fixture is a complete capture")
}

fn iface<'a>(s: &'a Snapshot, name: &str) -> &'a Interface {
    s.by_name(name)
        .unwrap_or_else(|| panic!("{name} missing from snapshot"))
}

#[test]
fn veth_bridge_capture_decodes_exactly() {
    let s = snapshot(VETH_BRIDGE);
    let names: Vec<&str> = s.interfaces.values().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "br0", "v0b", "v0a", "v1b", "v1a"]);

    let br0 = iface(&s, "br0");
    assert_eq!(br0.kind.as_deref(), Some("bridge"));
    assert!(br0.admin_up && br0.carrier);
    assert_eq!(br0.oper_state, OperState::Up);

    let v0b = iface(&s, "v0b");
    assert_eq!(v0b.controller, Some(br0.index));
    assert!(v0b.carrier && v0b.bond_port.is_none());

    // v1b was set down: its peer v1a is admin up without carrier.
    let v1b = iface(&s, "v1b");
    assert!(!v1b.admin_up && !v1b.carrier);
    let v1a = iface(&s, "v1a");
    assert!(v1a.admin_up && !v1a.carrier);
    assert_eq!(v1a.oper_state, OperState::LowerLayerDown);
    assert_eq!(v1a.mtu, 1500);
    assert!(v1a.carrier_changes >= 1);

    let v0a = iface(&s, "v0a");
    let addrs: Vec<String> = s
        .addresses_of(v0a.index)
        .filter(|a| !a.address.is_ipv6())
        .map(|a| format!("{}/{} permanent={}", a.address, a.prefix_len, a.permanent))
        .collect();
    assert_eq!(addrs, ["192.0.2.10/24 permanent=true"]);

    let default: Vec<&preflight_model::Route> = s
        .routes
        .iter()
        .filter(|r| r.is_default() && !r.ipv6)
        .collect();
    assert_eq!(default.len(), 1);
    assert_eq!(default[0].gateway, Some("192.0.2.1".parse().expect("ip")));
    assert_eq!(default[0].oif, Some(v0a.index));
    assert!(s.interfaces.values().all(|i| i.parse_errors.is_empty()));
}

/// Walks a capture and returns the byte offset of attribute `nla_type` in
/// the RTM_NEWLINK message of interface `name`.
fn find_link_attr(bytes: &[u8], name: &str, nla_type: u16) -> usize {
    let mut off = 0;
    while off < bytes.len() {
        let dlen = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
        let dstart = off + 4;
        let mut m = dstart;
        while m < dstart + dlen {
            let mlen = u32::from_ne_bytes(bytes[m..m + 4].try_into().expect("4 bytes")) as usize;
            let mtype = u16::from_ne_bytes(bytes[m + 4..m + 6].try_into().expect("2 bytes"));
            if mtype == msg_type::RTM_NEWLINK {
                let attrs_start = m + 16 + 16;
                let mut a = attrs_start;
                let mut found_name = false;
                let mut target = None;
                while a + 4 <= m + mlen {
                    let alen = u16::from_ne_bytes(bytes[a..a + 2].try_into().expect("2")) as usize;
                    let atype =
                        u16::from_ne_bytes(bytes[a + 2..a + 4].try_into().expect("2")) & 0x3fff;
                    if atype == 3
                        && &bytes[a + 4..a + 4 + name.len()] == name.as_bytes()
                        && bytes[a + 4 + name.len()] == 0
                    {
                        found_name = true;
                    }
                    if atype == nla_type {
                        target = Some(a);
                    }
                    a += (alen + 3) & !3;
                }
                if found_name {
                    return target.expect("attribute present");
                }
            }
            m += (mlen + 3) & !3;
        }
        off = dstart + dlen;
    }
    panic!("{name} not found in capture");
}

#[test]
fn malformed_attribute_on_one_link_keeps_every_link() {
    let mut bytes = VETH_BRIDGE.to_vec();
    // IFLA_MTU (4) of v0a: claim a 2-byte value, which cannot be a u32.
    let at = find_link_attr(&bytes, "v0a", 4);
    bytes[at..at + 2].copy_from_slice(&6u16.to_ne_bytes());

    let s = snapshot(&bytes);
    let names: Vec<&str> = s.interfaces.values().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["lo", "br0", "v0b", "v0a", "v1b", "v1a"],
        "no interface may be dropped"
    );
    let v0a = iface(&s, "v0a");
    assert!(
        !v0a.parse_errors.is_empty(),
        "the bad attribute is recorded"
    );
    assert!(
        v0a.carrier && v0a.admin_up,
        "the good attributes of v0a are kept"
    );
    assert_eq!(v0a.mtu, 0, "the bad attribute is not guessed");
    assert_eq!(iface(&s, "v1a").mtu, 1500);
    assert!(s
        .interfaces
        .values()
        .filter(|i| i.name != "v0a")
        .all(|i| i.parse_errors.is_empty()));

    let decoded: Vec<DecodeProblem> = capture_datagrams(&bytes)
        .expect("framing intact")
        .into_iter()
        .flat_map(|d| decode_datagram(d).problems)
        .collect();
    assert_eq!(decoded.len(), 1);
    assert_eq!(
        decoded[0].concerns, "v0a",
        "the problem names the interface"
    );
}

#[test]
fn unknown_attribute_is_ignored_without_error() {
    let mut bytes = VETH_BRIDGE.to_vec();
    // Turn v1a's IFLA_MTU into an attribute type no kernel has sent yet.
    let at = find_link_attr(&bytes, "v1a", 4);
    bytes[at + 2..at + 4].copy_from_slice(&0x3f00u16.to_ne_bytes());
    let s = snapshot(&bytes);
    let v1a = iface(&s, "v1a");
    assert!(v1a.parse_errors.is_empty());
    assert_eq!(s.interfaces.len(), 6);
}

#[test]
fn a_malformed_attribute_preflight_does_not_read_is_skipped_not_recorded() {
    let mut bytes = VETH_BRIDGE.to_vec();
    // IFLA_TXQLEN (13) of v1a: a 2-byte value, which cannot be its u32.
    // Framing stays intact (lengths are 4-byte aligned).
    let at = find_link_attr(&bytes, "v1a", 13);
    bytes[at..at + 2].copy_from_slice(&6u16.to_ne_bytes());
    let whole = snapshot(VETH_BRIDGE);
    let s = snapshot(&bytes);
    assert_eq!(s, whole, "nothing preflight reads came from it");
    assert!(s.interfaces.values().all(|i| i.parse_errors.is_empty()));
    let problems: usize = capture_datagrams(&bytes)
        .expect("framing intact")
        .into_iter()
        .map(|d| decode_datagram(d).problems.len())
        .sum();
    assert_eq!(problems, 0);
}

#[test]
fn truncated_capture_is_an_error_not_a_partial_snapshot() {
    let e = decode_capture(&VETH_BRIDGE[..VETH_BRIDGE.len() - 3]).expect_err("truncated");
    assert!(e.to_string().contains("truncated"));
}

#[test]
fn corrupt_message_length_stops_framing_but_reports_it() {
    let mut d = capture_datagrams(VETH_BRIDGE).expect("ok")[0].to_vec();
    d[0..4].copy_from_slice(&5u32.to_ne_bytes());
    let out = decode_datagram(&d);
    assert!(!out.problems.is_empty());
}
