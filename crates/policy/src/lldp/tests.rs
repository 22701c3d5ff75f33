use std::time::SystemTime;

use preflight_model::lldp::{LldpState, LldpVlan, VlanLink};
use preflight_model::{
    Bond, BondMode, BondPort, Interface, LldpNeighbor, MiiStatus, OperState, PortState, Snapshot,
};

use super::*;

fn iface(index: u32, name: &str, mtu: u32) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        oper_state: OperState::Up,
        carrier: true,
        mtu,
        ..Interface::default()
    }
}

fn member(index: u32, name: &str, state: PortState) -> Interface {
    Interface {
        controller: Some(10),
        bond_port: Some(BondPort {
            mii_status: MiiStatus::Up,
            state,
            ..BondPort::default()
        }),
        ..iface(index, name, 1500)
    }
}

fn node(mode: BondMode) -> Snapshot {
    let bond = Interface {
        kind: Some("bond".into()),
        bond: Some(Bond {
            mode,
            ..Bond::default()
        }),
        ..iface(10, "bond0", 1500)
    };
    Snapshot {
        interfaces: [
            member(2, "mA", PortState::Active),
            member(3, "mB", PortState::Backup),
            bond,
        ]
        .into_iter()
        .map(|i| (i.index, i))
        .collect(),
        ..Snapshot::default()
    }
}

fn neighbor(member: &str, chassis: &str, name: &str, port: &str) -> LldpNeighbor {
    LldpNeighbor {
        member: member.into(),
        chassis_id: chassis.into(),
        chassis_id_subtype: "mac".into(),
        port_id: port.into(),
        port_id_subtype: "ifname".into(),
        ttl_s: 120,
        system_name: Some(name.into()),
        port_descr: None,
        mgmt_address: None,
        pvid: None,
        vlans: Vec::new(),
        vlans_cut: false,
        max_frame_size: None,
        aggregation: None,
        since: SystemTime::UNIX_EPOCH,
    }
}

fn two_switches() -> Vec<LldpNeighbor> {
    vec![
        neighbor("mA", "52:54:00:00:00:0a", "switch-A", "swp1"),
        neighbor("mB", "52:54:00:00:00:0b", "switch-B", "swp1"),
    ]
}

fn with(mut s: Snapshot, neighbors: Vec<LldpNeighbor>) -> Snapshot {
    s.lldp = LldpState {
        listening: true,
        complete: true,
        neighbors,
        vlans: vec![
            VlanLink {
                name: "bond0.100".into(),
                id: 100,
                parent: "bond0".into(),
            },
            VlanLink {
                name: "bond0.200".into(),
                id: 200,
                parent: "bond0".into(),
            },
        ],
        errors: std::collections::BTreeMap::new(),
    };
    s
}

fn found(s: &Snapshot) -> Vec<Raw> {
    let mut out = Vec::new();
    rules(s, &mut out);
    out
}

fn codes(s: &Snapshot) -> Vec<(&'static str, String)> {
    found(s)
        .into_iter()
        .map(|r| (r.code.as_str(), r.subject))
        .collect()
}

#[test]
fn an_active_backup_bond_on_one_switch_is_single_switch_naming_it() {
    let one = vec![
        neighbor("mA", "52:54:00:00:00:0a", "switch-A", "swp1"),
        neighbor("mB", "52:54:00:00:00:0a", "switch-A", "swp2"),
    ];
    let s = with(node(BondMode::ActiveBackup), one.clone());
    let r = found(&s);
    assert_eq!(codes(&s), [("BOND_SINGLE_SWITCH", "bond0".to_string())]);
    assert!(r[0].message.contains("switch-A"), "{}", r[0].message);
    assert!(
        r[0].message.contains("mA on port swp1, mB on port swp2"),
        "{}",
        r[0].message
    );
    for mode in [BondMode::BalanceAlb, BondMode::BalanceTlb] {
        assert_eq!(codes(&with(node(mode), one.clone())).len(), 1, "{mode:?}");
    }
    // Two switches: redundant.
    assert!(codes(&with(node(BondMode::ActiveBackup), two_switches())).is_empty());
    // 802.3ad: one partner system is its design.
    assert!(codes(&with(node(BondMode::Ieee8023ad), one.clone())).is_empty());
    // A member unheard: nothing to conclude.
    assert!(codes(&with(node(BondMode::ActiveBackup), one[..1].to_vec())).is_empty());
    // No listener: no LLDP rule at all.
    let mut quiet = with(node(BondMode::ActiveBackup), one);
    quiet.lldp.listening = false;
    assert!(codes(&quiet).is_empty());
}

#[test]
fn a_switch_frame_size_below_mtu_plus_header_and_fcs_exceeds_the_switch() {
    let frame = |mfs: u16, vlans: bool, mtu: u32| {
        let mut n = two_switches();
        n[1].max_frame_size = Some(mfs);
        let mut s = with(node(BondMode::ActiveBackup), n);
        if !vlans {
            s.lldp.vlans.clear();
        }
        for i in s.interfaces.values_mut() {
            i.mtu = mtu;
        }
        codes(&s)
    };
    let exceeds = vec![("MTU_EXCEEDS_SWITCH", "bond0/mB".to_string())];
    // MTU + 18, tagged or not (see FRAME_OVERHEAD).
    assert!(frame(1518, false, 1500).is_empty());
    assert!(frame(1518, true, 1500).is_empty());
    assert_eq!(frame(1517, false, 1500), exceeds);
    assert_eq!(frame(1517, true, 1500), exceeds);
    // Jumbo node, standard switch port.
    assert!(frame(9216, true, 9000).is_empty());
    assert_eq!(frame(1522, true, 9000), exceeds);
    let mut n = two_switches();
    n[1].max_frame_size = Some(1522);
    let mut s = with(node(BondMode::ActiveBackup), n);
    for i in s.interfaces.values_mut() {
        i.mtu = 9000;
    }
    let msg = &found(&s)[0].message;
    assert!(
        msg.contains("MTU 9000")
            && msg.contains("9018")
            && msg.contains("at most 1522")
            && msg.contains("switch-B port swp1"),
        "{msg}"
    );
}

#[test]
fn a_vlan_the_switch_port_does_not_advertise_is_missing_only_when_vlans_are_advertised() {
    let vlan = |id: u16| LldpVlan {
        id,
        name: format!("v{id}"),
    };
    let mut n = two_switches();
    n[0].vlans = vec![vlan(100), vlan(200)];
    n[1].vlans = vec![vlan(100)];
    let s = with(node(BondMode::ActiveBackup), n.clone());
    assert_eq!(codes(&s), [("SWITCH_VLAN_MISSING", "bond0/mB".to_string())]);
    let msg = &found(&s)[0].message;
    assert!(
        msg.contains("VLAN 200 (bond0.200)")
            && msg.contains("switch-B port swp1")
            && msg.contains("advertises VLANs 100"),
        "{msg}"
    );
    // The port's PVID is untagged: it does not carry tagged bond0.200
    // (review item 2), even when it also names the VLAN.
    let mut pvid = n.clone();
    pvid[1].pvid = Some(200);
    let s = with(node(BondMode::ActiveBackup), pvid.clone());
    assert_eq!(codes(&s), [("SWITCH_VLAN_MISSING", "bond0/mB".to_string())]);
    assert!(
        found(&s)[0].message.contains("untagged (its PVID)"),
        "{}",
        found(&s)[0].message
    );
    pvid[1].vlans.push(vlan(200));
    let s = with(node(BondMode::ActiveBackup), pvid);
    assert_eq!(codes(&s), [("SWITCH_VLAN_MISSING", "bond0/mB".to_string())]);
    // A VLAN list cut at MAX_VLANS proves no VLAN absent (review item 7).
    let mut cut = n.clone();
    cut[1].vlans_cut = true;
    assert!(codes(&with(node(BondMode::ActiveBackup), cut)).is_empty());
    // A switch that advertises no VLANs says nothing about them.
    let mut silent = n;
    silent[1].vlans.clear();
    assert!(codes(&with(node(BondMode::ActiveBackup), silent)).is_empty());
}

#[test]
fn a_member_on_another_switch_or_port_than_the_baseline_changed() {
    let baseline = two_switches();
    let same = with(node(BondMode::ActiveBackup), two_switches());
    assert!(changed(&same, &baseline).is_empty());
    let mut moved = two_switches();
    moved[1] = neighbor("mB", "52:54:00:00:00:0a", "switch-A", "swp7");
    let s = with(node(BondMode::ActiveBackup), moved);
    let r = changed(&s, &baseline);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code.as_str(), "LLDP_NEIGHBOR_CHANGED");
    assert_eq!(r[0].subject, "bond0/mB");
    assert!(
        r[0].message.contains("switch-A port swp7")
            && r[0].message.contains("baseline had switch-B port swp1"),
        "{}",
        r[0].message
    );
    // Not heard: a change only once every member had its interval.
    let mut unheard = with(node(BondMode::ActiveBackup), two_switches()[..1].to_vec());
    unheard.lldp.complete = false;
    assert!(changed(&unheard, &baseline).is_empty());
    unheard.lldp.complete = true;
    let r = changed(&unheard, &baseline);
    assert_eq!(r.len(), 1);
    assert!(r[0].message.contains("hears no LLDP"), "{}", r[0].message);
    // Findings carry the configured severity.
    let f = findings(r, &PolicyConfig::default(), SystemTime::UNIX_EPOCH);
    assert_eq!(f[0].severity, preflight_model::Severity::Critical);
}

#[test]
fn switch_texts_reach_messages_bounded() {
    let mut one = vec![
        neighbor("mA", "c", &"x".repeat(255), "swp1"),
        neighbor("mB", "c", &"x".repeat(255), "swp2"),
    ];
    one[0].port_id = "p".repeat(255);
    let r = found(&with(node(BondMode::ActiveBackup), one));
    assert!(r[0].message.len() <= crate::MAX_MESSAGE_BYTES);
}

/// `preflight baseline compare` says why the policy changed a severity,
/// as the monitor's findings do.
#[test]
fn baseline_compare_findings_carry_the_policy_reason() {
    let mut moved = two_switches();
    moved[1] = neighbor("mB", "52:54:00:00:00:0a", "switch-A", "swp7");
    let r = changed(&with(node(BondMode::ActiveBackup), moved), &two_switches());
    let mut config = PolicyConfig::default();
    config.severity.insert(
        Code::LldpNeighborChanged,
        Some(preflight_model::Severity::Warning),
    );
    config
        .reasons
        .insert(Code::LldpNeighborChanged, "recabling week".into());
    let f = findings(r, &config, SystemTime::UNIX_EPOCH);
    assert_eq!(f[0].severity, preflight_model::Severity::Warning);
    assert!(f[0].message.ends_with("recabling week"), "{}", f[0].message);
}

/// Review item 6: a switch and a NIC's firmware LLDP agent on one member.
fn nic_agent(member: &str) -> LldpNeighbor {
    neighbor(member, "3c:fd:fe:00:00:01", "nic-agent", "port0")
}

#[test]
fn two_senders_on_one_member_judge_the_same_in_either_order() {
    // mA hears switch-A and its NIC's agent, mB switch-A: one switch, both orders.
    let a = neighbor("mA", "52:54:00:00:00:0a", "switch-A", "swp1");
    let b = neighbor("mB", "52:54:00:00:00:0a", "switch-A", "swp2");
    for order in [
        vec![a.clone(), nic_agent("mA"), b.clone()],
        vec![nic_agent("mA"), a.clone(), b.clone()],
    ] {
        let s = with(node(BondMode::ActiveBackup), order);
        assert_eq!(codes(&s), [("BOND_SINGLE_SWITCH", "bond0".to_string())]);
    }
    // Two switches, an agent beside one: redundant, in either order.
    let two = two_switches();
    for order in [
        vec![two[0].clone(), nic_agent("mA"), two[1].clone()],
        vec![nic_agent("mA"), two[0].clone(), two[1].clone()],
    ] {
        assert!(codes(&with(node(BondMode::ActiveBackup), order)).is_empty());
    }
    // Baseline had the switch; the agent appeared beside it: no change.
    let s = with(
        node(BondMode::ActiveBackup),
        vec![nic_agent("mA"), two[0].clone(), two[1].clone()],
    );
    assert!(changed(&s, &two).is_empty());
    // The switch gone, the agent left: changed, once.
    let s = with(
        node(BondMode::ActiveBackup),
        vec![nic_agent("mA"), two[1].clone()],
    );
    let r = changed(&s, &two);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].subject, "bond0/mA");
    // Any device on the link that drops the VLAN or the frame is judged,
    // whichever came first; one finding per member.
    let mut small = nic_agent("mA");
    small.max_frame_size = Some(1400);
    small.vlans = vec![LldpVlan {
        id: 100,
        name: "a".into(),
    }];
    for order in [
        vec![two[0].clone(), small.clone(), two[1].clone()],
        vec![small.clone(), two[0].clone(), two[1].clone()],
    ] {
        let c = codes(&with(node(BondMode::ActiveBackup), order));
        assert_eq!(
            c,
            [
                ("MTU_EXCEEDS_SWITCH", "bond0/mA".to_string()),
                ("SWITCH_VLAN_MISSING", "bond0/mA".to_string())
            ]
        );
    }
}

#[test]
fn a_member_that_cannot_be_listened_on_is_lldp_unavailable() {
    let mut s = with(node(BondMode::ActiveBackup), two_switches()[..1].to_vec());
    s.lldp.errors.insert(
        "mB".into(),
        "mB: cannot open a packet socket: Operation not permitted (needs CAP_NET_RAW)".into(),
    );
    let r = found(&s);
    assert_eq!(codes(&s), [("LLDP_UNAVAILABLE", "bond0/mB".to_string())]);
    assert!(r[0].message.contains("CAP_NET_RAW"), "{}", r[0].message);
    let f = findings(r, &PolicyConfig::default(), SystemTime::UNIX_EPOCH);
    assert_eq!(f[0].severity, preflight_model::Severity::Warning);
}
