//! Review items of issue 36 on the fleet, time passed in: a node back
//! from a lease rejoins on what it said after the lease ended, never on a
//! report sent before; a node that reports blocked while leased or
//! returning blocks at once; leases loaded after a restart keep their
//! grace and overruns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use preflight_model::report::{Report, ReportBody};
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot, Verdict};
use tokio::time::Instant;

use super::*;
use crate::store::Lease;

const W: SystemTime = SystemTime::UNIX_EPOCH;

fn cfg() -> FleetConfig {
    FleetConfig {
        ttl: Duration::from_secs(30),
        settle: Duration::ZERO,
        maintenance_grace: Duration::from_secs(600),
        ..FleetConfig::default()
    }
}

fn report(node: &str, rack: &str, seq: u64, findings: Vec<Finding>) -> Report {
    Report {
        node: node.into(),
        boot_id: "boot-1".into(),
        seq,
        body: ReportBody::Full {
            labels: BTreeMap::from([
                ("role".to_owned(), "compute".to_owned()),
                ("rack".to_owned(), rack.to_owned()),
            ]),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
    }
}

fn bond_down() -> Finding {
    Finding {
        code: "BOND_PORT_DOWN".parse().expect("a known code"),
        severity: Severity::Critical,
        subject: "bond0/eth1".into(),
        message: "BOND_PORT_DOWN on bond0/eth1".into(),
        since: W,
    }
}

fn lease(id: i64, nodes: &[&str], from: SystemTime, d: Duration) -> Lease {
    Lease {
        id,
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        pipeline: "p".into(),
        reason: "update".into(),
        author: "ci".into(),
        created_at: from,
        expires_at: from + d,
    }
}

fn scope() -> Selector {
    Selector::parse("role=compute").expect("selector")
}

fn at(t0: Instant, s: u64) -> (Instant, SystemTime) {
    (t0 + Duration::from_secs(s), W + Duration::from_secs(s))
}

/// c1, c2 in rack r1; c3 in r2; all go at 0 s.
fn fleet(t0: Instant) -> Fleet {
    let mut f = Fleet::new(cfg(), W);
    for (n, rack) in [("c1", "r1"), ("c2", "r1"), ("c3", "r2")] {
        f.apply_report(&report(n, rack, 1, vec![]), t0, W)
            .expect("report");
    }
    f
}

/// Review item 1: the lease ends (DELETE) 10 s after c1's last report,
/// while c1 reboots. Its saved status is still go (stale only after the
/// 30 s TTL), but that report is from before the lease ended: c1 stays
/// out until it reports after the end.
#[test]
fn a_returning_node_rejoins_only_on_a_report_after_its_lease_ended() {
    let t0 = Instant::now();
    let mut f = fleet(t0);
    let (t, w) = at(t0, 1);
    f.add_lease(lease(1, &["c1"], w, Duration::from_secs(3600)), w, t);
    let (t, w) = at(t0, 10);
    f.end_lease(1, w, t).expect("in force");
    let (t, w) = at(t0, 11);
    f.tick(t);
    f.tick_maintenance(w, t);
    assert!(
        matches!(f.excused("c1"), Some(Excused::Returning { .. })),
        "c1 rejoined on a report from before its lease ended: {:?}",
        f.excused("c1")
    );
    let a = f.gate(&scope(), t, w).expect("gate");
    assert!(!a.ready.contains(&"c1".to_owned()), "{a:?}");
    // Back and go after the end: it rejoins.
    let (t, w) = at(t0, 12);
    f.apply_report(&report("c1", "r1", 2, vec![]), t, w)
        .expect("report");
    f.tick_maintenance(w, t);
    assert_eq!(f.excused("c1"), None);
}

/// Review item 3, returning: a node whose report after its lease ended
/// is blocked rejoins at once and blocks its scope, not after the grace.
#[test]
fn a_returning_node_that_reports_blocked_blocks_at_once() {
    let t0 = Instant::now();
    let mut f = fleet(t0);
    f.add_lease(lease(1, &["c1"], W, Duration::from_secs(60)), W, t0);
    // Its last report is past the TTL: it is stale, not back.
    let (t, w) = at(t0, 61);
    f.tick(t);
    f.tick_maintenance(w, t);
    assert!(matches!(f.excused("c1"), Some(Excused::Returning { .. })));
    let (t, w) = at(t0, 62);
    f.apply_report(&report("c1", "r1", 2, vec![bond_down()]), t, w)
        .expect("report");
    f.apply_report(&report("c2", "r1", 2, vec![]), t, w)
        .expect("report");
    f.apply_report(&report("c3", "r2", 2, vec![]), t, w)
        .expect("report");
    f.tick(t);
    f.tick_maintenance(w, t);
    let a = f.gate(&scope(), t, w).expect("gate");
    assert_eq!(a.verdict, Verdict::NoGo, "c1 reported blocked: {a:?}");
    assert_eq!(f.excused("c1"), None);
}

/// Review item 3, leased: a leased node whose report since the lease
/// started is blocked blocks its failure domain in the plan.
#[test]
fn a_leased_node_that_reports_blocked_blocks_its_domain() {
    let t0 = Instant::now();
    let mut f = fleet(t0);
    f.add_lease(lease(1, &["c1"], W, Duration::from_secs(3600)), W, t0);
    let (t, w) = at(t0, 5);
    f.apply_report(&report("c1", "r1", 2, vec![bond_down()]), t, w)
        .expect("report");
    f.tick(t);
    let q = PlanQuestion {
        scope: scope(),
        max_unavailable: Budget::Count(3),
        per: Some(("rack".into(), 2)),
    };
    let p = f.plan(&q, &BTreeSet::new()).expect("plan");
    assert_eq!(
        p.batch,
        ["c3"],
        "r1 holds c1, which reported blocked: {p:?}"
    );
    let c2 = p.held.iter().find(|h| h.node == "c2").expect("c2 held");
    assert_eq!(c2.reason, HeldReason::DomainBlocked, "{p:?}");
}

/// Review item 7: leases loaded at start (nothing in memory before). A
/// lease that ended within the grace leaves its node returning, its grace
/// counted from the end; one that ended longer ago than the grace is an
/// overrun at once.
#[test]
fn leases_loaded_at_start_keep_their_grace_and_overruns() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    for (n, rack) in [("c1", "r1"), ("c2", "r1"), ("c3", "r2")] {
        f.upsert_node(
            n,
            BTreeMap::from([
                ("role".to_owned(), "compute".to_owned()),
                ("rack".to_owned(), rack.to_owned()),
            ]),
            t0,
            W,
        )
        .expect("node");
    }
    let (t, w) = at(t0, 2000);
    f.set_leases(
        vec![
            lease(
                1,
                &["c1"],
                W + Duration::from_secs(1000),
                Duration::from_secs(900),
            ),
            lease(2, &["c2"], W, Duration::from_secs(60)),
        ],
        w,
        t,
    );
    assert_eq!(
        f.excused("c1"),
        Some(Excused::Returning {
            grace_until: W + Duration::from_secs(1900 + 600)
        })
    );
    assert_eq!(f.excused("c2"), None);
    let overruns: Vec<String> = f.overruns().into_iter().map(|(n, _)| n).collect();
    assert_eq!(overruns, ["c2"]);
    let a = f.gate(&scope(), t, w).expect("gate");
    assert!(
        a.blockers
            .iter()
            .any(|b| b.node == "c2" && b.code == Code::MaintenanceOverrun),
        "{a:?}"
    );
}
