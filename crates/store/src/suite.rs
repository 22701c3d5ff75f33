//! The store's test suite, one set of checks that every backend must pass:
//! the SQLite unit tests and the PostgreSQL integration tests (tests/pg.rs
//! of this crate, with a real server) both call [`run_all`] on an empty
//! database. It lives in the library, hidden, so that both can reach it;
//! it panics on failure.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use preflight_model::report::Waiver;

use super::{Database, PendingReport, Store};

/// A one-hour waiver of `BOND_PORT_DOWN` on `node` from `now`, id not yet
/// assigned.
pub fn waiver(node: &str, now: SystemTime) -> Waiver {
    Waiver {
        id: 0,
        node: node.into(),
        code: Some("BOND_PORT_DOWN".into()),
        subject: None,
        reason: "NIC on order".into(),
        author: "ana".into(),
        created_at: now,
        expires_at: now + Duration::from_secs(3600),
    }
}

fn state_json(node: &str) -> String {
    serde_json::json!({
        "node": node, "verdict": "go", "findings": [], "interfaces": [],
        "bonds": [], "addresses": [], "routes": []
    })
    .to_string()
}

/// Runs every check, in order, on `db`, which must be empty.
pub fn run_all(db: &Database) {
    waivers_and_audit_survive_reopen(db);
    waiver_ends_once(db);
    missed_expiries_are_recorded_once(db);
    nodes_and_reports(db);
    retired_boots_round_trip(db);
    reopen_keeps_schema(db);
    leases_are_exclusive_durable_and_end_once(db);
}

fn actions(s: &mut Store, n: u32) -> Vec<String> {
    s.audit(n)
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect()
}

/// Inventory, waivers and the audit log are durable across a reopen;
/// expired waivers are not active.
pub fn waivers_and_audit_survive_reopen(db: &Database) {
    let now = SystemTime::now();
    {
        let mut s = Store::open(db).expect("open");
        let labels = BTreeMap::from([("role".into(), "compute".into())]);
        s.upsert_node("c1", &labels, "test", now).expect("node");
        let w = s.insert_waiver(waiver("c1", now)).expect("waiver");
        assert!(w.id > 0, "an id is assigned");
    }
    let mut s = Store::open(db).expect("reopen");
    let ws = s.active_waivers(now).expect("waivers");
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0].reason, "NIC on order");
    assert_eq!(ws[0].code.as_deref(), Some("BOND_PORT_DOWN"));
    assert_eq!(
        crate::millis(ws[0].expires_at),
        crate::millis(now + Duration::from_secs(3600)),
        "expiry to the millisecond"
    );
    assert!(
        s.active_waivers(now + Duration::from_secs(3601))
            .expect("ok")
            .is_empty(),
        "expired ones are not active"
    );
    assert_eq!(actions(&mut s, 10), ["waiver.create", "node.upsert"]);
    let nodes = s.nodes().expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].0, "c1");
    assert_eq!(nodes[0].1["role"], "compute");
}

/// Ending a waiver twice (two replicas expiring it) writes one audit entry.
pub fn waiver_ends_once(db: &Database) {
    let now = SystemTime::now();
    let mut s = Store::open(db).expect("open");
    let w = s.insert_waiver(waiver("c1", now)).expect("waiver");
    assert!(s.end_waiver(&w, "bob", "waiver.remove", now).expect("end"));
    assert!(
        !s.end_waiver(&w, "aggregator", "waiver.expire", now)
            .expect("second end"),
        "already ended"
    );
    assert_eq!(actions(&mut s, 2), ["waiver.remove", "waiver.create"]);
    assert!(
        s.active_waivers(now)
            .expect("waivers")
            .iter()
            .all(|a| a.id != w.id),
        "an ended waiver is not active"
    );
}

/// Expiries the sweeper could not record are caught up once, dated at the
/// expiry; a waiver still in force or already ended is left alone.
pub fn missed_expiries_are_recorded_once(db: &Database) {
    let now = SystemTime::now();
    let mut s = Store::open(db).expect("open");
    let mut past = waiver("c1", now - Duration::from_secs(7200));
    past.reason = "expired during an outage".into();
    let past = s.insert_waiver(past).expect("waiver");
    let live = s.insert_waiver(waiver("c1", now)).expect("waiver");
    assert_eq!(s.expire_due(now).expect("catch up"), 1);
    assert_eq!(s.expire_due(now).expect("again"), 0, "once only");
    let audit = s.audit(3).expect("audit");
    assert_eq!(audit[0].action, "waiver.expire");
    assert_eq!(audit[0].actor, "aggregator");
    assert_eq!(audit[0].detail["id"], past.id);
    assert_eq!(
        crate::millis(audit[0].at),
        crate::millis(past.expires_at),
        "dated when it expired"
    );
    let active: Vec<i64> = s
        .active_waivers(now - Duration::from_secs(7200))
        .expect("waivers")
        .iter()
        .map(|w| w.id)
        .collect();
    assert!(!active.contains(&past.id) && active.contains(&live.id));
    assert!(
        !s.end_waiver(&past, "aggregator", "waiver.expire", now)
            .expect("end"),
        "the sweeper of another replica finds it ended"
    );
    assert!(s
        .end_waiver(&live, "bob", "waiver.remove", now)
        .expect("end"));
}

/// Reports are saved in batches, latest wins, and go with their node.
pub fn nodes_and_reports(db: &Database) {
    let now = SystemTime::now();
    let mut s = Store::open(db).expect("open");
    s.upsert_node("c2", &BTreeMap::new(), "agent", now)
        .expect("node");
    let r = |seq| PendingReport {
        node: "c2".into(),
        boot_id: "b1".into(),
        seq,
        received_at: now,
        state_json: state_json("c2"),
        retired_boots: Vec::new(),
    };
    s.save_reports(&[r(1)]).expect("save");
    s.save_reports(&[r(7)]).expect("save again");
    let reports = s.reports().expect("reports");
    let c2: Vec<_> = reports.iter().filter(|r| r.node == "c2").collect();
    assert_eq!(c2.len(), 1);
    assert_eq!((c2[0].seq, c2[0].boot_id.as_str()), (7, "b1"));
    s.upsert_node(
        "c2",
        &BTreeMap::from([("rack".into(), "r1".into())]),
        "api",
        now,
    )
    .expect("relabel");
    let nodes = s.nodes().expect("nodes");
    let c2 = nodes.iter().find(|(n, _)| n == "c2").expect("c2 kept");
    assert_eq!(c2.1["rack"], "r1");
    s.remove_node("c2", "api", now).expect("remove");
    assert!(s.nodes().expect("nodes").iter().all(|(n, _)| n != "c2"));
    assert!(s.reports().expect("reports").iter().all(|r| r.node != "c2"));
    assert_eq!(actions(&mut s, 1), ["node.remove"]);
    s.ping().expect("ping");
}

/// The boot ids a node's agent left behind (fingerprints, oldest first) are
/// stored with its report and read back after a reopen, every bit of each;
/// a report that carries none keeps those stored (a node whose boot did
/// not change since the aggregator started), a longer list replaces them,
/// and they go with the node.
pub fn retired_boots_round_trip(db: &Database) {
    let now = SystemTime::now();
    let retired = vec![
        (0, 1),
        (1, 2),
        (0x8000_0000_0000_0000, 7),
        (u64::MAX, u64::MAX),
        (0x0123_4567_89ab_cdef, 0),
    ];
    let r = |boot: &str, seq, retired: &[(u64, u64)]| PendingReport {
        node: "c3".into(),
        boot_id: boot.into(),
        seq,
        received_at: now,
        state_json: state_json("c3"),
        retired_boots: retired.to_vec(),
    };
    let c3 = |s: &mut Store| {
        s.reports()
            .expect("reports")
            .into_iter()
            .find(|r| r.node == "c3")
            .expect("c3's report")
    };
    {
        let mut s = Store::open(db).expect("open");
        s.upsert_node("c3", &BTreeMap::new(), "agent", now)
            .expect("node");
        s.save_reports(&[r("b1", 4, &[])]).expect("save");
        assert!(c3(&mut s).retired_boots.is_empty(), "none yet");
        s.save_reports(&[r("b6", 1, &retired)]).expect("save");
    }
    let mut s = Store::open(db).expect("reopen");
    let got = c3(&mut s);
    assert_eq!((got.boot_id.as_str(), got.seq), ("b6", 1));
    assert_eq!(got.retired_boots, retired, "read back as written");
    s.save_reports(&[r("b6", 2, &[])]).expect("save");
    let got = c3(&mut s);
    assert_eq!(got.seq, 2);
    assert_eq!(got.retired_boots, retired, "kept by a report carrying none");
    let mut more = retired.clone();
    more.push((42, 3));
    s.save_reports(&[r("b7", 1, &more)]).expect("save");
    assert_eq!(c3(&mut s).retired_boots, more, "replaced by a longer list");
    s.remove_node("c3", "api", now).expect("remove");
    s.upsert_node("c3", &BTreeMap::new(), "agent", now)
        .expect("node again");
    s.save_reports(&[r("b8", 1, &[])]).expect("save");
    assert!(
        c3(&mut s).retired_boots.is_empty(),
        "a removed node's boots went with it"
    );
    s.remove_node("c3", "api", now).expect("remove");
}

/// Opening again applies no migration twice and keeps the data.
pub fn reopen_keeps_schema(db: &Database) {
    let before = Store::open(db)
        .expect("open")
        .audit(1000)
        .expect("audit")
        .len();
    let mut s = Store::open(db).expect("open again");
    assert_eq!(s.audit(1000).expect("audit").len(), before);
}

/// A lease of `nodes` for an hour from `now`, id not yet assigned.
pub fn lease(nodes: &[&str], pipeline: &str, now: SystemTime) -> crate::Lease {
    crate::Lease {
        id: 0,
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        pipeline: pipeline.into(),
        reason: "kernel update".into(),
        author: "ci".into(),
        created_at: now,
        expires_at: now + Duration::from_secs(3600),
    }
}

/// No node is under two leases; leases survive a reopen; an early end and
/// an expiry each end a lease once, audited, and free its nodes.
pub fn leases_are_exclusive_durable_and_end_once(db: &Database) {
    use crate::Taken;
    // Whole milliseconds, as stored.
    let now = crate::time(crate::millis(SystemTime::now()));
    let mut s = Store::open(db).expect("open");
    let (t, seen) = s
        .take_lease(now, |leased| {
            (Some(lease(&["l1", "l2"], "a", now)), leased.clone())
        })
        .expect("take");
    assert!(seen.is_empty(), "{seen:?}");
    let Taken::Leased(first) = t else {
        panic!("not leased: {t:?}")
    };
    assert!(first.id > 0);
    let (t, seen) = s
        .take_lease(now, |leased| {
            (Some(lease(&["l3", "l2"], "b", now)), leased.clone())
        })
        .expect("take");
    assert_eq!(t, Taken::Conflict(vec!["l2".into()]));
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["l1", "l2"]);
    let (t, ()) = s.take_lease(now, |_| (None, ())).expect("nothing");
    assert_eq!(t, Taken::Nothing);
    // An hour-long lease taken an hour ago: due.
    let old = now - Duration::from_secs(3600);
    let (t, ()) = s
        .take_lease(old, |_| (Some(lease(&["l3"], "b", old)), ()))
        .expect("take");
    assert!(matches!(t, Taken::Leased(_)), "{t:?}");
    drop(s);

    let mut s = Store::open(db).expect("reopen");
    let open = s.open_leases().expect("leases");
    assert_eq!(open.len(), 2);
    assert_eq!(open[0], first);
    let expired = s.expire_leases(now).expect("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].nodes, ["l3"]);
    assert!(s.expire_leases(now).expect("again").is_empty());
    assert_eq!(
        s.end_lease(first.id, "ana", now).expect("end"),
        Some(first.clone())
    );
    assert_eq!(s.end_lease(first.id, "ana", now).expect("end"), None);
    assert!(s.open_leases().expect("leases").is_empty());
    // Its nodes are free again.
    let (t, ()) = s
        .take_lease(now, |_| (Some(lease(&["l1", "l2", "l3"], "b", now)), ()))
        .expect("take");
    assert!(matches!(t, Taken::Leased(_)), "{t:?}");
    let a = actions(&mut s, 4);
    assert_eq!(
        a,
        ["lease.create", "lease.end", "lease.expire", "lease.create"]
    );
}
