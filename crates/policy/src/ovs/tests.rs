//! OVS bond rules on plain OVSDB values. The ovsdb crate's tests feed the
//! same rules with state decoded from a real ovsdb-server.

use std::time::{Duration, Instant, SystemTime};

use preflight_model::{
    Interface, OperState, OvsBridge, OvsInterface, OvsPort, OvsSource, Snapshot,
};

use crate::{rules, Evaluator, FlapCounts, PolicyConfig};

fn member(name: &str, mac: &str) -> OvsInterface {
    OvsInterface {
        name: name.into(),
        admin_state: Some("up".into()),
        link_state: Some("up".into()),
        link_resets: Some(1),
        mac_in_use: Some(mac.into()),
        ifindex: Some(0),
        link_speed: Some(10_000_000_000),
        duplex: Some("full".into()),
        ..OvsInterface::default()
    }
}

fn bond(members: Vec<OvsInterface>) -> OvsPort {
    OvsPort {
        name: "bond1".into(),
        bond_mode: Some("active-backup".into()),
        bond_active_slave: Some("02:00:00:00:00:01".into()),
        interfaces: members,
        ..OvsPort::default()
    }
}

fn snap(port: OvsPort) -> Snapshot {
    Snapshot {
        ovs: OvsSource::Ok {
            path: "/run/openvswitch/db.sock".into(),
            bridges: vec![OvsBridge {
                name: "br-ex".into(),
                datapath_type: "netdev".into(),
                ports: vec![port],
                ..OvsBridge::default()
            }],
        },
        ..Snapshot::default()
    }
}

fn healthy() -> OvsPort {
    bond(vec![
        member("eth1", "02:00:00:00:00:01"),
        member("eth2", "02:00:00:00:00:02"),
    ])
}

fn codes(s: &Snapshot) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rules(s, &PolicyConfig::default(), &FlapCounts::default())
        .into_iter()
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    v.sort();
    v
}

fn pair(code: &str, subject: &str) -> (String, String) {
    (code.to_owned(), subject.to_owned())
}

#[test]
fn healthy_active_backup_bond_is_clean_and_listed_as_ovs() {
    let s = snap(healthy());
    assert!(codes(&s).is_empty(), "{:?}", codes(&s));
    let b = &s.bonds()[0];
    assert_eq!((b.name.as_str(), b.kind.as_str()), ("bond1", "ovs"));
    assert_eq!(b.bridge.as_deref(), Some("br-ex"));
    assert_eq!(b.active_port.as_deref(), Some("eth1"));
    let json = serde_json::to_value(b).expect("serializes");
    assert_eq!(json["type"], "ovs");
}

#[test]
fn member_link_down_is_bond_port_down_and_degraded() {
    let mut p = healthy();
    p.interfaces[1].link_state = Some("down".into());
    let s = snap(p);
    assert_eq!(
        codes(&s),
        [
            pair("BOND_DEGRADED", "bond1"),
            pair("BOND_PORT_DOWN", "bond1/eth2")
        ]
    );
    let r = rules(&s, &PolicyConfig::default(), &FlapCounts::default());
    let msg = &r
        .iter()
        .find(|r| r.subject == "bond1/eth2")
        .expect("finding")
        .message;
    assert!(msg.contains("link_state down"), "{msg}");
    assert!(msg.contains("ovs-appctl bond/show bond1"), "{msg}");
}

#[test]
fn admin_down_and_errored_members_are_down() {
    let mut p = healthy();
    p.interfaces[0].admin_state = Some("down".into());
    p.interfaces[1].error = Some("could not open network device eth9 (No such device)".into());
    p.interfaces[1].link_state = None;
    let s = snap(p);
    assert_eq!(
        codes(&s),
        [
            pair("BOND_DEGRADED", "bond1"),
            pair("BOND_DOWN", "bond1"),
            pair("BOND_PORT_DOWN", "bond1/eth1"),
            pair("BOND_PORT_DOWN", "bond1/eth2"),
        ]
    );
    let r = rules(&s, &PolicyConfig::default(), &FlapCounts::default());
    assert!(r.iter().any(|r| r.message.contains("No such device")));
    assert!(r.iter().any(|r| r.message.contains("admin_state down")));
}

#[test]
fn active_backup_without_matching_active_member_has_no_active_port() {
    let mut p = healthy();
    p.bond_active_slave = Some("02:00:00:00:00:99".into());
    assert_eq!(
        codes(&snap(p.clone())),
        [pair("BOND_NO_ACTIVE_PORT", "bond1")]
    );
    p.bond_active_slave = None;
    assert_eq!(
        codes(&snap(p.clone())),
        [pair("BOND_NO_ACTIVE_PORT", "bond1")]
    );
    // balance-slb has no single active member.
    p.bond_mode = Some("balance-slb".into());
    assert!(codes(&snap(p)).is_empty());
}

#[test]
fn lacp_without_current_partner_is_not_negotiated() {
    let mut p = healthy();
    p.bond_mode = Some("balance-tcp".into());
    p.lacp = Some("active".into());
    p.interfaces[0].lacp_current = Some(false);
    p.interfaces[1].lacp_current = None;
    assert_eq!(
        codes(&snap(p.clone())),
        [
            pair("LACP_NOT_NEGOTIATED", "bond1/eth1"),
            pair("LACP_NOT_NEGOTIATED", "bond1/eth2"),
        ]
    );
    for m in &mut p.interfaces {
        m.lacp_current = Some(true);
    }
    assert!(codes(&snap(p.clone())).is_empty());
    // lacp=off: lacp_current is not looked at.
    p.lacp = Some("off".into());
    p.interfaces[0].lacp_current = Some(false);
    assert!(codes(&snap(p)).is_empty());
}

#[test]
fn members_at_different_speeds_mismatch() {
    let mut p = healthy();
    p.interfaces[1].link_speed = Some(1_000_000_000);
    assert_eq!(codes(&snap(p)), [pair("PORT_SPEED_MISMATCH", "bond1")]);
}

#[test]
fn a_row_that_could_not_be_read_is_state_unreadable() {
    let mut p = healthy();
    p.interfaces[0].parse_errors = vec!["link_state: expected a string".into()];
    assert_eq!(codes(&snap(p)), [pair("STATE_UNREADABLE", "bond1")]);
}

#[test]
fn a_bridge_whose_ports_could_not_be_read_is_state_unreadable() {
    let mut s = snap(healthy());
    if let OvsSource::Ok { bridges, .. } = &mut s.ovs {
        bridges[0].parse_errors = vec!["ports: no Port row 5f2e...".into()];
    }
    assert_eq!(codes(&s), [pair("STATE_UNREADABLE", "br-ex")]);
}

#[test]
fn a_single_member_port_is_not_a_bond() {
    let p = OvsPort {
        name: "eth3".into(),
        interfaces: vec![member("eth3", "02:00:00:00:00:03")],
        ..OvsPort::default()
    };
    assert!(codes(&snap(p)).is_empty());
}

fn kernel_nic(index: u32, name: &str, kind: Option<&str>, carrier: bool) -> Interface {
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

#[test]
fn a_dead_ovs_member_is_never_a_stray_nic_without_carrier() {
    let mut p = healthy();
    p.interfaces[1].link_state = Some("down".into());
    let mut s = snap(p);
    s.interfaces.insert(2, kernel_nic(2, "eth1", None, true));
    s.interfaces.insert(3, kernel_nic(3, "eth2", None, false));
    let c = codes(&s);
    assert!(
        !c.iter().any(|(code, _)| code == "LINK_NO_CARRIER"),
        "{c:?}"
    );
    assert!(c.contains(&pair("BOND_PORT_DOWN", "bond1/eth2")));
}

#[test]
fn ovs_in_the_kernel_with_ovsdb_unreadable_is_ovs_state_unreadable() {
    let mut s = Snapshot::default();
    // As a kernel with the OVS datapath module shows it: admin down.
    let mut dp = kernel_nic(5, "ovs-system", Some("openvswitch"), false);
    dp.admin_up = false;
    s.interfaces.insert(5, dp);
    for src in [
        OvsSource::Unreadable {
            path: "/run/openvswitch/db.sock".into(),
            reason: "connection refused".into(),
        },
        OvsSource::Absent {
            paths: vec!["/run/openvswitch/db.sock".into()],
        },
        OvsSource::Off,
    ] {
        s.ovs = src;
        assert_eq!(codes(&s), [pair("OVS_STATE_UNREADABLE", "ovsdb")]);
    }
    // Read fine: nothing to say.
    s.ovs = OvsSource::Ok {
        path: "/run/openvswitch/db.sock".into(),
        bridges: Vec::new(),
    };
    assert!(codes(&s).is_empty());
    // No OVS anywhere and no OVSDB: nothing is expected, nothing is wrong.
    let plain = Snapshot {
        ovs: OvsSource::Absent {
            paths: vec!["/run/openvswitch/db.sock".into()],
        },
        ..Snapshot::default()
    };
    assert!(codes(&plain).is_empty());
}

#[test]
fn ovs_state_unreadable_cannot_be_lowered() {
    assert!(crate::Code::OvsStateUnreadable.fail_closed());
}

#[test]
fn link_resets_within_the_window_are_link_flapping() {
    let mut ev = Evaluator::new(PolicyConfig::default());
    let t0 = Instant::now();
    let w = SystemTime::now();
    let with_resets = |n: u64| {
        let mut p = healthy();
        p.interfaces[1].link_resets = Some(n);
        snap(p)
    };
    assert!(ev.evaluate(&with_resets(1), t0, w).is_empty());
    let max = u64::from(PolicyConfig::default().flap_max_changes);
    let f = ev.evaluate(&with_resets(1 + max), t0 + Duration::from_secs(5), w);
    assert_eq!(
        f.iter()
            .map(|f| (f.code.as_str(), f.subject.as_str()))
            .collect::<Vec<_>>(),
        [("LINK_FLAPPING", "bond1/eth2")]
    );
    assert!(ev.needs_tick());
    let later = t0 + PolicyConfig::default().flap_window + Duration::from_secs(10);
    assert!(ev.evaluate(&with_resets(1 + max), later, w).is_empty());
}

#[test]
fn a_kernel_member_without_carrier_is_down_before_ovsdb_says_so() {
    let mut s = snap(healthy());
    let mut eth2 = kernel_nic(3, "eth2", None, false);
    eth2.admin_up = true;
    s.interfaces.insert(3, eth2);
    s.interfaces.insert(2, kernel_nic(2, "eth1", None, true));
    let c = codes(&s);
    assert_eq!(
        c,
        [
            pair("BOND_DEGRADED", "bond1"),
            pair("BOND_PORT_DOWN", "bond1/eth2")
        ]
    );
    let r = rules(&s, &PolicyConfig::default(), &FlapCounts::default());
    assert!(r
        .iter()
        .any(|r| r.message.contains("OVS has not noticed yet")));
    // A DPDK member is not a kernel netdev: a same-named kernel link is not it.
    let mut p = healthy();
    p.interfaces[1].iface_type = "dpdk".into();
    let mut s = snap(p);
    s.interfaces.insert(3, kernel_nic(3, "eth2", None, false));
    assert!(codes(&s).is_empty());
}

/// The audit's oversized OVSDB `error` column (60 MB there, 2 MB here):
/// the finding and the bond view sent in every report quote an excerpt and
/// its length, so the report stays far below the aggregator's limit and the
/// real cause (the member is down) is what the gate shows.
#[test]
fn an_oversized_ovsdb_error_is_quoted_as_an_excerpt() {
    let mut p = healthy();
    p.interfaces[1].error = Some("e".repeat(2 * 1024 * 1024));
    let s = snap(p);
    let raws = rules(&s, &PolicyConfig::default(), &FlapCounts::default());
    let down = raws
        .iter()
        .find(|r| r.code.as_str() == "BOND_PORT_DOWN")
        .expect("the member is down");
    assert!(
        down.message.len() < 1000 && down.message.contains("(2097152 bytes)"),
        "{} bytes",
        down.message.len()
    );
    let view = &s.bonds()[0];
    let err = view.ports[1].error.as_deref().expect("error kept");
    assert!(
        err.len() < 200 && err.contains("(2097152 bytes)"),
        "{} bytes",
        err.len()
    );
}

/// However many rows OVSDB could not read, a finding's message stays
/// short enough for a report: the backstop on every message.
#[test]
fn a_message_listing_many_errors_is_bounded() {
    let mut p = healthy();
    p.interfaces[0].parse_errors = (0..100_000)
        .map(|i| format!("column{i}: expected a string"))
        .collect();
    let raws = rules(&snap(p), &PolicyConfig::default(), &FlapCounts::default());
    let r = raws.first().expect("STATE_UNREADABLE");
    assert!(r.message.len() <= 4096, "{} bytes", r.message.len());
    assert!(
        r.message.starts_with("OVS bond bond1 in br-ex"),
        "{}",
        &r.message[..80]
    );
}
