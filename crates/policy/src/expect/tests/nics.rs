//! The two nicN mappings (in force, next run) and NIC_RENUMBERED, on plain
//! snapshots: the seed outage's root cause, one dead port shifting every
//! later nicN.

use std::collections::BTreeMap;

use preflight_model::{
    Address, Bond, BondMode, BondPort, Interface, MiiStatus, OperState, Severity, Snapshot,
};

use crate::expect::{
    from_os_net_config, in_force_mapping, nic_mapping, nic_table, ordered_nics, parse_document,
    rules, Expectations, OsncState,
};

/// 4 NICs, nic1 static, bond1 of nic2 + nic3, nic4 static: the issue's node.
const CONFIG: &str = "network_config:
  - type: interface
    name: nic1
    addresses:
      - ip_netmask: 192.0.2.10/24
  - type: linux_bond
    name: bond1
    bonding_options: \"mode=active-backup miimon=100\"
    members:
      - type: interface
        name: nic2
      - type: interface
        name: nic3
  - type: interface
    name: nic4
    addresses:
      - ip_netmask: 198.51.100.10/24
";

fn nic(index: u32, name: &str, up: bool) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: up,
        oper_state: if up {
            OperState::Up
        } else {
            OperState::LowerLayerDown
        },
        mtu: 1500,
        mac: Some(format!("52:54:00:00:00:{index:02x}")),
        ..Interface::default()
    }
}

/// The node built as CONFIG says, with `down` NICs without carrier.
fn node(names: [&str; 4], down: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    for (i, n) in names.iter().enumerate() {
        let idx = u32::try_from(i).expect("small") + 2;
        let mut x = nic(idx, n, !down.contains(n));
        if i == 1 || i == 2 {
            x.controller = Some(10);
            x.bond_port = Some(BondPort {
                mii_status: if down.contains(n) {
                    MiiStatus::Down
                } else {
                    MiiStatus::Up
                },
                ..BondPort::default()
            });
        }
        s.interfaces.insert(idx, x);
    }
    s.interfaces.insert(
        10,
        Interface {
            kind: Some("bond".into()),
            bond: Some(Bond {
                mode: BondMode::ActiveBackup,
                miimon_ms: 100,
                active_port: Some(3),
                ..Bond::default()
            }),
            ..nic(10, "bond1", true)
        },
    );
    for (ifindex, ip) in [(2, "192.0.2.10"), (5, "198.51.100.10")] {
        s.addresses.push(Address {
            ifindex,
            address: ip.parse().expect("ip"),
            prefix_len: 24,
            permanent: true,
            scope: "global".into(),
        });
    }
    s
}

fn expectations(s: &Snapshot, mapping: Option<&serde_json::Value>) -> Expectations {
    let doc = parse_document("config.yaml", CONFIG).expect("yaml");
    let st = OsncState::with_mapping("mapping.yaml", mapping);
    let nics = in_force_mapping(s, &doc, &st);
    let mut e = from_os_net_config("config.yaml", &doc, &nics).expect("reads");
    e.nics.osnc = st;
    e
}

fn critical(s: &Snapshot, e: &Expectations) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rules(s, e)
        .into_iter()
        .filter(|r| r.code.default_severity() == Severity::Critical)
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    v.sort();
    v
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect()
}

#[test]
fn healthy_node_maps_the_same_both_ways() {
    let s = node(["eth0", "eth1", "eth2", "eth3"], &[]);
    let e = expectations(&s, None);
    let want = map(&[
        ("nic1", "eth0"),
        ("nic2", "eth1"),
        ("nic3", "eth2"),
        ("nic4", "eth3"),
    ]);
    assert_eq!(e.nics.in_force, want);
    assert_eq!(nic_mapping(&s, None), want);
    assert!(nic_table(&s, &e).values().all(|m| m.reason.is_none()));
    assert_eq!(critical(&s, &e), []);
}

#[test]
fn the_issue_case_nic2_pulled_is_renumbered_and_nothing_is_missing() {
    // Built healthy, then eth1's cable pulled (the agent may also start
    // only now: the mapping in force comes from the bond's ports).
    let s = node(["eth0", "eth1", "eth2", "eth3"], &["eth1"]);
    let e = expectations(&s, None);
    assert_eq!(
        e.nics.in_force.get("nic2").map(String::as_str),
        Some("eth1")
    );
    assert_eq!(
        e.nics.in_force.get("nic4").map(String::as_str),
        Some("eth3")
    );
    let t = nic_table(&s, &e);
    let nic2 = &t["nic2"];
    assert_eq!(
        (nic2.in_force.as_deref(), nic2.next_run.as_deref()),
        (Some("eth1"), Some("eth2"))
    );
    assert_eq!(nic2.reason.as_deref(), Some("eth1 has no carrier"));
    assert_eq!(t["nic4"].next_run, None);
    assert!(t["nic1"].reason.is_none());
    let c = critical(&s, &e);
    assert_eq!(
        c,
        [
            ("BOND_MEMBER_MISSING".to_owned(), "bond1/eth1".to_owned()),
            ("NIC_RENUMBERED".to_owned(), "nic2".to_owned()),
            ("NIC_RENUMBERED".to_owned(), "nic3".to_owned()),
            ("NIC_RENUMBERED".to_owned(), "nic4".to_owned()),
        ],
        "no EXPECTED_*_MISSING for the NICs that are fine"
    );
    let msg = rules(&s, &e)
        .into_iter()
        .find(|r| r.subject == "nic2")
        .expect("nic2")
        .message;
    assert!(
        msg.contains("eth1") && msg.contains("eth2") && msg.contains("mapping.yaml"),
        "{msg}"
    );
}

#[test]
fn carrier_loss_on_each_position_shifts_only_what_follows() {
    let names = ["eth0", "eth1", "eth2", "eth3"];
    for (pos, dead) in names.iter().enumerate() {
        let s = node(names, &[dead]);
        let e = expectations(&s, None);
        assert_eq!(
            e.nics.in_force,
            map(&[
                ("nic1", "eth0"),
                ("nic2", "eth1"),
                ("nic3", "eth2"),
                ("nic4", "eth3")
            ]),
            "in force with {dead} down"
        );
        let shifted: Vec<String> = nic_table(&s, &e)
            .into_iter()
            .filter(|(_, m)| m.reason.is_some())
            .map(|(n, _)| n)
            .collect();
        let want: Vec<String> = (pos + 1..=4).map(|i| format!("nic{i}")).collect();
        assert_eq!(shifted, want, "{dead} down");
        let missing: Vec<_> = critical(&s, &e)
            .into_iter()
            .filter(|(c, _)| c.starts_with("EXPECTED_"))
            .collect();
        // Only the dead NIC's own address (nic1/nic4 hold one) may be missing.
        assert!(missing.is_empty(), "{dead} down: {missing:?}");
    }
}

#[test]
fn embedded_names_first_then_natural_order() {
    let mut s = Snapshot::default();
    for (i, n) in ["p1p1", "ens3", "eth10", "eth2", "eno1", "em2"]
        .iter()
        .enumerate()
    {
        let idx = u32::try_from(i).expect("small") + 2;
        s.interfaces.insert(idx, nic(idx, n, true));
    }
    assert_eq!(
        ordered_nics(&s, true),
        ["em2", "eno1", "eth2", "eth10", "ens3", "p1p1"]
    );
    // Not physical: a veth, loopback, a NIC without a MAC.
    s.interfaces.insert(
        20,
        Interface {
            kind: Some("veth".into()),
            ..nic(20, "veth0", true)
        },
    );
    s.interfaces.insert(
        21,
        Interface {
            mac: None,
            ..nic(21, "eth1", true)
        },
    );
    assert_eq!(ordered_nics(&s, true).len(), 6);
}

#[test]
fn a_mapping_file_by_name_or_mac_does_not_shift() {
    let s = node(["eth0", "eth1", "eth2", "eth3"], &["eth1"]);
    for doc in [
        serde_json::json!({"interface_mapping": {"nic1": "eth0", "nic2": "eth1", "nic3": "eth2", "nic4": "eth3"}}),
        serde_json::json!({"interface_mapping": {"nic1": "52:54:00:00:00:02", "nic2": "52:54:00:00:00:03", "nic3": "52:54:00:00:00:04", "nic4": "52:54:00:00:00:05"}}),
    ] {
        let e = expectations(&s, Some(&doc));
        assert_eq!(
            e.nics.in_force.get("nic2").map(String::as_str),
            Some("eth1")
        );
        assert!(nic_table(&s, &e).values().all(|m| m.reason.is_none()));
        assert!(!critical(&s, &e).iter().any(|(c, _)| c == "NIC_RENUMBERED"));
    }
}

#[test]
fn a_bond_member_counts_by_its_own_link_not_the_bonds() {
    // bond1 is up (eth2 carries it) but its port eth1 is down: os-net-config
    // reads eth1's own operstate, so eth1 is skipped.
    let s = node(["eth0", "eth1", "eth2", "eth3"], &["eth1"]);
    assert!(s.by_name("bond1").is_some_and(|b| b.carrier));
    assert_eq!(ordered_nics(&s, true), ["eth0", "eth2", "eth3"]);
}

#[test]
fn every_sample_using_nic_names_has_a_mapping_table() {
    let mut s = Snapshot::default();
    for i in 0..8u32 {
        s.interfaces
            .insert(i + 2, nic(i + 2, &format!("eth{i}"), true));
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(super::DIR).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let doc = parse_document(&name, &text).expect("parses");
        if doc.get("network_config").is_none() || !text.contains("nic") {
            continue;
        }
        let names = crate::expect::nics::nic_names(&doc);
        if names.is_empty() {
            continue;
        }
        let nics = in_force_mapping(&s, &doc, &OsncState::default());
        let e = from_os_net_config(&name, &doc, &nics).expect("reads");
        let t = nic_table(&s, &e);
        assert_eq!(t.len(), names.len(), "{name}: {t:?}");
        seen += 1;
    }
    assert!(seen >= 3, "{seen} samples use nicN");
}

/// MAPPING_ENTRY_UNMATCHED: each entry that matches no NIC (an upper-case
/// MAC, a replaced card, a name no NIC has) is a warning naming the entry,
/// why, and where the name goes instead; NIC_RENUMBERED says the same for a
/// name whose NIC moves.
#[test]
fn mapping_entries_that_match_no_nic_are_warnings() {
    let mut s = node(["eth0", "eth1", "eth2", "eth3"], &[]);
    if let Some(i) = s.interfaces.get_mut(&3) {
        i.mac = Some("52:54:00:00:00:0a".into()); // eth1
    }
    let m = serde_json::json!({"interface_mapping": {
        "nic1": "52:54:00:00:00:0A", "nic2": "52:54:00:99:99:99", "nic3": "em9"}});
    let e = expectations(&s, Some(&m));
    let raws = rules(&s, &e);
    let unmatched: Vec<(&str, &str)> = raws
        .iter()
        .filter(|r| r.code.as_str() == "MAPPING_ENTRY_UNMATCHED")
        .map(|r| (r.subject.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(unmatched.len(), 3, "{unmatched:?}");
    assert_eq!(
        raws.iter()
            .find(|r| r.subject == "nic1")
            .map(|r| r.code.default_severity()),
        Some(Severity::Warning)
    );
    let (_, m1) = unmatched[0];
    assert!(
        m1.contains("52:54:00:00:00:0A")
            && m1.contains("mapping.yaml")
            && m1.contains("eth1 has this MAC as 52:54:00:00:00:0a"),
        "{m1}"
    );
    assert!(unmatched[1].1.contains("replaced"), "{}", unmatched[1].1);
    assert!(unmatched[2].1.contains("em9"), "{}", unmatched[2].1);
    // A file whose entries all match raises none.
    let m = serde_json::json!({"interface_mapping": {"nic1": "52:54:00:00:00:02"}});
    let e = expectations(&s, Some(&m));
    assert!(!rules(&s, &e)
        .iter()
        .any(|r| r.code.as_str() == "MAPPING_ENTRY_UNMATCHED"));
}
