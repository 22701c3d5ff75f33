//! Expectations with Open vSwitch, DPDK and team entries, from the
//! os-net-config samples: healthy TripleO-style OVS nodes must be go, and
//! what cannot be checked is said, never dropped.

use std::collections::BTreeMap;

use preflight_model::{
    Interface, OperState, OvsBridge, OvsInterface, OvsPort, OvsSource, Severity, Snapshot,
};

use super::{iface, load};
use crate::expect::{rules, Kind};

fn kernel(index: u32, name: &str, kind: Option<&str>, carrier: bool) -> Interface {
    Interface {
        index,
        name: name.into(),
        kind: kind.map(str::to_owned),
        admin_up: true,
        carrier,
        oper_state: if carrier {
            OperState::Up
        } else {
            OperState::Down
        },
        mtu: 1500,
        ..Interface::default()
    }
}

fn member(name: &str, ty: &str, up: bool) -> OvsInterface {
    OvsInterface {
        name: name.into(),
        iface_type: ty.into(),
        admin_state: Some("up".into()),
        link_state: Some(if up { "up" } else { "down" }.into()),
        mac_in_use: Some(format!("02:00:00:00:00:{:02x}", name.len())),
        ..OvsInterface::default()
    }
}

fn ovs(bridge: &str, bond: &str, members: Vec<OvsInterface>) -> OvsSource {
    OvsSource::Ok {
        path: "/run/openvswitch/db.sock".into(),
        bridges: vec![OvsBridge {
            name: bridge.into(),
            datapath_type: String::new(),
            ports: vec![OvsPort {
                name: bond.into(),
                bond_mode: Some("balance-slb".into()),
                interfaces: members,
                ..OvsPort::default()
            }],
            ..OvsBridge::default()
        }],
    }
}

/// The node bond.yaml describes: br-ctlplane (an OVS bridge, kernel
/// datapath) with OVS bond bond1 of em1 and em2.
fn bond_yaml_node(em2_carrier: bool) -> Snapshot {
    let mut s = Snapshot::default();
    for (i, (name, kind, carrier)) in [
        ("ovs-system", Some("openvswitch"), false),
        ("br-ctlplane", Some("openvswitch"), true),
        ("em1", None, true),
        ("em2", None, em2_carrier),
    ]
    .into_iter()
    .enumerate()
    {
        let idx = u32::try_from(i).expect("small") + 2;
        s.interfaces.insert(idx, kernel(idx, name, kind, carrier));
    }
    s.ovs = ovs(
        "br-ctlplane",
        "bond1",
        vec![member("em1", "", true), member("em2", "", em2_carrier)],
    );
    s
}

fn critical(snap: &Snapshot, file: &str) -> Vec<(String, String)> {
    let e = load(file, &BTreeMap::new()).expect("reads");
    let mut all = rules(snap, &e);
    all.extend(crate::rules(
        snap,
        &crate::PolicyConfig::default(),
        &crate::FlapCounts::default(),
    ));
    let mut v: Vec<(String, String)> = all
        .into_iter()
        .filter(|r| r.code.default_severity() == Severity::Critical)
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    v.sort();
    v
}

#[test]
fn a_healthy_ovs_bond_node_from_the_sample_is_go() {
    // Before: BOND_MEMBER_MISSING br-ctlplane/bond1 "does not exist on the
    // node" -- an OVS bond has no kernel netdev.
    assert_eq!(critical(&bond_yaml_node(true), "bond.yaml"), []);
}

#[test]
fn an_ovs_member_without_carrier_is_named() {
    let c = critical(&bond_yaml_node(false), "bond.yaml");
    for want in [
        ("BOND_MEMBER_MISSING", "bond1/em2"),
        ("BOND_PORT_DOWN", "bond1/em2"),
        ("BOND_DEGRADED", "bond1"),
    ] {
        assert!(
            c.contains(&(want.0.into(), want.1.into())),
            "{want:?} not in {c:?}"
        );
    }
}

#[test]
fn ovs_expected_but_ovsdb_unreadable_is_never_go() {
    let mut s = bond_yaml_node(true);
    s.ovs = OvsSource::Unreadable {
        path: "/run/openvswitch/db.sock".into(),
        reason: "connection refused".into(),
    };
    let c = critical(&s, "bond.yaml");
    assert!(
        c.contains(&("OVS_STATE_UNREADABLE".into(), "ovsdb".into())),
        "{c:?}"
    );
    // Even without kernel evidence (userspace datapath): the file says so.
    s.interfaces.retain(|_, i| i.kind.is_none());
    s.interfaces
        .insert(9, kernel(9, "br-ctlplane", Some("tun"), true));
    let c = critical(&s, "bond.yaml");
    assert!(
        c.contains(&("OVS_STATE_UNREADABLE".into(), "ovsdb".into())),
        "{c:?}"
    );
}

#[test]
fn an_ovs_bond_missing_from_ovsdb_or_a_member_outside_it_is_named() {
    let mut s = bond_yaml_node(true);
    s.ovs = ovs(
        "br-ctlplane",
        "bond7",
        vec![member("em1", "", true), member("em2", "", true)],
    );
    let c = critical(&s, "bond.yaml");
    assert!(
        c.contains(&("EXPECTED_INTERFACE_MISSING".into(), "bond1".into())),
        "{c:?}"
    );
    s.ovs = ovs(
        "br-ctlplane",
        "bond1",
        vec![member("em1", "", true), member("eth9", "", true)],
    );
    let c = critical(&s, "bond.yaml");
    assert!(
        c.contains(&("BOND_MEMBER_MISSING".into(), "bond1/em2".into())),
        "{c:?}"
    );
}

#[test]
fn dpdk_bond_members_are_checked_in_ovsdb_not_the_kernel() {
    let nics: BTreeMap<String, String> = [("nic2", "eth1"), ("nic3", "eth2")]
        .map(|(a, b)| (a.into(), b.into()))
        .into();
    let mut e = load("ovs_dpdk_bond.json", &nics).expect("reads");
    // os-net-config knows the bound NICs from its dpdk_mapping.yaml.
    e.nics.osnc.dpdk = ["eth1", "eth2"]
        .iter()
        .enumerate()
        .map(|(i, n)| crate::expect::DpdkBound {
            name: (*n).into(),
            pci_address: format!("0000:00:0{}.0", i + 4),
            mac_address: Some(format!("52:54:00:00:00:0{}", i + 2)),
            vf: false,
        })
        .collect();
    assert_eq!(iface(&e, "dpdkbond0").kind, Kind::OvsDpdkBond);
    assert_eq!(iface(&e, "dpdkbond0").members, ["dpdk0", "dpdk1"]);
    assert_eq!(iface(&e, "dpdk0").kind, Kind::OvsDpdkPort);
    assert_eq!(iface(&e, "eth1").kind, Kind::DpdkNic);
    assert_eq!(iface(&e, "br-link").kind, Kind::OvsUserBridge);
    let mut s = Snapshot::default();
    s.interfaces
        .insert(2, kernel(2, "br-link", Some("tun"), true));
    // nic1: a kernel NIC; nic2 and nic3 are bound to DPDK (not in the
    // kernel) and still numbered by os-net-config: no renumbering.
    let mut eth0 = kernel(3, "eth0", None, true);
    eth0.mac = Some("52:54:00:00:00:01".into());
    s.interfaces.insert(3, eth0);
    s.ovs = ovs(
        "br-link",
        "dpdkbond0",
        vec![member("dpdk0", "dpdk", true), member("dpdk1", "dpdk", true)],
    );
    let mut c: Vec<_> = rules(&s, &e)
        .into_iter()
        .filter(|r| r.code.default_severity() == Severity::Critical)
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    assert_eq!(
        c,
        [],
        "eth1/eth2 are bound to DPDK: not looked for in the kernel"
    );
    s.ovs = ovs("br-link", "dpdkbond0", vec![member("dpdk0", "dpdk", true)]);
    c = rules(&s, &e)
        .into_iter()
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    assert!(
        c.contains(&("BOND_MEMBER_MISSING".into(), "dpdkbond0/dpdk1".into())),
        "{c:?}"
    );
    assert!(
        c.contains(&("EXPECTED_INTERFACE_MISSING".into(), "dpdk1".into())),
        "{c:?}"
    );
}

#[test]
fn team_members_are_checked_and_the_team_device_judged() {
    let e = load("team.json", &BTreeMap::new()).expect("reads");
    assert_eq!(iface(&e, "team1").kind, Kind::Team);
    assert_eq!(iface(&e, "team1").members, ["em1", "em2"]);
    let mut s = Snapshot::default();
    s.interfaces.insert(2, kernel(2, "em1", None, true));
    let c: Vec<_> = rules(&s, &e)
        .into_iter()
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    assert!(
        c.contains(&("EXPECTED_INTERFACE_MISSING".into(), "team1".into())),
        "{c:?}"
    );
    assert!(
        c.contains(&("BOND_MEMBER_MISSING".into(), "team1/em2".into())),
        "{c:?}"
    );
    // The team exists, em1 is its port, em2 exists but is not enslaved.
    s.interfaces
        .insert(4, kernel(4, "team1", Some("team"), true));
    s.interfaces.get_mut(&2).expect("em1").controller = Some(4);
    s.interfaces.insert(3, kernel(3, "em2", None, true));
    let c: Vec<_> = rules(&s, &e)
        .into_iter()
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    assert_eq!(
        c,
        [("BOND_MEMBER_MISSING".to_owned(), "team1/em2".to_owned())]
    );
    // Kernel rules: the team with one of two ports up is degraded.
    s.interfaces.get_mut(&3).expect("em2").controller = Some(4);
    s.interfaces.get_mut(&3).expect("em2").carrier = false;
    let mut k: Vec<_> = crate::rules(
        &s,
        &crate::PolicyConfig::default(),
        &crate::FlapCounts::default(),
    )
    .into_iter()
    .map(|r| (r.code.as_str().to_owned(), r.subject))
    .collect();
    k.sort();
    assert_eq!(
        k,
        [
            ("BOND_DEGRADED".to_owned(), "team1".to_owned()),
            ("BOND_PORT_DOWN".to_owned(), "team1/em2".to_owned())
        ]
    );
}

#[test]
fn entries_that_cannot_be_checked_are_a_warning_and_their_nics_still_checked() {
    let e = load("contrail_vrouter.yaml", &BTreeMap::new()).expect("reads");
    let c: Vec<_> = rules(&Snapshot::default(), &e)
        .into_iter()
        .map(|r| {
            (
                r.code.as_str().to_owned(),
                r.code.default_severity(),
                r.subject,
            )
        })
        .collect();
    assert!(
        c.iter()
            .any(|(code, sev, _)| code == "EXPECTATION_UNCHECKED" && *sev == Severity::Warning),
        "{c:?}"
    );
    assert!(
        c.iter()
            .any(|(code, _, _)| code == "EXPECTED_INTERFACE_MISSING"),
        "the vrouter's member NIC is looked for: {c:?}"
    );
}

#[test]
fn every_sample_with_ovs_dpdk_or_team_bonds_names_their_members() {
    let mut seen = 0;
    for entry in std::fs::read_dir(super::DIR).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        if !(name.ends_with(".yaml") || name.ends_with(".json"))
            || !["ovs_bond", "ovs_dpdk_bond", "\"team\"", "type: team"]
                .iter()
                .any(|t| text.contains(t))
        {
            continue;
        }
        let e = load(&name, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let bonds: Vec<_> = e
            .interfaces
            .iter()
            .filter(|i| matches!(i.kind, Kind::OvsBond | Kind::OvsDpdkBond | Kind::Team))
            .collect();
        assert!(!bonds.is_empty(), "{name}: no bond read");
        for b in bonds {
            assert!(
                b.members.len() >= 2,
                "{name}: {} has members {:?}",
                b.name,
                b.members
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} samples with OVS/DPDK/team bonds");
}
