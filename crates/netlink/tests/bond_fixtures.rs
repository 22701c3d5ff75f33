//! Bond parsing and every bond rule on netlink dumps captured from a real
//! Debian 6.1 kernel in the VM harness (tests/tests/vm_bond.rs writes them
//! with PREFLIGHT_UPDATE_FIXTURES=1).

use preflight_model::{lacp, BondMode, MiiStatus, PortState, Snapshot};
use preflight_netlink::decode::decode_capture;
use preflight_policy::{rules, FlapCounts, PolicyConfig};

fn load(name: &str) -> Snapshot {
    let path = format!(
        "{}/../../tests/fixtures/netlink/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    decode_capture(&bytes).expect("complete capture")
}

fn findings(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = rules(s, &PolicyConfig::default(), &FlapCounts::default())
        .into_iter()
        .map(|r| format!("{} {}", r.code, r.subject))
        .collect();
    v.sort();
    v
}

#[test]
fn active_backup_healthy() {
    let s = load("ab-healthy");
    let bond = s.by_name("bond0").expect("bond0");
    let b = bond.bond.as_ref().expect("bond data");
    assert_eq!(b.mode, BondMode::ActiveBackup);
    assert_eq!(b.miimon_ms, 100);
    assert_eq!(b.arp_interval_ms, 0);
    assert_eq!(b.active_port, s.by_name("eth0").map(|i| i.index));
    let ports = s.ports_of(bond.index);
    assert_eq!(
        ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["eth0", "eth1"]
    );
    let eth0 = ports[0].bond_port.as_ref().expect("port data");
    let eth1 = ports[1].bond_port.as_ref().expect("port data");
    assert_eq!(
        (eth0.mii_status, eth0.state),
        (MiiStatus::Up, PortState::Active)
    );
    assert_eq!(
        (eth1.mii_status, eth1.state),
        (MiiStatus::Up, PortState::Backup)
    );
    assert_eq!(eth1.perm_mac.as_deref(), Some("52:54:00:12:34:57"));
    assert!(findings(&s).is_empty(), "{:?}", findings(&s));
}

#[test]
fn active_backup_one_cable_pulled_is_the_seed_failure() {
    let s = load("ab-port-down");
    let bond = s.by_name("bond0").expect("bond0");
    assert!(bond.carrier, "the bond is still up");
    let eth1 = s.by_name("eth1").expect("eth1");
    let p = eth1.bond_port.as_ref().expect("port data");
    assert_eq!(p.mii_status, MiiStatus::Down);
    assert_eq!(p.link_failure_count, 1);
    assert!(!eth1.carrier);
    assert_eq!(
        findings(&s),
        ["BOND_DEGRADED bond0", "BOND_PORT_DOWN bond0/eth1"]
    );
}

#[test]
fn active_backup_both_cables_pulled() {
    let s = load("ab-both-down");
    assert!(!s.by_name("bond0").expect("bond0").carrier);
    assert_eq!(
        findings(&s),
        [
            "BOND_DEGRADED bond0",
            "BOND_DOWN bond0",
            "BOND_PORT_DOWN bond0/eth0",
            "BOND_PORT_DOWN bond0/eth1"
        ]
    );
}

#[test]
fn lacp_without_partner() {
    let s = load("lacp-no-partner");
    let b = s
        .by_name("bond0")
        .and_then(|i| i.bond.clone())
        .expect("bond data");
    assert_eq!(b.mode, BondMode::Ieee8023ad);
    let ad = b.ad_info.expect("802.3ad info");
    assert_eq!(ad.partner_mac, "00:00:00:00:00:00");
    assert_eq!(ad.aggregator_id, 1);
    let eth1 = s
        .by_name("eth1")
        .and_then(|i| i.bond_port.clone())
        .expect("port");
    assert_eq!(eth1.ad_aggregator_id, Some(2));
    assert_ne!(
        eth1.ad_actor_state.expect("actor state") & lacp::DEFAULTED,
        0
    );
    assert_eq!(
        findings(&s),
        [
            "LACP_AGGREGATOR_SPLIT bond0/eth1",
            "LACP_NOT_NEGOTIATED bond0/eth0",
            "LACP_NOT_NEGOTIATED bond0/eth1"
        ]
    );
}

#[test]
fn lacp_between_two_bonds_over_veth_is_healthy() {
    let s = load("lacp-veth-healthy");
    for name in ["a0", "a1", "b0", "b1"] {
        let p = s
            .by_name(name)
            .and_then(|i| i.bond_port.clone())
            .expect("port");
        assert_eq!(p.ad_actor_state, Some(63), "{name}");
        assert_eq!(p.ad_partner_state, Some(63), "{name}");
    }
    assert_ne!(
        s.by_name("bonda")
            .and_then(|i| i.bond.clone())
            .and_then(|b| b.ad_info)
            .expect("ad")
            .partner_mac,
        "00:00:00:00:00:00"
    );
    assert!(findings(&s).is_empty(), "{:?}", findings(&s));
}

#[test]
fn bond_without_link_monitor() {
    let s = load("ab-no-monitor");
    assert!(
        findings(&s).contains(&"BOND_NO_LINK_MONITOR bondm".to_string()),
        "{:?}",
        findings(&s)
    );
}

#[test]
fn bond_with_a_single_port() {
    let s = load("ab-single-port");
    // n0/n1 are leftovers of the previous scenario: their peers were released.
    let about_bonds: Vec<String> = findings(&s)
        .into_iter()
        .filter(|f| f.contains(" bonds"))
        .collect();
    assert_eq!(about_bonds, ["BOND_DEGRADED bonds"]);
}
