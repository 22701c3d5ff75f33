//! Maintenance leases and the plan on the fleet, time passed in: the plan
//! never breaks a limit (a property over random fleets, leases and
//! questions, checked against a reference computed from scratch), and a
//! node that does not come back is MAINTENANCE_OVERRUN with its last
//! findings.

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

fn finding(code: &str, sev: Severity, subject: &str) -> Finding {
    Finding {
        code: code.parse().expect("a known code"),
        severity: sev,
        subject: subject.into(),
        message: format!("{code} on {subject}"),
        since: SystemTime::UNIX_EPOCH,
    }
}

fn report(
    node: &str,
    labels: &BTreeMap<String, String>,
    seq: u64,
    findings: Vec<Finding>,
) -> Report {
    Report {
        node: node.into(),
        boot_id: "boot-1".into(),
        seq,
        body: ReportBody::Full {
            labels: labels.clone(),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
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

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

fn compute(rack: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("role".to_owned(), "compute".to_owned()),
        ("rack".to_owned(), rack.to_owned()),
    ])
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the reference knows of a node: scope label, domain, go or not,
/// out for maintenance.
#[derive(Debug)]
struct RefNode {
    role: &'static str,
    rack: Option<&'static str>,
    go: bool,
    /// Reported a critical finding (not go, not silent).
    blocked: bool,
    out: bool,
}

/// Property: over random fleets (roles, racks, some nodes without a rack,
/// blocked and silent nodes, leases) and random questions, a plan never
/// takes more than `max_unavailable` of the scope counting leases, never
/// more than K of a domain counting leases anywhere in the fleet, never a
/// node that is not go, leased, without a domain, or whose domain holds a
/// node that is not go; no node it holds back could have been added
/// within the limits (largest batch); the same question twice gives the
/// same batch; and the gate neither blocks on nor counts as ready a node
/// out for maintenance.
#[test]
fn the_plan_never_breaks_a_limit() {
    let racks = ["r1", "r2", "r3", "r4"];
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let t0 = Instant::now();
        let mut f = Fleet::new(cfg(), W);
        let mut reference: BTreeMap<String, RefNode> = BTreeMap::new();
        let count = 1 + rng.below(14);
        for i in 0..count {
            let name = format!("n{i:02}");
            let role = if rng.below(4) == 0 {
                "control"
            } else {
                "compute"
            };
            let rack = (rng.below(6) != 0).then(|| racks[rng.below(4) as usize]);
            let mut labels = BTreeMap::from([("role".to_owned(), role.to_owned())]);
            if let Some(r) = rack {
                labels.insert("rack".into(), r.into());
            }
            let kind = rng.below(6);
            let go = match kind {
                0 => {
                    // Silent: listed, never reported.
                    f.upsert_node(&name, labels, t0, W).expect("node");
                    false
                }
                1 => {
                    f.apply_report(
                        &report(
                            &name,
                            &labels,
                            1,
                            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")],
                        ),
                        t0,
                        W,
                    )
                    .expect("report");
                    false
                }
                _ => {
                    f.apply_report(&report(&name, &labels, 1, vec![]), t0, W)
                        .expect("report");
                    true
                }
            };
            reference.insert(
                name,
                RefNode {
                    role,
                    rack,
                    go,
                    blocked: kind == 1,
                    out: false,
                },
            );
        }
        if rng.below(3) == 0 {
            f.track_scope(&sel("role=compute"));
        }
        // Leases of random disjoint groups.
        let names: Vec<String> = reference.keys().cloned().collect();
        let mut id = 0;
        for n in &names {
            if rng.below(4) == 0 {
                id += 1;
                f.add_lease(
                    lease(id, &[n.as_str()], W, Duration::from_secs(1800)),
                    W,
                    t0,
                );
                reference.get_mut(n).expect("node").out = true;
            }
        }
        for _q in 0..8 {
            let scope = if rng.below(2) == 0 {
                "role=compute"
            } else {
                ""
            };
            let max = if rng.below(2) == 0 {
                Budget::Count(rng.below(6) as usize)
            } else {
                Budget::Percent(u8::try_from(rng.below(101)).expect("small"))
            };
            let per = (rng.below(3) != 0).then(|| ("rack".to_owned(), 1 + rng.below(3) as usize));
            let q = PlanQuestion {
                scope: sel(scope),
                max_unavailable: max,
                per: per.clone(),
            };
            let in_scope = |r: &RefNode| scope.is_empty() || r.role == "compute";
            let members: Vec<(&String, &RefNode)> =
                reference.iter().filter(|(_, r)| in_scope(r)).collect();
            let plan = match f.plan(&q, &BTreeSet::new()) {
                Ok(p) => p,
                Err(FleetError::UnknownScope(_)) => {
                    assert!(members.is_empty(), "seed {seed}");
                    continue;
                }
                Err(e) => panic!("seed {seed}: {e}"),
            };
            let ctx = format!("seed {seed} {q:?}: {plan:?}");
            assert_eq!(plan.members, members.len(), "{ctx}");
            let budget = max.of(members.len());
            let out_in_scope = members.iter().filter(|(_, r)| r.out).count();
            assert!(
                plan.batch.is_empty() || plan.batch.len() + out_in_scope <= budget,
                "{ctx}"
            );
            let chosen: BTreeSet<&String> = plan.batch.iter().collect();
            let domain_out = |rack: &str| {
                reference
                    .values()
                    .filter(|r| r.rack == Some(rack) && r.out)
                    .count()
            };
            let domain_blocked = |rack: &str| {
                reference
                    .values()
                    // A leased node that reported blocked since its
                    // lease started blocks its domain too.
                    .any(|r| r.rack == Some(rack) && !r.go && (!r.out || r.blocked))
            };
            for n in &plan.batch {
                let r = &reference[n];
                assert!(in_scope(r) && r.go && !r.out, "{ctx}: {n}");
                if let Some((_, k)) = &per {
                    let rack = r.rack.expect("a chosen node has a domain");
                    assert!(!domain_blocked(rack), "{ctx}: {n}");
                    let taken = plan
                        .batch
                        .iter()
                        .filter(|m| reference[*m].rack == Some(rack))
                        .count();
                    assert!(taken + domain_out(rack) <= *k, "{ctx}: {rack}");
                }
            }
            // Every member is either chosen or held, once, in name order.
            let held: Vec<&String> = plan.held.iter().map(|h| &h.node).collect();
            assert_eq!(chosen.len() + held.len(), members.len(), "{ctx}");
            // Largest: no held node could join within the limits.
            for h in &plan.held {
                let r = &reference[&h.node];
                if !r.go || r.out {
                    continue;
                }
                let budget_left = plan.batch.len() + out_in_scope < budget;
                let fits = match (&per, r.rack) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some((_, k)), Some(rack)) => {
                        let taken = plan
                            .batch
                            .iter()
                            .filter(|m| reference[*m].rack == Some(rack))
                            .count();
                        !domain_blocked(rack) && taken + domain_out(rack) < *k
                    }
                };
                assert!(!(budget_left && fits), "{ctx}: {} could join", h.node);
            }
            assert_eq!(f.plan(&q, &BTreeSet::new()).expect("again"), plan, "{ctx}");
            // The gate: nobody out blocks, nobody out is ready; the
            // rendered answer is the reference answer.
            if let Ok(a) = f.gate(&sel(scope), t0, W) {
                let json = f.gate_json(&sel(scope), t0, W, true).expect("rendered");
                let rendered: serde_json::Value =
                    serde_json::from_slice(&json.body.join()).expect("json");
                assert_eq!(
                    rendered,
                    serde_json::to_value(&a).expect("serializes"),
                    "{ctx}"
                );
                // (Every node out: the empty scope's INVENTORY_EMPTY, node "".)
                for b in a.blockers.iter().filter(|b| !b.node.is_empty()) {
                    assert!(!reference[&b.node].out, "{ctx}: {b:?}");
                }
                for n in &a.ready {
                    assert!(!reference[n].out, "{ctx}: {n}");
                }
                let blocks = members.iter().any(|(_, r)| !r.out && !r.go);
                let any_in = members.iter().any(|(_, r)| !r.out);
                assert_eq!(a.verdict == Verdict::Go, any_in && !blocks, "{ctx}: {a:?}");
            }
        }
    }
}

/// Nodes of the store's leases that this replica has not followed yet
/// count as out too.
#[test]
fn leases_the_store_holds_count_before_they_are_followed() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    for (n, rack) in [("c1", "r1"), ("c2", "r1"), ("c3", "r2")] {
        f.apply_report(&report(n, &compute(rack), 1, vec![]), t0, W)
            .expect("report");
    }
    let q = PlanQuestion {
        scope: sel("role=compute"),
        max_unavailable: Budget::Count(2),
        per: Some(("rack".into(), 1)),
    };
    assert_eq!(
        f.plan(&q, &BTreeSet::new()).expect("plan").batch,
        ["c1", "c3"]
    );
    let elsewhere = BTreeSet::from(["c1".to_owned()]);
    let p = f.plan(&q, &elsewhere).expect("plan");
    assert_eq!(p.batch, ["c3"]);
    assert_eq!(p.unavailable, ["c1"]);
    let held: Vec<(&str, HeldReason)> =
        p.held.iter().map(|h| (h.node.as_str(), h.reason)).collect();
    assert_eq!(
        held,
        [
            ("c1", HeldReason::Maintenance),
            ("c2", HeldReason::DomainFull)
        ]
    );
}

/// The outage that started preflight: a node taken down for an update
/// does not come back. Its lease ends, the grace runs out, and the gate
/// names it with MAINTENANCE_OVERRUN and its last findings; once it is
/// back and go the overrun ends. A node back and go within its grace
/// rejoins its scope as ready.
#[test]
fn a_node_that_does_not_come_back_is_an_overrun_with_its_last_findings() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    let flap = finding("LINK_FLAPPING", Severity::Warning, "eth1");
    f.apply_report(&report("c1", &compute("r1"), 1, vec![flap]), t0, W)
        .expect("report");
    f.apply_report(&report("c2", &compute("r1"), 1, vec![]), t0, W)
        .expect("report");
    f.apply_report(&report("c3", &compute("r2"), 1, vec![]), t0, W)
        .expect("report");
    f.add_lease(lease(1, &["c1", "c2"], W, Duration::from_secs(60)), W, t0);
    assert_eq!(f.nodes_in_maintenance(), 2);
    let at = |s: u64| (t0 + Duration::from_secs(s), W + Duration::from_secs(s));

    // Both go silent during the update; c3 keeps reporting.
    let (t, w) = at(50);
    f.apply_report(&report("c3", &compute("r2"), 2, vec![]), t, w)
        .expect("report");
    f.tick(t);
    let a = f.gate(&sel("role=compute"), t, w).expect("gate");
    assert_eq!(
        (a.verdict, a.ready.clone()),
        (Verdict::Go, vec!["c3".to_owned()]),
        "{a:?}"
    );

    // The lease ends: c2 comes back go, c1 does not.
    let (t, w) = at(70);
    f.apply_report(&report("c2", &compute("r1"), 2, vec![]), t, w)
        .expect("report");
    f.apply_report(&report("c3", &compute("r2"), 3, vec![]), t, w)
        .expect("report");
    f.tick(t);
    assert_eq!(f.tick_maintenance(w, t).len(), 1);
    assert_eq!(f.excused("c2"), None);
    assert!(matches!(f.excused("c1"), Some(Excused::Returning { .. })));
    let a = f.gate(&sel("role=compute"), t, w).expect("gate");
    assert_eq!(
        (a.verdict, a.ready.clone()),
        (Verdict::Go, vec!["c2".to_owned(), "c3".to_owned()]),
        "{a:?}"
    );

    // Past the grace: c1 blocks, named, with its last findings.
    let (t, w) = at(60 + 600);
    f.apply_report(&report("c2", &compute("r1"), 3, vec![]), t, w)
        .expect("report");
    f.apply_report(&report("c3", &compute("r2"), 4, vec![]), t, w)
        .expect("report");
    f.tick(t);
    f.tick_maintenance(w, t);
    let a = f.gate(&sel("role=compute"), t, w).expect("gate");
    assert_eq!(a.verdict, Verdict::NoGo);
    let b = &a.blockers[0];
    assert_eq!(
        (b.node.as_str(), b.code),
        ("c1", Code::MaintenanceOverrun),
        "{a:?}"
    );
    assert!(b.message.contains("LINK_FLAPPING eth1"), "{}", b.message);
    assert_eq!(f.overruns().len(), 1);
    // The rendered answer says the same.
    let json = f
        .gate_json(&sel("role=compute"), t, w, true)
        .expect("render");
    assert!(String::from_utf8_lossy(&json.body.join()).contains("MAINTENANCE_OVERRUN"));
    // Its rack is held by the plan.
    let q = PlanQuestion {
        scope: sel("role=compute"),
        max_unavailable: Budget::Count(3),
        per: Some(("rack".into(), 1)),
    };
    let p = f.plan(&q, &BTreeSet::new()).expect("plan");
    assert_eq!(p.batch, ["c3"]);

    // Back and go: the overrun ends.
    let (t, w) = at(700);
    f.apply_report(&report("c1", &compute("r1"), 2, vec![]), t, w)
        .expect("report");
    f.apply_report(&report("c2", &compute("r1"), 4, vec![]), t, w)
        .expect("report");
    f.apply_report(&report("c3", &compute("r2"), 5, vec![]), t, w)
        .expect("report");
    f.tick(t);
    let a = f.gate(&sel("role=compute"), t, w).expect("gate");
    assert_eq!(a.verdict, Verdict::Go, "{a:?}");
    assert!(f.overruns().is_empty());
}

/// How long a plan takes at 100,000 nodes in 1,000 racks, for a
/// 1,000-node scope and for the whole fleet (figures, not assertions; run
/// with `cargo test --release -p preflight-aggregator --lib
/// plan_at_scale -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement: run by hand in release"]
fn plan_at_scale() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    for i in 0..100_000u32 {
        let labels = BTreeMap::from([
            ("role".to_owned(), "compute".to_owned()),
            ("group".to_owned(), format!("g{}", i / 1000)),
            ("rack".to_owned(), format!("r{}", i % 1000)),
        ]);
        let findings = if i % 997 == 0 {
            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")]
        } else {
            vec![]
        };
        f.apply_report(&report(&format!("n{i:06}"), &labels, 1, findings), t0, W)
            .expect("report");
    }
    for i in 0..100 {
        let n = format!("n{:06}", i * 1000 + 7);
        f.add_lease(
            lease(i + 1, &[n.as_str()], W, Duration::from_secs(1800)),
            W,
            t0,
        );
    }
    for (what, scope, max) in [
        ("1,000-node scope", "group=g42", Budget::Percent(10)),
        ("whole fleet", "role=compute", Budget::Percent(10)),
    ] {
        let q = PlanQuestion {
            scope: sel(scope),
            max_unavailable: max,
            per: Some(("rack".into(), 1)),
        };
        let mut took: Vec<Duration> = (0..200)
            .map(|_| {
                let s = std::time::Instant::now();
                let p = f.plan(&q, &BTreeSet::new()).expect("plan");
                std::hint::black_box(p);
                s.elapsed()
            })
            .collect();
        took.sort();
        let p = f.plan(&q, &BTreeSet::new()).expect("plan");
        eprintln!(
            "plan {what}: p50 {:?} p99 {:?} (batch {}, held {})",
            took[100],
            took[198],
            p.batch.len(),
            p.held.len()
        );
    }
}
