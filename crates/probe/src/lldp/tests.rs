use std::time::SystemTime;

use super::*;

fn tlv(t: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).expect("test TLV fits");
    let word = (u16::from(t) << 9) | len;
    let mut v = word.to_be_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

fn org(oui: [u8; 3], subtype: u8, info: &[u8]) -> Vec<u8> {
    let mut v = oui.to_vec();
    v.push(subtype);
    v.extend_from_slice(info);
    tlv(TLV_ORG, &v)
}

fn vlan_name(id: u16, name: &str) -> Vec<u8> {
    let mut info = id.to_be_bytes().to_vec();
    info.push(u8::try_from(name.len()).expect("short name"));
    info.extend_from_slice(name.as_bytes());
    org(OUI_DOT1, DOT1_VLAN_NAME, &info)
}

/// An LLDPDU as a switch running lldpd sends it (802.1AB Annex and lldpd's
/// own TLV set), every TLV preflight reads.
fn full() -> Vec<u8> {
    [
        tlv(1, &[4, 0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]),
        tlv(2, b"\x05swp12"),
        tlv(3, &120u16.to_be_bytes()),
        tlv(4, b"uplink to compute-0"),
        tlv(5, b"switch-A"),
        tlv(6, b"Debian GNU/Linux"),
        tlv(7, &[0, 0x14, 0, 0x14]),
        tlv(8, &[5, 1, 10, 0, 0, 2, 2, 0, 0, 0, 7, 0]),
        org(OUI_DOT1, DOT1_PVID, &1u16.to_be_bytes()),
        vlan_name(100, "tenant"),
        vlan_name(200, "storage"),
        org(OUI_DOT3, DOT3_LINK_AGG, &[1, 0, 0, 0, 0]),
        org(OUI_DOT3, DOT3_MAX_FRAME, &1522u16.to_be_bytes()),
        org([0x00, 0x12, 0xbb], 1, &[0, 0, 0]),
        tlv(0, &[]),
    ]
    .concat()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

#[test]
fn a_full_lldpdu_decodes_every_field_preflight_reads() {
    let n = decode(&full(), "eth0", now()).expect("valid");
    assert_eq!(n.member, "eth0");
    assert_eq!(n.chassis_id, "52:54:00:aa:bb:01");
    assert_eq!(n.chassis_id_subtype, "mac");
    assert_eq!(n.port_id, "swp12");
    assert_eq!(n.port_id_subtype, "ifname");
    assert_eq!(n.ttl_s, 120);
    assert_eq!(n.port_descr.as_deref(), Some("uplink to compute-0"));
    assert_eq!(n.system_name.as_deref(), Some("switch-A"));
    assert_eq!(n.mgmt_address.as_deref(), Some("10.0.0.2"));
    assert_eq!(n.pvid, Some(1));
    let vlans: Vec<_> = n.vlans.iter().map(|v| (v.id, v.name.as_str())).collect();
    assert_eq!(vlans, [(100, "tenant"), (200, "storage")]);
    assert_eq!(n.max_frame_size, Some(1522));
    assert_eq!(
        n.aggregation,
        Some(LldpAggregation {
            capable: true,
            enabled: false,
            port_id: 0
        })
    );
    assert_eq!(n.describe(), "switch-A port swp12");
}

#[test]
fn an_ethernet_frame_is_checked_before_its_lldpdu() {
    let mut frame = NEAREST_BRIDGE.to_vec();
    frame.extend_from_slice(&[0x52, 0x54, 0, 0xaa, 0xbb, 1]);
    frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
    frame.extend_from_slice(&full());
    assert!(decode_frame(&frame, "eth0", now()).is_ok());
    let mut ip = frame.clone();
    ip[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        decode_frame(&ip, "eth0", now()),
        Err(LldpError::NotLldp("Ethertype is not 0x88cc"))
    );
    let mut unicast = frame.clone();
    unicast[0] = 0x52;
    assert!(matches!(
        decode_frame(&unicast, "eth0", now()),
        Err(LldpError::NotLldp(_))
    ));
    assert!(decode_frame(&frame[..10], "eth0", now()).is_err());
}

#[test]
fn chassis_and_port_id_subtypes_are_shown_by_kind() {
    let pdu =
        |chassis: &[u8], port: &[u8]| [tlv(1, chassis), tlv(2, port), tlv(3, &[0, 30])].concat();
    let n = decode(
        &pdu(b"\x07sw-7", b"\x03\x00\x11\x22\x33\x44\x55"),
        "m",
        now(),
    )
    .expect("valid");
    assert_eq!(
        (n.chassis_id.as_str(), n.chassis_id_subtype.as_str()),
        ("sw-7", "local")
    );
    assert_eq!(
        (n.port_id.as_str(), n.port_id_subtype.as_str()),
        ("00:11:22:33:44:55", "mac")
    );
    let n = decode(
        &pdu(
            &[
                5, 2, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
            b"\x01Gi1/0/1",
        ),
        "m",
        now(),
    )
    .expect("valid");
    assert_eq!(n.chassis_id, "2001:db8::1");
    assert_eq!(n.port_id_subtype, "ifalias");
    for (c, name) in [
        (1, "chassis-component"),
        (2, "ifalias"),
        (3, "port-component"),
        (6, "ifname"),
    ] {
        let n = decode(&pdu(&[c, b'x'], b"\x07p"), "m", now()).expect("valid");
        assert_eq!(n.chassis_id_subtype, name);
    }
    let n = decode(&pdu(b"\x07c", b"\x06circuit"), "m", now()).expect("valid");
    assert_eq!(n.port_id_subtype, "agent-circuit-id");
    // A MAC subtype with a length other than 6 still shows as hex.
    let n = decode(&pdu(&[4, 1, 2, 3], b"\x07p"), "m", now()).expect("valid");
    assert_eq!(n.chassis_id, "01:02:03");
    assert!(matches!(
        decode(&pdu(&[0, b'x'], b"\x07p"), "m", now()),
        Err(LldpError::ReservedSubtype {
            what: "Chassis ID",
            subtype: 0,
            ..
        })
    ));
    assert!(matches!(
        decode(&pdu(b"\x07c", &[8, b'x']), "m", now()),
        Err(LldpError::ReservedSubtype {
            what: "Port ID",
            subtype: 8,
            ..
        })
    ));
}

#[test]
fn texts_from_the_wire_are_escaped_and_bounded() {
    let hostile = b"sw\x1b[2J\xff\\\xe2\x80\xaeA";
    let pdu = [
        tlv(1, b"\x07c"),
        tlv(2, b"\x07p"),
        tlv(3, &[0, 30]),
        tlv(5, hostile),
        tlv(4, &[b'a'; 300][..]),
    ]
    .concat();
    let n = decode(&pdu, "m", now()).expect("valid");
    assert_eq!(
        n.system_name.as_deref(),
        Some("sw\\u{1b}[2J\\xff\\\\\\u{202e}A")
    );
    let descr = n.port_descr.expect("present");
    assert_eq!(descr.len(), MAX_TEXT_BYTES);
    assert!(text(&[0x01; 300]).len() <= MAX_TEXT_BYTES);
    assert!(text(&[0xff; 300]).len() <= MAX_TEXT_BYTES);
    assert!(text("é".repeat(200).as_bytes()).len() <= MAX_TEXT_BYTES);
}

#[test]
fn missing_or_misordered_mandatory_tlvs_are_refused() {
    let chassis = tlv(1, b"\x07c");
    let port = tlv(2, b"\x07p");
    let ttl = tlv(3, &[0, 30]);
    let name = tlv(5, b"x");
    for (pdu, expected) in [
        (vec![], "a Chassis ID TLV"),
        (chassis.clone(), "a Port ID TLV"),
        ([chassis.clone(), port.clone()].concat(), "a TTL TLV"),
        (
            [port.clone(), chassis.clone(), ttl.clone()].concat(),
            "a Chassis ID TLV",
        ),
        (
            [chassis.clone(), name.clone(), port.clone(), ttl.clone()].concat(),
            "a Port ID TLV",
        ),
        (
            [chassis.clone(), port.clone(), tlv(0, &[])].concat(),
            "a TTL TLV",
        ),
        (
            [chassis.clone(), port.clone(), ttl.clone(), ttl.clone()].concat(),
            "no second Chassis ID, Port ID or TTL TLV",
        ),
    ] {
        match decode(&pdu, "m", now()) {
            Err(LldpError::Mandatory { expected: e, .. }) => assert_eq!(e, expected, "{pdu:?}"),
            other => panic!("{pdu:?}: {other:?}"),
        }
    }
    // Without an End TLV (optional since 802.1AB-2009) it is whole.
    assert!(decode(&[chassis, port, ttl].concat(), "m", now()).is_ok());
}

#[test]
fn lengths_past_the_end_and_wrong_lengths_are_errors_naming_the_byte() {
    let mut pdu = [tlv(1, b"\x07c"), tlv(2, b"\x07p"), tlv(3, &[0, 30])].concat();
    pdu.extend_from_slice(&tlv(5, b"switch")[..5]);
    assert_eq!(
        decode(&pdu, "m", now()),
        Err(LldpError::PastEnd {
            tlv: 5,
            offset: 12,
            len: 6,
            left: 3
        })
    );
    let err = decode(&pdu, "m", now()).expect_err("past the end");
    assert_eq!(
        err.to_string(),
        "TLV type 5 at byte 12 says 6 bytes but only 3 remain"
    );
    let base = [tlv(1, b"\x07c"), tlv(2, b"\x07p"), tlv(3, &[0, 30])].concat();
    for bad in [
        tlv(0, &[1]),
        tlv(8, &[40, 1, 10, 0, 0, 2, 2, 0, 0, 0, 7, 0]),
        tlv(8, &[5, 1, 10, 0, 0, 2]),
        org(OUI_DOT1, DOT1_PVID, &[1]),
        org(OUI_DOT1, DOT1_VLAN_NAME, &[0, 100, 9, b'a']),
        org(OUI_DOT1, DOT1_VLAN_NAME, &[0, 100]),
        org(OUI_DOT3, DOT3_MAX_FRAME, &[5, 0xdc, 0]),
        org(OUI_DOT3, DOT3_LINK_AGG, &[1, 0, 0]),
        tlv(127, &[0, 0x80]),
    ] {
        let pdu = [base.clone(), bad.clone()].concat();
        assert!(
            matches!(
                decode(&pdu, "m", now()),
                Err(LldpError::BadLength { offset: 12, .. })
            ),
            "{bad:?}: {:?}",
            decode(&pdu, "m", now())
        );
    }
    assert!(matches!(
        decode(
            &[tlv(1, b"\x07c"), tlv(2, b"\x07"), tlv(3, &[0, 30])].concat(),
            "m",
            now()
        ),
        Err(LldpError::BadLength {
            what: "Port ID",
            ..
        })
    ));
    assert!(matches!(
        decode(
            &[tlv(1, b"\x07c"), tlv(2, b"\x07p"), tlv(3, &[0])].concat(),
            "m",
            now()
        ),
        Err(LldpError::BadLength { what: "TTL", .. })
    ));
}

#[test]
fn reserved_vlan_ids_are_skipped_and_vlans_bounded() {
    let mut pdu = [tlv(1, b"\x07c"), tlv(2, b"\x07p"), tlv(3, &[0, 30])].concat();
    pdu.extend(vlan_name(0, "zero"));
    pdu.extend(vlan_name(4095, "all"));
    for id in 1..=300 {
        pdu.extend(vlan_name(id, ""));
    }
    let n = decode(&pdu, "m", now()).expect("valid");
    assert_eq!(n.vlans.len(), MAX_VLANS);
    assert_eq!(n.vlans[0].id, 1);
    // The list is marked cut: a VLAN past it proves nothing (review item 7).
    assert!(n.vlans_cut);
    let mut short = [tlv(1, b"\x07c"), tlv(2, b"\x07p"), tlv(3, &[0, 30])].concat();
    short.extend(vlan_name(100, "a"));
    assert!(!decode(&short, "m", now()).expect("valid").vlans_cut);
}

#[test]
fn every_character_the_cli_escapes_is_escaped_here_too() {
    // Soft hyphen, Arabic letter mark, line separator, a tag character.
    let n = text("a\u{ad}b\u{61c}c\u{2028}d\u{e0041}e".as_bytes());
    assert_eq!(n, "a\\u{ad}b\\u{61c}c\\u{2028}d\\u{e0041}e");
    for &(lo, hi) in preflight_model::excerpt::INVISIBLE {
        for c in [lo, hi].into_iter().filter_map(char::from_u32) {
            assert!(!text(c.to_string().as_bytes()).contains(c), "U+{lo:04X}");
        }
    }
}

#[test]
fn every_truncation_of_a_valid_lldpdu_is_a_value_never_a_panic() {
    let pdu = full();
    // TLV boundaries after the TTL: a shorter but whole LLDPDU.
    let mut boundaries = vec![];
    let mut o = 0;
    while o < pdu.len() {
        let len = usize::from(u16::from_be_bytes([pdu[o], pdu[o + 1]]) & 0x1ff);
        o += 2 + len;
        boundaries.push(o);
    }
    for cut in 0..pdu.len() {
        let r = decode(&pdu[..cut], "m", now());
        if boundaries[2..].contains(&cut) {
            assert!(r.is_ok(), "cut at {cut}: {r:?}");
        } else {
            assert!(r.is_err(), "cut at {cut}: {r:?}");
        }
    }
}

/// xorshift64*: deterministic random bytes, no dependency.
fn rng(seed: u64) -> impl FnMut() -> u8 {
    let mut x = seed;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }
}

#[test]
fn random_bytes_and_mutated_lldpdus_never_panic() {
    let mut next = rng(0x9e37_79b9_7f4a_7c15);
    for len in 0..600 {
        let bytes: Vec<u8> = (0..len % 1600).map(|_| next()).collect();
        let _ = decode(&bytes, "m", now());
        let _ = decode_frame(&bytes, "m", now());
    }
    // Valid start, then random TLVs: the headers are well-formed often
    // enough to reach every branch.
    let valid = full();
    for round in 0..20_000 {
        let mut pdu = valid.clone();
        for _ in 0..(round % 8) + 1 {
            let at = usize::from(next()) * pdu.len() / 256;
            pdu[at] = next();
        }
        if let Ok(n) = decode(&pdu, "m", now()) {
            for s in [&n.chassis_id, &n.port_id]
                .into_iter()
                .chain(n.system_name.iter())
                .chain(n.port_descr.iter())
            {
                assert!(s.len() <= MAX_TEXT_BYTES);
                assert!(!s.chars().any(char::is_control), "{s:?}");
            }
        }
    }
}

/// Frames lldpd sent on a real link (tests/fixtures/lldp/*.bin, captured
/// in the VM rig by tests/tests/vm_rig.rs: lldpd 1.x on each switch,
/// switch-A's port carrying VLANs 100 and 200, switch-B's only 100).
#[test]
fn frames_captured_from_lldpd_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/lldp");
    let mut heard = Vec::new();
    for e in std::fs::read_dir(&dir)
        .expect("tests/fixtures/lldp")
        .flatten()
    {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("bin") {
            continue;
        }
        let frame = std::fs::read(&path).expect("fixture readable");
        let n = decode_frame(&frame, "m", now())
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        // Every cut of a real frame is a value too, never a panic.
        for cut in 0..frame.len() {
            let _ = decode_frame(&frame[..cut], "m", now());
        }
        heard.push(n);
    }
    assert!(
        heard.len() >= 2,
        "{} captures in {}",
        heard.len(),
        dir.display()
    );
    // Captured with both ports as the rig starts (the other files are later
    // scenarios: a port MTU lowered, ...).
    let switch = |file: &str| {
        let frame = std::fs::read(dir.join(file)).expect("capture in tests/fixtures/lldp");
        decode_frame(&frame, "m", now()).expect("decodes")
    };
    let a = &switch("mA-0.bin");
    assert_eq!(a.system_name.as_deref(), Some("switch-A"));
    assert_eq!(a.chassis_id_subtype, "mac");
    assert_eq!(a.chassis_id.len(), 17, "{}", a.chassis_id);
    // lldpd names the port by its MAC; the description is the port's name.
    assert_eq!(a.port_id_subtype, "mac");
    assert_eq!(a.describe(), format!("switch-A port {}", a.port()));
    assert!(a.port_descr.is_some() && a.port() != a.port_id);
    let ids = |n: &LldpNeighbor| n.vlans.iter().map(|v| v.id).collect::<Vec<_>>();
    assert_eq!(ids(a), [100, 200]);
    assert_eq!(a.vlans[1].name, "vlan200");
    // lldpd sends no Maximum Frame Size of its own; the rig adds it as a
    // custom TLV (MTU + 22, or + 18).
    assert!(a.max_frame_size.is_some_and(|m| m >= 1518), "{a:?}");
    assert!(a.aggregation.is_some_and(|g| g.capable && !g.enabled));
    assert!(a.mgmt_address.is_some());
    let b = &switch("mB-0.bin");
    assert_eq!(b.system_name.as_deref(), Some("switch-B"));
    assert_ne!(a.chassis_id, b.chassis_id);
    assert_eq!(ids(b), [100]);
}
