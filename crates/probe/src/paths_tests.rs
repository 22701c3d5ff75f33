//! Tests of which member paths are planned.

use super::*;
use preflight_model::{Address, Bond, BondPort, Interface, Route};

fn iface(index: u32, name: &str, controller: Option<u32>) -> Interface {
    Interface {
        index,
        name: name.into(),
        carrier: true,
        controller,
        bond_port: controller.map(|_| BondPort::default()),
        ..Interface::default()
    }
}

fn addr(ifindex: u32, a: &str, len: u8) -> Address {
    Address {
        ifindex,
        address: a.parse().expect("ip"),
        prefix_len: len,
        permanent: true,
        scope: "global".into(),
    }
}

/// bond0 (10.100.0.5/24, default via 10.100.0.1) over eth0 and eth1,
/// bond0.200 (10.200.0.5/24, no route), eth2 alone.
fn snap() -> Snapshot {
    let mut s = Snapshot::default();
    let mut bond = iface(3, "bond0", None);
    bond.kind = Some("bond".into());
    bond.bond = Some(Bond {
        mode: BondMode::ActiveBackup,
        ..Bond::default()
    });
    for i in [
        bond,
        iface(1, "eth0", Some(3)),
        iface(2, "eth1", Some(3)),
        iface(4, "bond0.200", None),
        iface(5, "eth2", None),
    ] {
        s.interfaces.insert(i.index, i);
    }
    s.addresses = vec![
        addr(3, "10.100.0.5", 24),
        addr(4, "10.200.0.5", 24),
        addr(5, "10.50.0.5", 24),
    ];
    s.routes = vec![Route {
        destination: None,
        prefix_len: 0,
        gateway: Some("10.100.0.1".parse().expect("ip")),
        oif: Some(3),
        protocol: "static".into(),
        metric: None,
        ipv6: false,
    }];
    s
}

fn vlans() -> Vec<Vlan> {
    parse_vlans("VLAN Dev name    | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\nbond0.200      | 200  | bond0\n")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

#[test]
fn gateways_then_configured_then_neighbours_through_every_member() {
    let neigh = parse_neighbours("IP address       HW type     Flags       HW address            Mask     Device\n10.200.0.7       0x1         0x2         52:54:00:12:34:56     *        bond0.200\n10.200.0.8       0x1         0x0         00:00:00:00:00:00     *        bond0.200\n10.100.0.9       0x1         0x2         52:54:00:12:34:57     *        bond0\n10.50.0.1        0x1         0x2         52:54:00:12:34:58     *        eth2\n");
    assert_eq!(neigh.len(), 3, "the incomplete entry is skipped");
    let p = plan(&snap(), &vlans(), &neigh, &[]);
    let got: Vec<(&str, &str, Option<u16>, String)> = p
        .iter()
        .map(|c| {
            (
                c.member.as_str(),
                c.network.as_str(),
                c.vlan,
                c.target.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("eth0", "bond0", None, "10.100.0.1".into()),
            ("eth0", "bond0.200", Some(200), "10.200.0.7".into()),
            ("eth1", "bond0", None, "10.100.0.1".into()),
            ("eth1", "bond0.200", Some(200), "10.200.0.7".into()),
        ],
        "the gateway, not the neighbour, on bond0; eth2 is no bond"
    );
    // A configured target in the VLAN's subnet replaces the neighbours;
    // one elsewhere is not used.
    let p = plan(
        &snap(),
        &vlans(),
        &neigh,
        &[ip("10.200.0.1"), ip("192.0.2.1")],
    );
    assert!(p
        .iter()
        .any(|c| c.target == ip("10.200.0.1") && c.vlan == Some(200)));
    assert!(!p.iter().any(|c| c.target == ip("10.200.0.7")));
    assert!(!p.iter().any(|c| c.target == ip("192.0.2.1")));
    assert!(
        p.iter().all(|c| c.also.is_empty()),
        "active-backup: separate ports"
    );
    // 802.3ad: one port for the switch; the reply may come on either.
    let mut lacp = snap();
    if let Some(b) = lacp.interfaces.get_mut(&3).and_then(|i| i.bond.as_mut()) {
        b.mode = BondMode::Ieee8023ad;
    }
    let p = plan(&lacp, &vlans(), &neigh, &[]);
    assert!(p.iter().any(|c| c.member == "eth0" && c.also == ["eth1"]));
    assert!(p.iter().any(|c| c.member == "eth1" && c.also == ["eth0"]));
}

#[test]
fn at_most_a_handful_and_never_our_own_address() {
    let text: String = std::iter::once("header\n".to_owned())
        .chain(
            (1..=20).map(|i| format!("10.200.0.{i} 0x1 0x2 52:54:00:00:00:{i:02x} * bond0.200\n")),
        )
        .collect();
    let neigh = parse_neighbours(&text);
    let p = plan(&snap(), &vlans(), &neigh, &[ip("10.200.0.5")]);
    let on_vlan: Vec<_> = p
        .iter()
        .filter(|c| c.member == "eth0" && c.vlan.is_some())
        .collect();
    assert_eq!(on_vlan.len(), MAX_TARGETS_PER_NETWORK);
    assert!(
        !p.iter().any(|c| c.target == ip("10.200.0.5")),
        "our own address"
    );
}

#[test]
fn a_member_without_carrier_or_a_lone_member_is_not_planned() {
    let mut s = snap();
    s.interfaces.get_mut(&2).expect("eth1").carrier = false;
    assert!(
        plan(&s, &vlans(), &[], &[]).is_empty(),
        "one member left: nothing to compare"
    );
    assert!(parse_vlans("x\ny\nbad line\n| 5 |\n").is_empty());
}

/// Review item 13: a plain truncation after sorting by member gives
/// every slot to the first member and silently drops the backup's.
#[test]
fn the_cap_is_shared_by_every_member_and_drops_are_returned() {
    let mut all = Vec::new();
    for v in 1..=100u16 {
        for t in 1..=2u8 {
            for m in ["eth0", "eth1"] {
                all.push(PathCheck {
                    bond: "bond0".into(),
                    member: m.into(),
                    network: format!("bond0.{v}"),
                    vlan: Some(v),
                    target: Ipv4Addr::new(10, 0, t, 1),
                    also: Vec::new(),
                });
            }
        }
    }
    all.sort();
    let (kept, dropped) = cap(all.clone(), 256);
    assert_eq!(kept.len() + dropped.len(), all.len(), "nothing lost");
    assert!(kept.len() <= 256);
    let of = |m: &str| kept.iter().filter(|c| c.member == m).count();
    assert_eq!(of("eth0"), of("eth1"), "both members share the cap");
    // Every network keeps its first target before any keeps a second.
    for v in 1..=100u16 {
        assert!(
            kept.iter().any(|c| c.vlan == Some(v)),
            "VLAN {v} has a path"
        );
    }
    let (k, d) = cap(all[..10].to_vec(), 256);
    assert_eq!((k.len(), d.len()), (10, 0));
}

/// Review item 14: a bond with no planned path said nothing.
#[test]
fn a_bond_with_no_path_is_reported_with_why() {
    use preflight_model::{OvsBridge, OvsInterface, OvsPort, OvsSource};
    // No gateway, configured target or neighbour on bond0 or bond0.200.
    let mut s = snap();
    s.routes.clear();
    let p = plan(&s, &vlans(), &[], &[]);
    assert!(p.is_empty());
    let u = unplanned(&s, &vlans(), &p);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].bond, "bond0");
    assert_eq!(u[0].members, ["eth0", "eth1"]);
    assert!(
        u[0].reason.starts_with("no target on bond0, bond0.200"),
        "{}",
        u[0].reason
    );
    // IPv6 only.
    let mut v6 = s.clone();
    v6.addresses = vec![addr(3, "2001:db8::5", 64)];
    let u = unplanned(&v6, &[], &[]);
    assert!(u[0].reason.contains("IPv6 only"), "{}", u[0].reason);
    // The address on a bridge above the bond.
    let mut br = v6.clone();
    br.addresses = vec![addr(6, "10.100.0.5", 24)];
    br.interfaces.insert(6, iface(6, "br-ex", None));
    br.interfaces.get_mut(&3).expect("bond0").controller = Some(6);
    let u = unplanned(&br, &[], &plan(&br, &[], &[], &[]));
    assert!(u[0].reason.contains("on br-ex above it"), "{}", u[0].reason);
    // Planned: nothing to report.
    assert!(unplanned(&snap(), &vlans(), &plan(&snap(), &vlans(), &[], &[])).is_empty());
    // An Open vSwitch bond of kernel netdevs.
    let mut o = snap();
    let iface_of = |n: &str| OvsInterface {
        name: n.into(),
        ..OvsInterface::default()
    };
    o.ovs = OvsSource::Ok {
        path: "/run/openvswitch/db.sock".into(),
        bridges: vec![OvsBridge {
            name: "br-ex".into(),
            ports: vec![OvsPort {
                name: "bond1".into(),
                interfaces: vec![iface_of("eth3"), iface_of("eth4")],
                ..OvsPort::default()
            }],
            ..OvsBridge::default()
        }],
    };
    let u = unplanned(&o, &vlans(), &plan(&o, &vlans(), &[], &[]));
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].bond, "bond1");
    assert!(u[0].reason.contains("Open vSwitch bond"));
}

#[test]
fn path_targets_parse() {
    use crate::Target;
    assert_eq!(
        "path:10.200.0.1@eth2/200".parse::<Target>(),
        Ok(Target::Path {
            addr: "10.200.0.1".parse().expect("ip"),
            device: "eth2".into(),
            vlan: Some(200)
        })
    );
    assert_eq!(
        "path:10.200.0.1@eth2/200"
            .parse::<Target>()
            .expect("ok")
            .to_string(),
        "path 10.200.0.1 via eth2 vlan 200"
    );
    for bad in [
        "path:10.0.0.1@eth2/0",
        "path:10.0.0.1@eth2/4095",
        "path:10.0.0.1",
        "path:::1@eth0",
        "path:10.0.0.1@a/b/1",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}
