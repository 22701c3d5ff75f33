//! Rules on the member path check (`preflight_model::MemberPathStatus`):
//! BOND_PORT_NO_PATH when a member cannot reach a peer that another member
//! of the same bond reaches on the same network, so that a failover to it
//! would cut that network off; BOND_PORT_PATH_UNCHECKED when a member's own
//! path cannot be checked (a DPDK member, or the check could not be sent),
//! rather than passing it silently. A target no member reaches is not this
//! finding: the bond as a whole has no path there (REACHABILITY_FAILED,
//! where a probe is configured for it). The fail/recover hysteresis is the
//! probe tracker's (`failed`), so a finding appears and clears as the other
//! probes' do.

use std::collections::BTreeMap;

use preflight_model::{MemberPathStatus, Snapshot};

use crate::{raw, Code, Raw};

/// (bond, member, network).
type PathKey<'a> = (&'a str, &'a str, &'a str);

/// BOND_PORT_NO_PATH and BOND_PORT_PATH_UNCHECKED from the latest checks:
/// one finding per (bond, member, network), naming every target the member
/// misses there.
#[must_use]
pub fn rules(paths: &[MemberPathStatus]) -> Vec<Raw> {
    let mut out = Vec::new();
    // (bond, member, network) -> the targets it misses and who reaches them.
    let mut missing: BTreeMap<PathKey, Vec<(&MemberPathStatus, &str)>> = BTreeMap::new();
    for p in paths.iter().filter(|p| p.failed && !p.unchecked) {
        let reacher = paths.iter().find(|o| {
            o.bond == p.bond
                && o.network == p.network
                && o.target == p.target
                && o.member != p.member
                && o.up
        });
        if let Some(r) = reacher {
            missing
                .entry((&p.bond, &p.member, &p.network))
                .or_default()
                .push((p, &r.member));
        }
    }
    for ((bond, member, network), misses) in missing {
        let Some((first, reacher)) = misses.first() else {
            continue;
        };
        let more = match misses.len() {
            1 => String::new(),
            n => format!(
                " (and {} more: {})",
                n - 1,
                misses[1..]
                    .iter()
                    .map(|(p, _)| p.target.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push(raw(
            Code::BondPortNoPath,
            format!("{bond}/{member}/{network}"),
            format!(
                "{bond} member {member} cannot reach {}{more}: {}/{} ARP answered while {reacher} reaches it; a failover to {member} cuts {network} off. Check that the switch port of {member} carries {} (LLDP, the port's allowed VLANs)",
                first.describe_target(),
                first.answered,
                first.sent,
                first
                    .vlan
                    .map_or_else(|| "the untagged network".to_owned(), |v| format!("VLAN {v}")),
            ),
        ));
    }
    let mut unchecked: BTreeMap<(&str, &str), &MemberPathStatus> = BTreeMap::new();
    for p in paths.iter().filter(|p| p.unchecked) {
        unchecked.entry((&p.bond, &p.member)).or_insert(p);
    }
    for ((bond, member), p) in unchecked {
        out.push(raw(
            Code::BondPortPathUnchecked,
            format!("{bond}/{member}"),
            format!(
                "{bond} member {member}: its own path cannot be checked ({}); whether a failover to it keeps {} reachable is unproven",
                p.last_error.as_deref().unwrap_or("the check could not be sent"),
                p.network
            ),
        ));
    }
    out
}

/// BOND_PORT_PATH_UNCHECKED for every DPDK member of an Open vSwitch bond:
/// it has no kernel netdev, so no packet socket can send through it alone.
#[must_use]
pub fn dpdk_rules(snap: &Snapshot) -> Vec<Raw> {
    snap.ovs
        .bonds()
        .flat_map(|(_, port)| {
            port.interfaces
                .iter()
                .filter(|i| i.iface_type == "dpdk")
                .map(move |i| {
                    raw(
                        Code::BondPortPathUnchecked,
                        format!("{}/{}", port.name, i.name),
                        format!(
                            "OVS bond {} member {} is a DPDK port: preflight cannot send through it alone, so whether a failover to it keeps the bond's networks reachable is unproven. Check its switch port's VLANs by hand (LLDP, the switch's configuration)",
                            port.name, i.name
                        ),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_model::{OvsBridge, OvsInterface, OvsPort, OvsSource};

    fn path(member: &str, network: &str, vlan: Option<u16>, answered: u32) -> MemberPathStatus {
        let failed = answered == 0;
        MemberPathStatus {
            bond: "bond0".into(),
            member: member.into(),
            network: network.into(),
            vlan,
            target: "10.200.0.1".parse().expect("ip"),
            sent: if failed { 3 } else { 1 },
            answered,
            failed,
            up: !failed,
            consecutive_failures: if failed { 3 } else { 0 },
            source_mac: None,
            last_error: None,
            unchecked: false,
        }
    }

    #[test]
    fn a_member_missing_what_another_reaches_is_named_with_its_vlan() {
        let r = rules(&[
            path("mA", "bond0.200", Some(200), 1),
            path("mB", "bond0.200", Some(200), 0),
        ]);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].code, Code::BondPortNoPath);
        assert_eq!(r[0].subject, "bond0/mB/bond0.200");
        assert!(
            r[0].message.starts_with(
                "bond0 member mB cannot reach 10.200.0.1 on bond0.200 (VLAN 200): 0/3 ARP answered while mA reaches it; a failover to mB cuts bond0.200 off"
            ),
            "{}",
            r[0].message
        );
    }

    #[test]
    fn no_member_reaching_it_is_not_this_finding() {
        assert!(rules(&[
            path("mA", "bond0.200", Some(200), 0),
            path("mB", "bond0.200", Some(200), 0),
        ])
        .is_empty());
        assert!(rules(&[path("mA", "bond0", None, 1), path("mB", "bond0", None, 1)]).is_empty());
    }

    #[test]
    fn before_the_hysteresis_says_failed_there_is_no_finding() {
        let mut b = path("mB", "bond0", None, 0);
        b.failed = false; // one or two misses so far
        assert!(rules(&[path("mA", "bond0", None, 1), b]).is_empty());
    }

    #[test]
    fn other_bonds_networks_or_targets_do_not_count_as_reaching_it() {
        let mut other_bond = path("mA", "bond0.200", Some(200), 1);
        other_bond.bond = "bond1".into();
        let other_net = path("mA", "bond0", None, 1);
        let mut other_target = path("mA", "bond0.200", Some(200), 1);
        other_target.target = "10.200.0.2".parse().expect("ip");
        let b = path("mB", "bond0.200", Some(200), 0);
        assert!(rules(&[other_bond, other_net, other_target, b]).is_empty());
    }

    #[test]
    fn several_targets_make_one_finding_per_member_and_network() {
        let mut a2 = path("mA", "bond0", None, 1);
        a2.target = "10.100.0.2".parse().expect("ip");
        let mut b2 = path("mB", "bond0", None, 0);
        b2.target = "10.100.0.2".parse().expect("ip");
        let r = rules(&[
            path("mA", "bond0", None, 1),
            path("mB", "bond0", None, 0),
            a2,
            b2,
        ]);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].message.contains("(and 1 more: 10.100.0.2)"),
            "{}",
            r[0].message
        );
        assert!(
            r[0].message.contains("the untagged network"),
            "{}",
            r[0].message
        );
    }

    #[test]
    fn an_unchecked_member_is_a_warning_not_a_pass() {
        let mut u = path("mB", "bond0", None, 0);
        u.unchecked = true;
        u.failed = false;
        u.last_error = Some("mB: cannot open a packet socket (needs CAP_NET_RAW)".into());
        let r = rules(&[path("mA", "bond0", None, 1), u]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, Code::BondPortPathUnchecked);
        assert!(r[0].message.contains("CAP_NET_RAW"), "{}", r[0].message);
    }

    #[test]
    fn the_evaluator_blocks_on_it_and_clears_it() {
        use std::time::{Instant, SystemTime};
        let mut ev = crate::Evaluator::new(crate::PolicyConfig::default());
        ev.set_member_paths(vec![
            path("mA", "bond0.200", Some(200), 1),
            path("mB", "bond0.200", Some(200), 0),
        ]);
        let f = ev.evaluate(&Snapshot::default(), Instant::now(), SystemTime::now());
        assert_eq!(
            (f[0].code.as_str(), f[0].severity),
            ("BOND_PORT_NO_PATH", preflight_model::Severity::Critical)
        );
        let mut u = path("mB", "bond0", None, 0);
        u.unchecked = true;
        ev.set_member_paths(vec![path("mA", "bond0.200", Some(200), 1), u]);
        let f = ev.evaluate(&Snapshot::default(), Instant::now(), SystemTime::now());
        assert_eq!(
            f.iter()
                .map(|f| (f.code.as_str(), f.severity))
                .collect::<Vec<_>>(),
            [(
                "BOND_PORT_PATH_UNCHECKED",
                preflight_model::Severity::Warning
            )]
        );
        ev.set_member_paths(Vec::new());
        assert!(ev
            .evaluate(&Snapshot::default(), Instant::now(), SystemTime::now())
            .is_empty());
    }

    #[test]
    fn dpdk_members_cannot_be_checked_and_say_so() {
        let mut s = Snapshot::default();
        let member = |name: &str, t: &str| OvsInterface {
            name: name.into(),
            iface_type: t.into(),
            ..OvsInterface::default()
        };
        s.ovs = OvsSource::Ok {
            path: "db.sock".into(),
            bridges: vec![OvsBridge {
                name: "br-link".into(),
                datapath_type: "netdev".into(),
                ports: vec![OvsPort {
                    name: "dpdkbond0".into(),
                    interfaces: vec![member("dpdk0", "dpdk"), member("dpdk1", "dpdk")],
                    ..OvsPort::default()
                }],
                parse_errors: Vec::new(),
            }],
        };
        let r = dpdk_rules(&s);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, Code::BondPortPathUnchecked);
        assert_eq!(r[0].subject, "dpdkbond0/dpdk0");
    }
}
