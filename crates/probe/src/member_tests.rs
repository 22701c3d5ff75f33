//! Tests of the member path check's frames and source MACs.

use super::*;

const SRC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const GW: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

fn reply(dst: [u8; 6], tha: [u8; 6], sip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&[0; 4]);
    f
}

#[test]
fn the_request_is_an_rfc5227_probe_from_the_given_mac() {
    let f = request_frame(SRC, None, GW);
    assert_eq!(f.len(), 60);
    assert_eq!(&f[0..6], &BROADCAST);
    assert_eq!(&f[6..12], &SRC);
    assert_eq!(&f[12..14], &[8, 6]);
    assert_eq!(&f[20..22], &[0, 1], "request");
    assert_eq!(&f[22..28], &SRC, "sender MAC");
    assert_eq!(&f[28..32], &[0; 4], "sender IP 0.0.0.0");
    assert_eq!(&f[38..42], &GW.octets());
    let t = request_frame(SRC, Some(200), GW);
    assert_eq!(&t[12..18], &[0x81, 0, 0, 200, 8, 6], "802.1Q tag, VLAN 200");
    assert_eq!(&t[32..36], &[0; 4], "sender IP 0.0.0.0");
}

#[test]
fn replies_match_on_target_our_mac_and_vlan() {
    let r = reply(SRC, SRC, GW);
    assert!(is_reply(&r, None, SRC, GW, None));
    assert!(is_reply(&reply(BROADCAST, SRC, GW), None, SRC, GW, None));
    assert!(!is_reply(&r, None, SRC, Ipv4Addr::new(10, 200, 0, 2), None));
    assert!(!is_reply(
        &reply([2, 0, 0, 0, 0, 7], SRC, GW),
        None,
        SRC,
        GW,
        None
    ));
    assert!(!is_reply(
        &reply(SRC, [2, 0, 0, 0, 0, 7], GW),
        None,
        SRC,
        GW,
        None
    ));
    // The kernel took the tag out: only auxdata says VLAN 200.
    assert!(is_reply(&r, Some(200), SRC, GW, Some(200)));
    assert!(!is_reply(&r, None, SRC, GW, Some(200)), "untagged reply");
    assert!(!is_reply(&r, Some(100), SRC, GW, Some(200)), "other VLAN");
    assert!(
        !is_reply(&r, Some(200), SRC, GW, None),
        "tagged, untagged wanted"
    );
    assert!(is_reply(&r, Some(0), SRC, GW, None), "priority tag");
    // The tag still in the frame.
    let mut tagged = r[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0, 0, 200]);
    tagged.extend_from_slice(&r[12..]);
    assert!(is_reply(&tagged, None, SRC, GW, Some(200)));
    assert!(!is_reply(&tagged, None, SRC, GW, Some(100)));
    // Our own request is not a reply; truncated frames are nothing.
    assert!(!is_reply(
        &request_frame(SRC, None, GW),
        None,
        SRC,
        GW,
        None
    ));
    for n in 0..r.len() {
        assert!(!is_reply(&r[..n], None, SRC, GW, None), "truncated at {n}");
    }
}

#[test]
fn auxdata_reports_the_tag() {
    let mut a = [0u8; 20];
    assert_eq!(auxdata_vlan(&a), None);
    a[0..4].copy_from_slice(&TP_STATUS_VLAN_VALID.to_ne_bytes());
    assert_eq!(auxdata_vlan(&a), Some(0));
    a[16..18].copy_from_slice(&(0x2000u16 | 200).to_ne_bytes());
    assert_eq!(auxdata_vlan(&a), Some(200), "priority bits dropped");
    assert_eq!(auxdata_vlan(&a[..10]), None);
}

#[test]
fn the_source_is_never_a_mac_the_node_uses() {
    let perm = [0x52, 0x54, 0, 0xaa, 0, 1];
    let bond = perm; // the bond took its first member's address
    let current = bond;
    // Member 2: its own permanent address is free.
    let perm2 = [0x52, 0x54, 0, 0xaa, 0, 2];
    assert_eq!(safe_source(Some(perm2), current, &[bond, bond]), perm2);
    // Member 1: its permanent address is the bond's: a local variant.
    let s = safe_source(Some(perm), current, &[bond, bond]);
    assert_ne!(s, bond);
    assert_eq!(s[0] & 0x03, 0x02, "locally administered, unicast");
    // Without a permanent address: the current one unless in use.
    assert_eq!(safe_source(None, perm2, &[bond]), perm2);
    assert_ne!(safe_source(None, bond, &[bond]), bond);
    // Even the variant is avoided when in use.
    let taken = safe_source(Some(perm), current, &[bond]);
    let s2 = safe_source(Some(perm), current, &[bond, taken]);
    assert!(s2 != bond && s2 != taken);
    assert_eq!(parse_mac(&format_mac(s2)), Some(s2));
    assert_eq!(parse_mac("52:54:00:AA:00:01\n"), Some(perm));
    assert_eq!(parse_mac("52:54:00:aa:00"), None);
    assert_eq!(parse_mac("52:54:00:aa:00:01:02"), None);
}

/// Review item 12: team ports have no permanent address and all carry
/// the team's MAC; each needs its own source, or the working member's
/// reply satisfies the broken member's check.
#[test]
fn team_members_sharing_a_mac_get_distinct_sources() {
    let team = [0x52, 0x54, 0, 0xaa, 0, 1];
    let a = Member {
        ifindex: 2,
        current: team,
        perm: None,
        others: vec![team, team],
    };
    let b = Member {
        ifindex: 3,
        ..a.clone()
    };
    let s = sources(&[&a, &b]);
    assert_ne!(s[0], s[1], "one source per member");
    for x in &s {
        assert_ne!(*x, team);
        assert_eq!(x[0] & 0x01, 0, "unicast");
    }
}

/// Review item 15: with locally administered permanent MACs, salting
/// the first member's can land on its sibling's permanent MAC.
#[test]
fn a_source_is_never_a_siblings_permanent_mac() {
    let p1 = [0x52, 0x54, 0, 0xaa, 0, 0x01];
    let p2 = [0x52, 0x54, 0, 0xaa, 0, 0x00];
    let bond = p1;
    let m1 = Member {
        ifindex: 2,
        current: bond,
        perm: Some(p1),
        others: vec![bond, bond],
    };
    let m2 = Member {
        ifindex: 3,
        current: bond,
        perm: Some(p2),
        others: vec![bond, bond],
    };
    let s = sources(&[&m1, &m2]);
    assert_eq!(s[1], p2, "a free permanent MAC is used as is");
    for x in &s {
        assert_ne!(*x, bond);
    }
    assert_ne!(s[0], p2, "not the sibling's permanent MAC");
    assert_ne!(s[0], s[1]);
}
