//! Hostile-input tests of the fleet (issue 37).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use preflight_model::report::{Report, ReportBody, Waiver};
use preflight_model::{Finding, NodeState, Severity, Snapshot};
use tokio::time::Instant;

use super::*;

/// Restore figures: `PROFILE_WAIVERS=10000,20000,40000 cargo test -p
/// preflight-aggregator --release --lib profile_restore -- --ignored --nocapture`.
#[test]
#[ignore = "prints figures; run by hand"]
fn profile_restore() {
    let sizes: Vec<i64> = std::env::var("PROFILE_WAIVERS")
        .unwrap_or_else(|_| "10000,20000".into())
        .split(',')
        .map(|s| s.parse().expect("a count"))
        .collect();
    for nodes in [1usize, 100] {
        for &n in &sizes {
            let now = Instant::now();
            let mut f = Fleet::new(FleetConfig::default(), SystemTime::UNIX_EPOCH);
            for i in 0..nodes {
                f.upsert_node(
                    &format!("n{i}"),
                    BTreeMap::new(),
                    now,
                    SystemTime::UNIX_EPOCH,
                )
                .expect("node");
            }
            let t = std::time::Instant::now();
            for id in 0..n {
                let node = format!("n{}", id as usize % nodes);
                f.add_waiver(waiver(id, &node), Duration::from_secs(3600), now);
            }
            eprintln!("nodes {nodes} waivers {n}: {:?}", t.elapsed());
        }
    }
}

fn report(node: &str, boot: &str, seq: u64, findings: Vec<Finding>) -> Report {
    Report {
        node: node.into(),
        boot_id: boot.into(),
        seq,
        body: ReportBody::Full {
            labels: BTreeMap::new(),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
    }
}

fn critical() -> Vec<Finding> {
    vec![Finding {
        code: "BOND_PORT_DOWN".parse().expect("a known code"),
        severity: Severity::Critical,
        subject: "bond0/eth1".into(),
        message: "down".into(),
        since: SystemTime::UNIX_EPOCH,
    }]
}

fn quick() -> FleetConfig {
    FleetConfig {
        settle: Duration::ZERO,
        ..FleetConfig::default()
    }
}

const W: SystemTime = SystemTime::UNIX_EPOCH;

/// A report of an earlier agent process (boot id) is a replay: the node's
/// current boot is later, so its old, healthy state must not come back.
#[test]
fn a_replayed_report_of_an_earlier_boot_is_refused() {
    let t = Instant::now();
    let mut f = Fleet::new(quick(), W);
    for seq in 1..=3 {
        f.apply_report(&report("c1", "a1", seq, vec![]), t, W)
            .expect("a1");
    }
    for seq in 1..=2 {
        f.apply_report(&report("c1", "a2", seq, critical()), t, W)
            .expect("a2");
    }
    assert_eq!(f.status("c1"), Some(Status::Blocked));
    for (seq, what) in [
        (1, "a1's first report again"),
        (3, "a1's last report again"),
    ] {
        let e = f
            .apply_report(&report("c1", "a1", seq, vec![]), t, W)
            .expect_err(what);
        assert!(
            e.to_string().contains("boot a1") && e.to_string().contains("replaced"),
            "{what}: {e}"
        );
        assert_eq!(f.status("c1"), Some(Status::Blocked), "{what}");
    }
    // Alternating does not get around it either: every report ever sent
    // of a1 and a2 stays refused.
    f.apply_report(&report("c1", "a3", 1, critical()), t, W)
        .expect("a3");
    for (boot, last) in [("a1", 3), ("a2", 2)] {
        for seq in 1..=last {
            assert!(f
                .apply_report(&report("c1", boot, seq, vec![]), t, W)
                .is_err());
        }
    }
    assert_eq!(f.status("c1"), Some(Status::Blocked));
    // The real agent's next report of its current boot still counts.
    f.apply_report(&report("c1", "a3", 2, critical()), t, W)
        .expect("a3 goes on");
}

/// Node names are DNS names: `NODE-A` is `node-a`, never a second node.
#[test]
fn an_upper_case_name_is_not_a_second_node() {
    let t = Instant::now();
    let mut f = Fleet::new(quick(), W);
    f.upsert_node("node-a", BTreeMap::new(), t, W)
        .expect("node");
    f.apply_report(&report("node-a", "b", 1, critical()), t, W)
        .expect("report");
    let r = f.apply_report(&report("NODE-A", "x", 1, vec![]), t, W);
    assert!(r.is_err(), "{r:?}");
    assert!(f.upsert_node("Node-B", BTreeMap::new(), t, W).is_err());
    assert_eq!(f.len(), 1);
    assert_eq!(f.status("NODE-A"), None);
    assert_eq!(f.status("node-a"), Some(Status::Blocked));
}

fn waiver(id: i64, node: &str) -> Waiver {
    Waiver {
        id,
        node: node.into(),
        code: Some("BOND_PORT_DOWN".into()),
        subject: Some(format!("bond0/eth{id}")),
        reason: "r".into(),
        author: "a".into(),
        created_at: W,
        expires_at: W + Duration::from_secs(3600),
    }
}

/// A node takes at most `max_waivers_per_node` waivers, the fleet at most
/// `max_waivers`: each waiver costs memory and restart time.
#[test]
fn waivers_beyond_the_caps_are_refused() {
    let t = Instant::now();
    let mut f = Fleet::new(quick(), W);
    f.upsert_node("c1", BTreeMap::new(), t, W).expect("node");
    f.upsert_node("c2", BTreeMap::new(), t, W).expect("node");
    for id in 0..100 {
        f.check_waiver(&waiver(id, "c1"), W).expect("under the cap");
        f.add_waiver(waiver(id, "c1"), Duration::from_secs(3600), t);
    }
    let e = f
        .check_waiver(&waiver(100, "c1"), W)
        .expect_err("the 101st waiver of one node");
    assert!(e.to_string().contains("max_waivers_per_node"), "{e}");
    f.check_waiver(&waiver(100, "c2"), W).expect("another node");
}

/// Restoring many waivers is linear: 40,000 on one node (the worst case,
/// every check of a finding once walked all of them) finish in this test.
#[test]
fn forty_thousand_waivers_restore() {
    let t = Instant::now();
    let mut f = Fleet::new(quick(), W);
    f.upsert_node("c1", BTreeMap::new(), t, W).expect("node");
    for id in 0..40_000 {
        f.add_waiver(waiver(id, "c1"), Duration::from_secs(3600), t);
    }
    assert_eq!(f.waivers().len(), 40_000);
    assert_eq!(f.status("c1"), Some(Status::Silent));
}
