//! Table-driven tests of every rule on plain snapshots. The netlink crate's
//! tests run the same rules on snapshots decoded from real-kernel bytes.

use std::time::{Duration, Instant, SystemTime};

use preflight_model::{
    lacp, AdInfo, Bond, BondMode, BondPort, Interface, MiiStatus, OperState, PortState, Snapshot,
};

use super::*;

const HEALTHY_LACP: u8 = lacp::ACTIVITY
    | lacp::TIMEOUT
    | lacp::AGGREGATION
    | lacp::SYNCHRONIZATION
    | lacp::COLLECTING
    | lacp::DISTRIBUTING;

fn nic(index: u32, name: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: true,
        oper_state: OperState::Up,
        mtu: 1500,
        speed_mbps: Some(10_000),
        duplex: Some("full".into()),
        ..Interface::default()
    }
}

fn port(index: u32, name: &str, bond: u32, mii: MiiStatus, state: PortState) -> Interface {
    Interface {
        controller: Some(bond),
        carrier: mii == MiiStatus::Up,
        bond_port: Some(BondPort {
            mii_status: mii,
            state,
            link_failure_count: u32::from(mii != MiiStatus::Up),
            ad_aggregator_id: Some(1),
            ad_actor_state: Some(HEALTHY_LACP),
            ad_partner_state: Some(HEALTHY_LACP),
            ..BondPort::default()
        }),
        ..nic(index, name)
    }
}

fn bond(index: u32, name: &str, mode: BondMode, active: Option<u32>) -> Interface {
    Interface {
        kind: Some("bond".into()),
        speed_mbps: None,
        duplex: None,
        bond: Some(Bond {
            mode,
            miimon_ms: 100,
            active_port: active,
            ad_info: (mode == BondMode::Ieee8023ad).then(|| AdInfo {
                aggregator_id: 1,
                num_ports: 2,
                actor_key: 15,
                partner_key: 15,
                partner_mac: "52:54:00:aa:bb:cc".into(),
            }),
            ..Bond::default()
        }),
        ..nic(index, name)
    }
}

fn snapshot(ifaces: Vec<Interface>) -> Snapshot {
    Snapshot {
        interfaces: ifaces.into_iter().map(|i| (i.index, i)).collect(),
        ..Snapshot::default()
    }
}

/// The healthy baseline: active-backup bond0 over eth0 (active) and eth1.
fn healthy_ab() -> Snapshot {
    snapshot(vec![
        nic(1, "lo"),
        port(2, "eth0", 10, MiiStatus::Up, PortState::Active),
        port(3, "eth1", 10, MiiStatus::Up, PortState::Backup),
        bond(10, "bond0", BondMode::ActiveBackup, Some(2)),
    ])
}

fn healthy_lacp() -> Snapshot {
    snapshot(vec![
        port(2, "eth0", 10, MiiStatus::Up, PortState::Active),
        port(3, "eth1", 10, MiiStatus::Up, PortState::Active),
        bond(10, "bond0", BondMode::Ieee8023ad, None),
    ])
}

fn codes(snap: &Snapshot) -> Vec<(String, String)> {
    codes_with(snap, &PolicyConfig::default())
}

fn codes_with(snap: &Snapshot, cfg: &PolicyConfig) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rules(snap, cfg, &FlapCounts::default())
        .into_iter()
        .map(|r| (r.code.as_str().to_owned(), r.subject))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(c, s)| ((*c).into(), (*s).into()))
        .collect();
    v.sort();
    v
}

fn edit(mut s: Snapshot, idx: u32, f: impl FnOnce(&mut Interface)) -> Snapshot {
    f(s.interfaces.get_mut(&idx).expect("interface in fixture"));
    s
}

#[test]
fn every_rule_table() {
    type Case<'a> = (&'a str, Snapshot, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("healthy active-backup", healthy_ab(), vec![]),
        ("healthy 802.3ad", healthy_lacp(), vec![]),
        (
            // The seed failure: one port MII down, the bond up and passing traffic.
            "seed: backup port down while bond is up",
            edit(healthy_ab(), 3, |p| {
                p.carrier = false;
                p.bond_port.as_mut().expect("port").mii_status = MiiStatus::Down;
            }),
            vec![("BOND_PORT_DOWN", "bond0/eth1"), ("BOND_DEGRADED", "bond0")],
        ),
        (
            "port going down counts as down",
            edit(healthy_ab(), 3, |p| {
                p.bond_port.as_mut().expect("port").mii_status = MiiStatus::GoingDown
            }),
            vec![("BOND_PORT_DOWN", "bond0/eth1"), ("BOND_DEGRADED", "bond0")],
        ),
        (
            "both ports down: bond down",
            {
                let s = edit(healthy_ab(), 2, |p| {
                    p.bond_port.as_mut().expect("port").mii_status = MiiStatus::Down
                });
                let s = edit(s, 3, |p| {
                    p.bond_port.as_mut().expect("port").mii_status = MiiStatus::Down
                });
                edit(s, 10, |b| {
                    b.carrier = false;
                    b.oper_state = OperState::Down;
                    b.bond.as_mut().expect("bond").active_port = None;
                })
            },
            vec![
                ("BOND_DOWN", "bond0"),
                ("BOND_PORT_DOWN", "bond0/eth0"),
                ("BOND_PORT_DOWN", "bond0/eth1"),
                ("BOND_DEGRADED", "bond0"),
            ],
        ),
        (
            "bond admin down",
            edit(healthy_ab(), 10, |b| {
                b.admin_up = false;
                b.carrier = false;
                b.oper_state = OperState::Down;
            }),
            vec![("BOND_DOWN", "bond0")],
        ),
        (
            "active-backup without active port",
            edit(healthy_ab(), 10, |b| {
                b.bond.as_mut().expect("bond").active_port = None
            }),
            vec![("BOND_NO_ACTIVE_PORT", "bond0")],
        ),
        (
            "active port that is not one of the ports",
            edit(healthy_ab(), 10, |b| {
                b.bond.as_mut().expect("bond").active_port = Some(99)
            }),
            vec![("BOND_NO_ACTIVE_PORT", "bond0")],
        ),
        (
            "single-port bond is degraded",
            {
                let mut s = healthy_ab();
                s.interfaces.remove(&3);
                s
            },
            vec![("BOND_DEGRADED", "bond0")],
        ),
        (
            "bond without ports is degraded",
            snapshot(vec![Interface {
                carrier: false,
                oper_state: OperState::Down,
                ..bond(10, "bond0", BondMode::BalanceXor, None)
            }]),
            vec![("BOND_DEGRADED", "bond0"), ("BOND_DOWN", "bond0")],
        ),
        (
            "no link monitor",
            edit(healthy_ab(), 10, |b| {
                let bond = b.bond.as_mut().expect("bond");
                bond.miimon_ms = 0;
                bond.arp_interval_ms = 0;
            }),
            vec![("BOND_NO_LINK_MONITOR", "bond0")],
        ),
        (
            "arp monitor alone is a link monitor",
            edit(healthy_ab(), 10, |b| {
                let bond = b.bond.as_mut().expect("bond");
                bond.miimon_ms = 0;
                bond.arp_interval_ms = 1000;
            }),
            vec![],
        ),
        (
            // What qemu's user network gives: no partner; port 2 in its own aggregator.
            "802.3ad without partner",
            {
                let s = edit(healthy_lacp(), 10, |b| {
                    b.bond
                        .as_mut()
                        .expect("bond")
                        .ad_info
                        .as_mut()
                        .expect("ad")
                        .partner_mac = "00:00:00:00:00:00".into();
                });
                let s = edit(s, 2, |p| {
                    p.bond_port.as_mut().expect("port").ad_actor_state = Some(
                        lacp::ACTIVITY
                            | lacp::AGGREGATION
                            | lacp::DEFAULTED
                            | lacp::SYNCHRONIZATION
                            | lacp::COLLECTING
                            | lacp::DISTRIBUTING,
                    );
                });
                edit(s, 3, |p| {
                    let bp = p.bond_port.as_mut().expect("port");
                    bp.ad_actor_state = Some(lacp::ACTIVITY | lacp::AGGREGATION | lacp::DEFAULTED);
                    bp.ad_aggregator_id = Some(2);
                })
            },
            vec![
                ("LACP_NOT_NEGOTIATED", "bond0/eth0"),
                ("LACP_NOT_NEGOTIATED", "bond0/eth1"),
                ("LACP_AGGREGATOR_SPLIT", "bond0/eth1"),
            ],
        ),
        (
            "802.3ad port not distributing",
            edit(healthy_lacp(), 3, |p| {
                p.bond_port.as_mut().expect("port").ad_actor_state =
                    Some(HEALTHY_LACP & !lacp::DISTRIBUTING);
            }),
            vec![("LACP_NOT_NEGOTIATED", "bond0/eth1")],
        ),
        (
            "802.3ad aggregator split alone",
            edit(healthy_lacp(), 3, |p| {
                p.bond_port.as_mut().expect("port").ad_aggregator_id = Some(2)
            }),
            vec![("LACP_AGGREGATOR_SPLIT", "bond0/eth1")],
        ),
        (
            "LACP rules do not apply to active-backup",
            edit(healthy_ab(), 3, |p| {
                p.bond_port.as_mut().expect("port").ad_actor_state = Some(0)
            }),
            vec![],
        ),
        (
            "port speed mismatch",
            edit(healthy_ab(), 3, |p| p.speed_mbps = Some(1000)),
            vec![("PORT_SPEED_MISMATCH", "bond0")],
        ),
        (
            "port duplex mismatch",
            edit(healthy_ab(), 3, |p| p.duplex = Some("half".into())),
            vec![("PORT_SPEED_MISMATCH", "bond0")],
        ),
        (
            "unknown speed is not a mismatch",
            edit(healthy_ab(), 3, |p| p.speed_mbps = None),
            vec![],
        ),
        (
            "admin-up link without carrier",
            snapshot(vec![Interface {
                carrier: false,
                oper_state: OperState::LowerLayerDown,
                ..nic(4, "eth2")
            }]),
            vec![("LINK_NO_CARRIER", "eth2")],
        ),
        (
            "admin-down link without carrier is fine",
            snapshot(vec![Interface {
                carrier: false,
                admin_up: false,
                oper_state: OperState::Down,
                ..nic(4, "eth2")
            }]),
            vec![],
        ),
        (
            "bridge port without carrier counts (outside any bond)",
            snapshot(vec![
                Interface {
                    carrier: false,
                    controller: Some(9),
                    ..nic(4, "veth1")
                },
                nic(9, "br0"),
            ]),
            vec![("LINK_NO_CARRIER", "veth1")],
        ),
        (
            "unparseable interface is critical",
            edit(healthy_ab(), 2, |p| {
                p.parse_errors.push("attribute 4: bad length".into())
            }),
            vec![("STATE_UNREADABLE", "eth0")],
        ),
    ];
    for (name, snap, expected) in cases {
        assert_eq!(codes(&snap), pairs(&expected), "case: {name}");
    }
}

#[test]
fn seed_failure_is_critical_while_bond_is_up() {
    let snap = edit(healthy_ab(), 3, |p| {
        p.carrier = false;
        p.bond_port.as_mut().expect("port").mii_status = MiiStatus::Down;
    });
    assert!(
        snap.interfaces[&10].carrier,
        "the bond itself still has carrier"
    );
    let mut ev = Evaluator::new(PolicyConfig::default());
    let findings = ev.evaluate(&snap, Instant::now(), SystemTime::now());
    assert_eq!(
        preflight_model::Verdict::from_findings(&findings),
        preflight_model::Verdict::NoGo
    );
    let f = findings
        .iter()
        .find(|f| f.code == "BOND_PORT_DOWN")
        .expect("port down finding");
    assert_eq!(f.severity, preflight_model::Severity::Critical);
    assert_eq!(f.subject, "bond0/eth1");
    assert!(
        f.message.contains("eth1") && f.message.contains("redundancy"),
        "{}",
        f.message
    );
}

#[test]
fn configured_min_ports_and_ignores() {
    let mut single = healthy_ab();
    single.interfaces.remove(&3);
    let cfg = PolicyConfig {
        bond_min_ports: 1,
        ..PolicyConfig::default()
    };
    assert_eq!(codes_with(&single, &cfg), vec![]);

    let dark = snapshot(vec![Interface {
        carrier: false,
        ..nic(4, "docker0")
    }]);
    let cfg = PolicyConfig {
        ignore_links: vec!["docker*".into()],
        ..PolicyConfig::default()
    };
    assert_eq!(codes_with(&dark, &cfg), vec![]);
}

#[test]
fn severity_override_and_off() {
    let dark = snapshot(vec![Interface {
        carrier: false,
        ..nic(4, "eth2")
    }]);
    let mut cfg = PolicyConfig::default();
    cfg.severity.insert(
        Code::LinkNoCarrier,
        Some(preflight_model::Severity::Critical),
    );
    let f = Evaluator::new(cfg.clone()).evaluate(&dark, Instant::now(), SystemTime::now());
    assert_eq!(f[0].severity, preflight_model::Severity::Critical);
    cfg.severity.insert(Code::LinkNoCarrier, None);
    assert!(Evaluator::new(cfg)
        .evaluate(&dark, Instant::now(), SystemTime::now())
        .is_empty());
}

#[test]
fn since_is_kept_while_the_finding_persists_and_reset_after() {
    let bad = edit(healthy_ab(), 3, |p| {
        p.bond_port.as_mut().expect("port").mii_status = MiiStatus::Down
    });
    let mut ev = Evaluator::new(PolicyConfig::default());
    let t0 = Instant::now();
    let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let first = ev.evaluate(&bad, t0, w0);
    let later = ev.evaluate(
        &bad,
        t0 + Duration::from_secs(5),
        w0 + Duration::from_secs(5),
    );
    assert_eq!(first[0].since, w0);
    assert_eq!(later[0].since, w0);
    assert!(ev
        .evaluate(
            &healthy_ab(),
            t0 + Duration::from_secs(6),
            w0 + Duration::from_secs(6)
        )
        .is_empty());
    let again = ev.evaluate(
        &bad,
        t0 + Duration::from_secs(7),
        w0 + Duration::from_secs(7),
    );
    assert_eq!(again[0].since, w0 + Duration::from_secs(7));
}

#[test]
fn flapping_is_detected_in_the_window_and_clears_after_it() {
    let cfg = PolicyConfig {
        flap_window: Duration::from_secs(60),
        flap_max_changes: 4,
        ..PolicyConfig::default()
    };
    let mut ev = Evaluator::new(cfg);
    let t0 = Instant::now();
    let w = SystemTime::now();
    let with_changes = |n: u32| edit(healthy_ab(), 3, |p| p.carrier_changes = n);
    // History before the agent started does not count.
    assert!(ev.evaluate(&with_changes(40), t0, w).is_empty());
    assert!(ev
        .evaluate(&with_changes(42), t0 + Duration::from_secs(1), w)
        .is_empty());
    let f = ev.evaluate(&with_changes(44), t0 + Duration::from_secs(2), w);
    let flap = f
        .iter()
        .find(|f| f.code == "LINK_FLAPPING")
        .expect("flapping after 4 changes");
    assert_eq!(flap.subject, "bond0/eth1");
    assert_eq!(flap.severity, preflight_model::Severity::Warning);
    assert!(ev.needs_tick());
    // Still inside the window.
    assert!(!ev
        .evaluate(&with_changes(44), t0 + Duration::from_secs(50), w)
        .is_empty());
    // The window has passed since the last change: cleared without any new event.
    assert!(ev
        .evaluate(&with_changes(44), t0 + Duration::from_secs(63), w)
        .is_empty());
}

#[test]
fn every_code_has_a_rule_test_and_a_meaning() {
    for c in codes::ALL {
        assert!(!c.meaning().is_empty());
        assert_eq!(Code::parse(c.as_str()), Some(*c));
    }
    // The table above covers each code at least once.
    let src = concat!(
        include_str!("tests.rs"),
        include_str!("expect/tests.rs"),
        include_str!("ovs/tests.rs"),
        include_str!("expect/tests/nics.rs"),
        include_str!("expect/tests/ovs_and_team.rs"),
        include_str!("expect/tests/bond_health.rs"),
        include_str!("expect/tests/fallback.rs"),
        include_str!("expect/tests/networkmanager.rs"),
        include_str!("lldp/tests.rs"),
        include_str!("member_path.rs")
    );
    for c in codes::ALL {
        assert!(
            src.contains(&format!("\"{}", c.as_str())),
            "no rule test for {c}"
        );
    }
}

#[test]
fn invalid_expectations_are_a_critical_finding_and_clear() {
    let mut ev = Evaluator::new(PolicyConfig::default());
    ev.set_expectations_error(Some(
        "/etc/os-net-config/config.yaml: network_config: must be a list".into(),
    ));
    let f = ev.evaluate(&healthy_ab(), Instant::now(), SystemTime::now());
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].code.as_str(), f[0].severity),
        ("EXPECTATIONS_INVALID", preflight_model::Severity::Critical)
    );
    assert!(f[0].message.contains("last good expectations"));
    ev.set_expectations_error(None);
    assert!(ev
        .evaluate(&healthy_ab(), Instant::now(), SystemTime::now())
        .is_empty());
}

#[test]
fn failed_probe_is_reachability_failed() {
    let mut ev = Evaluator::new(PolicyConfig::default());
    let probe = |failed| preflight_model::ProbeStatus {
        target: "icmp 192.0.2.1 via bond0".into(),
        failed,
        loss: 0.5,
        rtt_ms: None,
        consecutive_failures: 3,
        last_error: Some("no echo reply within 1s".into()),
    };
    ev.set_probes(vec![probe(false)]);
    assert!(ev
        .evaluate(&healthy_ab(), Instant::now(), SystemTime::now())
        .is_empty());
    ev.set_probes(vec![probe(true)]);
    let f = ev.evaluate(&healthy_ab(), Instant::now(), SystemTime::now());
    assert_eq!(
        (f[0].code.as_str(), f[0].subject.as_str()),
        ("REACHABILITY_FAILED", "icmp 192.0.2.1 via bond0")
    );
    assert_eq!(f[0].severity, preflight_model::Severity::Critical);
}

/// The carrier loss of a bond port reaches netlink up to one miimon interval
/// before the bonding driver's MII status: the port is down for the gate at
/// once, and the message shows the MII state as it is.
#[test]
fn a_bond_port_without_carrier_is_down_before_miimon_notices() {
    let mut s = healthy_ab();
    let eth1 = s.interfaces.get_mut(&3).expect("eth1");
    eth1.carrier = false; // MII still up: miimon has not run yet
    assert_eq!(
        codes(&s),
        [
            ("BOND_DEGRADED".to_owned(), "bond0".to_owned()),
            ("BOND_PORT_DOWN".to_owned(), "bond0/eth1".to_owned())
        ]
    );
    let r = rules(&s, &PolicyConfig::default(), &FlapCounts::default());
    let msg = &r
        .iter()
        .find(|r| r.subject == "bond0/eth1")
        .expect("finding")
        .message;
    assert!(
        msg.contains("MII status up") && msg.contains("carrier off"),
        "{msg}"
    );
}

/// Issue 37: a node with more findings than a report carries (hundreds of
/// dark NICs here; an oversized config elsewhere) sent every one and its
/// report went over the aggregator's limit (413): the aggregator showed the
/// node as merely stale. Now the worst are kept, the rest are counted in
/// one FINDINGS_TRUNCATED that is critical whatever the configuration says,
/// and the critical findings are never the ones left out.
#[test]
fn findings_past_the_bound_are_cut_and_stand_for_the_rest() {
    let mut ifaces: Vec<Interface> = (100..500)
        .map(|i| Interface {
            carrier: false,
            ..nic(i, &format!("dark{i}"))
        })
        .collect();
    ifaces.extend(healthy_ab().interfaces.into_values());
    let mut snap = snapshot(ifaces);
    if let Some(eth1) = snap.interfaces.get_mut(&3) {
        eth1.carrier = false;
    }
    let f =
        Evaluator::new(PolicyConfig::default()).evaluate(&snap, Instant::now(), SystemTime::now());
    assert_eq!(f.len(), MAX_FINDINGS);
    let cut = f
        .iter()
        .find(|x| x.code == Code::FindingsTruncated)
        .expect("FINDINGS_TRUNCATED");
    assert_eq!(cut.severity, preflight_model::Severity::Critical);
    assert!(
        cut.message.starts_with("147 more findings (0 critical)"),
        "{}",
        cut.message
    );
    // The critical bond findings are kept.
    assert!(f
        .iter()
        .any(|x| x.code == Code::BondPortDown && x.subject == "bond0/eth1"));
    // Under the bound nothing changes.
    let f = Evaluator::new(PolicyConfig::default()).evaluate(
        &healthy_ab(),
        Instant::now(),
        SystemTime::now(),
    );
    assert!(f.iter().all(|x| x.code != Code::FindingsTruncated));
    // A configuration cannot lower it.
    assert!(Code::FindingsTruncated.fail_closed());
}
