use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use preflight_model::report::{GateAnswer, Report, ReportBody, Waiver};
use preflight_model::{Finding, NodeState, Severity, Snapshot, Verdict};
use tokio::time::Instant;

use super::*;

fn labels(role: &str) -> BTreeMap<String, String> {
    [("role".to_string(), role.to_string())]
        .into_iter()
        .collect()
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

fn full(node: &str, role: &str, seq: u64, findings: Vec<Finding>) -> Report {
    Report {
        node: node.into(),
        boot_id: "boot-1".into(),
        seq,
        body: ReportBody::Full {
            labels: labels(role),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
    }
}

fn heartbeat(node: &str, seq: u64, state_seq: u64) -> Report {
    Report {
        node: node.into(),
        boot_id: "boot-1".into(),
        seq,
        body: ReportBody::Heartbeat { state_seq },
    }
}

fn cfg() -> FleetConfig {
    FleetConfig {
        ttl: Duration::from_secs(30),
        settle: Duration::from_secs(10),
        closed_inventory: false,
        max_waiver: Duration::from_secs(86_400),
        min_waiver: Duration::from_secs(60),
        ..FleetConfig::default()
    }
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

const W: SystemTime = SystemTime::UNIX_EPOCH;

#[test]
fn healthy_nodes_are_go_after_settling() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    f.apply_report(&full("c2", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let a = f.gate(&sel("role=compute"), t0, W).expect("known scope");
    assert_eq!(a.verdict, Verdict::NoGo, "first reports are settling");
    assert!(a.blockers.iter().all(|b| b.code == "NODE_SETTLING"));
    let t1 = t0 + Duration::from_secs(11);
    f.apply_report(&heartbeat("c1", 2, 1), t1, W).expect("ok");
    f.apply_report(&heartbeat("c2", 2, 1), t1, W).expect("ok");
    f.tick(t1);
    let a = f.gate(&sel("role=compute"), t1, W).expect("ok");
    assert_eq!(a.verdict, Verdict::Go, "{a:?}");
    assert_eq!(a.ready, ["c1", "c2"]);
}

#[test]
fn critical_finding_blocks_and_names_node_and_subject() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    f.apply_report(
        &full(
            "c2",
            "compute",
            1,
            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")],
        ),
        t0,
        W,
    )
    .expect("ok");
    f.apply_report(
        &full(
            "c3",
            "compute",
            1,
            vec![finding("LINK_FLAPPING", Severity::Warning, "eth3")],
        ),
        t0,
        W,
    )
    .expect("ok");
    let a = f.gate(&sel("role=compute"), t0, W).expect("ok");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blocked, ["c2"]);
    assert_eq!(a.ready, ["c1", "c3"]);
    assert_eq!(a.blockers.len(), 1);
    assert_eq!(
        (
            a.blockers[0].node.as_str(),
            a.blockers[0].code.as_str(),
            a.blockers[0].subject.as_str()
        ),
        ("c2", "BOND_PORT_DOWN", "bond0/eth1")
    );
}

#[test]
fn silent_and_stale_nodes_block() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.upsert_node("c1", labels("compute"), t0, W).expect("ok");
    f.upsert_node("c2", labels("compute"), t0, W).expect("ok");
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let a = f.gate(&sel("role=compute"), t0, W).expect("ok");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blockers[0].code, "NODE_SILENT");
    assert_eq!(a.blockers[0].node, "c2");
    f.apply_report(&full("c2", "compute", 1, vec![]), t0, W)
        .expect("ok");
    assert_eq!(
        f.gate(&sel("role=compute"), t0, W).expect("ok").verdict,
        Verdict::Go
    );
    // c1 keeps heartbeating; c2 goes quiet.
    let t1 = t0 + Duration::from_secs(20);
    f.apply_report(&heartbeat("c1", 2, 1), t1, W).expect("ok");
    let t2 = t0 + Duration::from_secs(31);
    f.tick(t2);
    let a = f.gate(&sel("role=compute"), t2, W).expect("ok");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blocked, ["c2"]);
    assert_eq!(a.blockers[0].code, "NODE_STALE");
}

#[test]
fn heartbeat_for_unknown_state_asks_for_a_full_report() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    assert_eq!(
        f.apply_report(&heartbeat("c1", 5, 4), t0, W).expect("ok"),
        ReportOutcome::NeedFull
    );
    assert!(
        f.is_empty(),
        "nothing stored from a heartbeat without state"
    );
    f.apply_report(&full("c1", "compute", 6, vec![]), t0, W)
        .expect("ok");
    assert_eq!(
        f.apply_report(&heartbeat("c1", 7, 5), t0, W).expect("ok"),
        ReportOutcome::NeedFull
    );
    assert!(matches!(
        f.apply_report(&heartbeat("c1", 8, 6), t0, W).expect("ok"),
        ReportOutcome::Accepted { .. }
    ));
}

#[test]
fn stale_sequence_is_rejected_and_changes_nothing() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(&full("c1", "compute", 5, vec![]), t0, W)
        .expect("ok");
    let e = f.apply_report(
        &full(
            "c1",
            "compute",
            5,
            vec![finding("BOND_DOWN", Severity::Critical, "bond0")],
        ),
        t0,
        W,
    );
    assert!(matches!(e, Err(FleetError::StaleSequence { .. })));
    assert_eq!(f.gate(&sel(""), t0, W).expect("ok").verdict, Verdict::Go);
    // A new agent process (new boot id) starts again at 1.
    let mut r = full(
        "c1",
        "compute",
        1,
        vec![finding("BOND_DOWN", Severity::Critical, "bond0")],
    );
    r.boot_id = "boot-2".into();
    f.apply_report(&r, t0, W).expect("new boot accepted");
    assert_eq!(f.gate(&sel(""), t0, W).expect("ok").verdict, Verdict::NoGo);
}

#[test]
fn closed_inventory_rejects_unknown_nodes() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            closed_inventory: true,
            ..cfg()
        },
        W,
    );
    assert_eq!(
        f.apply_report(&full("x", "compute", 1, vec![]), t0, W),
        Err(FleetError::UnknownNode("x".into()))
    );
    assert!(f.is_empty());
}

#[test]
fn unknown_and_bad_scopes_are_errors_not_go() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    assert!(matches!(
        f.gate(&sel("role=comptue"), t0, W),
        Err(FleetError::UnknownScope(_))
    ));
    assert!(matches!(
        Selector::parse("role"),
        Err(FleetError::BadScope { .. })
    ));
    assert!(matches!(
        Selector::parse("role=a b"),
        Err(FleetError::BadScope { .. })
    ));
    // An empty fleet is never go.
    let empty = Fleet::new(cfg(), W);
    let a = empty.gate(&sel(""), t0, W).expect("ok");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blockers[0].code, "INVENTORY_EMPTY");
}

fn waiver(
    id: i64,
    node: &str,
    code: Option<&str>,
    subject: Option<&str>,
    expires: SystemTime,
) -> Waiver {
    Waiver {
        id,
        node: node.into(),
        code: code.map(Into::into),
        subject: subject.map(Into::into),
        reason: "replacement NIC scheduled".into(),
        author: "oncall".into(),
        created_at: W,
        expires_at: expires,
    }
}

#[test]
fn waiver_turns_a_specific_blocker_into_go_and_expires() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(
        &full(
            "c1",
            "compute",
            1,
            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")],
        ),
        t0,
        W,
    )
    .expect("ok");
    // A waiver for another subject changes nothing.
    let other = waiver(
        1,
        "c1",
        Some("BOND_PORT_DOWN"),
        Some("bond1/eth3"),
        W + Duration::from_secs(60),
    );
    let left = f.check_waiver(&other, W).expect("valid");
    f.add_waiver(other, left, t0);
    assert_eq!(f.gate(&sel(""), t0, W).expect("ok").verdict, Verdict::NoGo);
    let w = waiver(
        2,
        "c1",
        Some("BOND_PORT_DOWN"),
        Some("bond0/eth1"),
        W + Duration::from_secs(60),
    );
    let left = f.check_waiver(&w, W).expect("valid");
    f.add_waiver(w, left, t0);
    let a = f.gate(&sel(""), t0, W).expect("ok");
    assert_eq!(a.verdict, Verdict::Go);
    assert_eq!(
        a.waived.iter().map(|w| w.id).collect::<Vec<_>>(),
        [2],
        "the answer shows the waiver that changed it"
    );
    let s = f.summary("c1", t0).expect("node");
    assert_eq!(
        s.findings[0].waived_by,
        Some(2),
        "a waived finding is still shown, marked"
    );
    // Heartbeats keep it fresh; the waiver expires on its own.
    f.apply_report(&heartbeat("c1", 2, 1), t0 + Duration::from_secs(25), W)
        .expect("ok");
    let expired = f.tick(t0 + Duration::from_secs(61));
    assert_eq!(expired.iter().map(|w| w.id).collect::<Vec<_>>(), [1, 2]);
    f.apply_report(&heartbeat("c1", 3, 1), t0 + Duration::from_secs(50), W)
        .expect("ok");
    assert_eq!(
        f.gate(&sel(""), t0 + Duration::from_secs(61), W)
            .expect("ok")
            .verdict,
        Verdict::NoGo
    );
}

#[test]
fn waivers_are_validated() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let now = W + Duration::from_secs(1000);
    assert!(f
        .check_waiver(
            &waiver(1, "nope", None, None, now + Duration::from_secs(5)),
            now
        )
        .is_err());
    assert!(
        f.check_waiver(
            &waiver(1, "c1", None, None, now - Duration::from_secs(5)),
            now
        )
        .is_err(),
        "past expiry"
    );
    assert!(
        f.check_waiver(
            &waiver(1, "c1", None, None, now + Duration::from_secs(86_401)),
            now
        )
        .is_err(),
        "beyond the cap"
    );
    let mut w = waiver(1, "c1", None, None, now + Duration::from_secs(5));
    w.reason = " ".into();
    assert!(f.check_waiver(&w, now).is_err(), "reason required");
}

#[test]
fn waiver_without_code_does_not_hide_silence() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.upsert_node("c1", labels("compute"), t0, W).expect("ok");
    let w = waiver(1, "c1", None, None, W + Duration::from_secs(60));
    let left = f.check_waiver(&w, W).expect("valid");
    f.add_waiver(w, left, t0);
    assert_eq!(f.gate(&sel(""), t0, W).expect("ok").verdict, Verdict::NoGo);
    let w = waiver(
        2,
        "c1",
        Some("NODE_SILENT"),
        None,
        W + Duration::from_secs(60),
    );
    let left = f.check_waiver(&w, W).expect("valid");
    f.add_waiver(w, left, t0);
    assert_eq!(
        f.gate(&sel(""), t0, W).expect("ok").verdict,
        Verdict::Go,
        "naming NODE_SILENT waives it"
    );
}

#[test]
fn relabeling_moves_a_node_between_scopes() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(
        &full(
            "n1",
            "compute",
            1,
            vec![finding("BOND_DOWN", Severity::Critical, "bond0")],
        ),
        t0,
        W,
    )
    .expect("ok");
    f.apply_report(&full("n2", "control", 1, vec![]), t0, W)
        .expect("ok");
    assert_eq!(
        f.gate(&sel("role=control"), t0, W).expect("ok").verdict,
        Verdict::Go
    );
    // Issue 37: a blocked node does not move itself (see
    // `a_blocked_node_cannot_relabel_itself_out_of_its_scope`); once go it
    // may, and a healthy node that moves takes nothing bad along.
    f.apply_report(&full("n1", "compute", 2, vec![]), t0, W)
        .expect("ok");
    f.apply_report(
        &full(
            "n1",
            "control",
            3,
            vec![finding("BOND_DOWN", Severity::Critical, "bond0")],
        ),
        t0,
        W,
    )
    .expect("ok");
    assert_eq!(
        f.gate(&sel("role=compute"), t0, W).expect("ok").verdict,
        Verdict::NoGo,
        "went bad in the same report: stays where it was"
    );
    f.apply_report(&full("n1", "control", 4, vec![]), t0, W)
        .expect("ok");
    f.apply_report(&full("n1", "control", 5, vec![]), t0, W)
        .expect("ok");
    assert_eq!(
        f.gate(&sel("role=control"), t0, W).expect("ok").ready,
        ["n1", "n2"]
    );
    assert!(matches!(
        f.gate(&sel("role=compute"), t0, W),
        Err(FleetError::UnknownScope(_))
    ));
}

/// xorshift64*: deterministic pseudo-random numbers for the property test.
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

/// Property: whatever sequence of reports, heartbeats, silences, waivers,
/// waiver removals and clock advances happens, the gate never says go while
/// any node in scope has an unwaived critical finding, is stale, or is silent;
/// and it says go when none of that holds and every node has settled. The
/// reference is recomputed from scratch by brute force each step.
#[test]
fn gate_never_says_go_while_a_blocker_exists() {
    let nodes = ["a", "b", "c", "d"];
    let roles = ["compute", "control"];
    let subjects = ["bond0/eth0", "bond0/eth1"];
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let t0 = Instant::now();
        let mut now = t0;
        let c = FleetConfig {
            ttl: Duration::from_secs(30),
            settle: Duration::from_secs(5),
            closed_inventory: false,
            max_waiver: Duration::from_secs(3600),
            min_waiver: Duration::from_secs(1),
            ..FleetConfig::default()
        };
        let mut f = Fleet::new(c.clone(), W);
        // One role scope with kept counts, the other answered from the label
        // index: both are checked against the reference below.
        f.track_scope(&sel("role=control"));
        // Reference model.
        struct Ref {
            role: &'static str,
            findings: Vec<Finding>,
            last: Instant,
            changed: Instant,
            seq: u64,
            state_seq: u64,
        }
        let mut reference: BTreeMap<&str, Ref> = BTreeMap::new();
        let mut waivers: Vec<(Waiver, Instant)> = Vec::new();
        let mut next_id = 1;
        for _step in 0..60 {
            match rng.below(6) {
                0 | 1 => {
                    let n = nodes[rng.below(4) as usize];
                    let role = roles[rng.below(2) as usize];
                    let mut fs = Vec::new();
                    for s in subjects {
                        match rng.below(4) {
                            0 => fs.push(finding("BOND_PORT_DOWN", Severity::Critical, s)),
                            1 => fs.push(finding("LINK_FLAPPING", Severity::Warning, s)),
                            _ => {}
                        }
                    }
                    let seq = reference.get(n).map_or(1, |r| r.seq + 1);
                    f.apply_report(&full(n, role, seq, fs.clone()), now, W)
                        .expect("accepted");
                    let keys = |v: &Vec<Finding>| {
                        v.iter()
                            .map(|f| (f.code, f.subject.clone()))
                            .collect::<BTreeSet<_>>()
                    };
                    let changed = match reference.get(n) {
                        Some(r)
                            if keys(&r.findings) == keys(&fs)
                                && now.saturating_duration_since(r.last) < c.ttl =>
                        {
                            r.changed
                        }
                        Some(r) if keys(&r.findings) == keys(&fs) => r.changed,
                        _ => now,
                    };
                    // Issue 37: a node moves to other labels only while it
                    // is go before and after the report.
                    let go = |name: &str, fs: &[Finding], last: Instant, changed: Instant| {
                        now.saturating_duration_since(last) < c.ttl
                            && now.saturating_duration_since(changed) >= c.settle
                            && !fs.iter().any(|fd| {
                                fd.severity == Severity::Critical
                                    && !waivers.iter().any(|(w, exp)| {
                                        *exp > now && w.covers(name, fd.code, &fd.subject)
                                    })
                            })
                    };
                    let role = match reference.get(n) {
                        Some(r)
                            if r.role != role
                                && !(go(n, &r.findings, r.last, r.changed)
                                    && go(n, &fs, now, changed)) =>
                        {
                            r.role
                        }
                        _ => role,
                    };
                    reference.insert(
                        n,
                        Ref {
                            role,
                            findings: fs,
                            last: now,
                            changed,
                            seq,
                            state_seq: seq,
                        },
                    );
                }
                2 => {
                    let n = nodes[rng.below(4) as usize];
                    if let Some(r) = reference.get_mut(n) {
                        r.seq += 1;
                        let out = f
                            .apply_report(&heartbeat(n, r.seq, r.state_seq), now, W)
                            .expect("accepted");
                        // A go node whose labels were held back asks for the
                        // full report that applies them (the random full
                        // reports above stand for it).
                        if matches!(out, ReportOutcome::Accepted { .. }) {
                            r.last = now;
                        }
                    }
                }
                3 => {
                    let n = nodes[rng.below(4) as usize];
                    if reference.contains_key(n) {
                        let subject = if rng.below(2) == 0 {
                            Some(subjects[rng.below(2) as usize])
                        } else {
                            None
                        };
                        let code = if rng.below(2) == 0 {
                            Some("BOND_PORT_DOWN")
                        } else {
                            None
                        };
                        let life = Duration::from_secs(1 + rng.below(60));
                        let wall_now = W + now.duration_since(t0);
                        let w = waiver(next_id, n, code, subject, wall_now + life);
                        next_id += 1;
                        let left = f.check_waiver(&w, wall_now).expect("valid waiver");
                        f.add_waiver(w.clone(), left, now);
                        waivers.push((w, now + life));
                    }
                }
                4 => {
                    if !waivers.is_empty() {
                        let i = rng.below(waivers.len() as u64) as usize;
                        let (w, _) = waivers.remove(i);
                        let _ = f.remove_waiver(w.id, now);
                    }
                }
                _ => {
                    now += Duration::from_secs(rng.below(20));
                    f.tick(now);
                    waivers.retain(|(_, exp)| *exp > now);
                }
            }
            f.tick(now);
            for scope in ["", "role=compute", "role=control"] {
                let s = sel(scope);
                let in_scope: Vec<(&&str, &Ref)> = reference
                    .iter()
                    .filter(|(_, r)| scope.is_empty() || scope == format!("role={}", r.role))
                    .collect();
                let answer = f.gate(&s, now, W);
                if in_scope.is_empty() {
                    if let Ok(a) = answer {
                        assert_eq!(a.verdict, Verdict::NoGo, "seed {seed}: empty scope said go");
                    }
                    continue;
                }
                let a = answer.expect("scope with nodes");
                let mut must_block = false;
                let mut all_settled = true;
                for (name, r) in &in_scope {
                    let stale = now.saturating_duration_since(r.last) >= c.ttl;
                    let unwaived = r.findings.iter().any(|fd| {
                        fd.severity == Severity::Critical
                            && !waivers
                                .iter()
                                .any(|(w, exp)| *exp > now && w.covers(name, fd.code, &fd.subject))
                    });
                    must_block |= stale || unwaived;
                    all_settled &= now.saturating_duration_since(r.changed) >= c.settle;
                }
                if must_block {
                    assert_eq!(
                        a.verdict,
                        Verdict::NoGo,
                        "seed {seed}: go while a blocker exists in scope `{scope}`: {a:#?}"
                    );
                } else if all_settled {
                    assert_eq!(
                        a.verdict,
                        Verdict::Go,
                        "seed {seed}: no-go without a blocker in scope `{scope}`: {a:#?}"
                    );
                }
                assert_eq!(a.ready.len() + a.blocked.len(), in_scope.len());
            }
        }
    }
}

#[test]
fn stale_node_waived_by_node_stale_is_go_and_tick_terminates() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let w = waiver(
        1,
        "c1",
        Some("NODE_STALE"),
        None,
        W + Duration::from_secs(600),
    );
    let left = f.check_waiver(&w, W).expect("valid");
    f.add_waiver(w, left, t0);
    let t1 = t0 + Duration::from_secs(100);
    f.tick(t1);
    let a = f.gate(&sel(""), t1, W).expect("ok");
    assert_eq!(a.verdict, Verdict::Go);
    assert_eq!(a.waived.len(), 1);
    let t2 = t0 + Duration::from_secs(601);
    f.tick(t2);
    assert_eq!(
        f.gate(&sel(""), t2, W).expect("ok").verdict,
        Verdict::NoGo,
        "stale again once the waiver expires"
    );
}

/// A fleet that reports for hours must not accumulate deadlines: each node
/// has at most one TTL and one settle deadline pending, however many reports
/// it sends. (The load bench found the heap growing by one entry per report,
/// ~5 MiB a minute at 10k nodes, each popped entry pushing another.)
#[test]
fn deadlines_stay_bounded_by_the_node_count() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    let nodes = ["c1", "c2", "c3"];
    for n in nodes {
        f.apply_report(&full(n, "compute", 1, vec![]), t0, W)
            .expect("ok");
    }
    let mut seq = 1;
    // Two simulated hours: a heartbeat from every node every second, the
    // sweeper ticking as the server does.
    for s in 1..=7_200u64 {
        let now = t0 + Duration::from_secs(s);
        seq += 1;
        for n in nodes {
            f.apply_report(&heartbeat(n, seq, 1), now, W).expect("ok");
        }
        f.tick(now);
        assert!(
            f.pending_deadlines() <= 2 * nodes.len(),
            "after {s} s: {} deadlines pending for {} nodes",
            f.pending_deadlines(),
            nodes.len()
        );
    }
    // And staleness still works: silence for a TTL -> not go.
    let later = t0 + Duration::from_secs(7_200 + 31);
    f.tick(later);
    let a = f.gate(&sel("role=compute"), later, W).expect("ok");
    assert_eq!(a.verdict, Verdict::NoGo, "{a:?}");
    assert!(a.blockers.iter().all(|b| b.code == "NODE_STALE"), "{a:?}");
}

/// A gate question is a read: asking about any number of selectors leaves
/// the tracked scopes as configured, and an untracked selector gets the same
/// answer as the same selector tracked.
#[test]
fn gate_reads_leave_the_fleet_unchanged() {
    let t0 = Instant::now();
    let c = FleetConfig {
        settle: Duration::ZERO,
        ..cfg()
    };
    let mut tracked = Fleet::new(c.clone(), W);
    let mut untracked = Fleet::new(c, W);
    tracked.track_scope(&sel("role=compute,rack=r1"));
    for f in [&mut tracked, &mut untracked] {
        for (i, rack) in ["r1", "r1", "r2"].into_iter().enumerate() {
            let node = format!("c{i}");
            let mut r = full(&node, "compute", 1, vec![]);
            if let ReportBody::Full { labels, .. } = &mut r.body {
                labels.insert("rack".into(), rack.into());
            }
            if i == 1 {
                r = match r.body {
                    ReportBody::Full { labels, .. } => Report {
                        body: ReportBody::Full {
                            labels,
                            state: Box::new(NodeState::new(
                                node.clone(),
                                &Snapshot::default(),
                                vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0")],
                            )),
                        },
                        ..r
                    },
                    ReportBody::Heartbeat { .. } => unreachable!("built as full"),
                };
            }
            f.apply_report(&r, t0, W).expect("ok");
        }
    }
    let before = format!("{untracked:?}");
    for i in 0..300 {
        let _ = untracked.gate(&sel(&format!("rack=x{i}")), t0, W);
        let _ = untracked.gate(&sel("rack=r1"), t0, W);
    }
    assert_eq!(
        untracked.tracked_scopes(),
        1,
        "only the whole fleet is tracked"
    );
    assert_eq!(
        format!("{untracked:?}"),
        before,
        "a gate read changed the fleet"
    );
    let s = sel("role=compute,rack=r1");
    let a = tracked.gate(&s, t0, W).expect("tracked");
    let b = untracked.gate(&s, t0, W).expect("untracked");
    assert_eq!(a, b);
    assert_eq!(a.ready, ["c0"]);
    assert_eq!(a.blocked, ["c1"]);
    assert!(matches!(
        untracked.gate(&sel("role=compute,rack=r9"), t0, W),
        Err(FleetError::UnknownScope(_))
    ));
    // Relabeling moves a node in the label index too.
    untracked
        .upsert_node(
            "c2",
            labels("compute")
                .into_iter()
                .chain([("rack".into(), "r1".into())])
                .collect(),
            t0,
            W,
        )
        .expect("relabel");
    let b = untracked.gate(&s, t0, W).expect("untracked");
    assert_eq!(b.ready, ["c0", "c2"]);
    assert!(matches!(
        untracked.gate(&sel("rack=r2"), t0, W),
        Err(FleetError::UnknownScope(_))
    ));
}

/// Issue 16, 1(a): an inventoried node's labels are the inventory's; a
/// report with other labels does not move it out of its scope.
#[test]
fn a_report_cannot_move_an_inventoried_node_out_of_its_scope() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.upsert_node("b2", labels("batch"), t0, W).expect("node");
    let bad = vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")];
    f.apply_report(&full("b2", "batch", 1, bad.clone()), t0, W)
        .expect("ok");
    let out = f
        .apply_report(&full("b2", "other", 2, bad), t0, W)
        .expect("accepted, labels ignored");
    assert!(matches!(
        out,
        ReportOutcome::Accepted {
            relabeled: None,
            ..
        }
    ));
    let a = f
        .gate(&sel("role=batch"), t0, W)
        .expect("scope still known");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blocked, ["b2"]);
    // A node its agent added keeps taking its labels from its agent (once
    // it is go: after its settle time here).
    f.apply_report(&full("c9", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let t1 = t0 + Duration::from_secs(11);
    let out = f
        .apply_report(&full("c9", "batch", 2, vec![]), t1, W)
        .expect("ok");
    assert!(matches!(
        out,
        ReportOutcome::Accepted {
            relabeled: Some(_),
            ..
        }
    ));
    assert!(f
        .gate(&sel("role=batch"), t1, W)
        .expect("ok")
        .ready
        .contains(&"c9".to_string()));
}

/// Issue 16, 1(b): a severity (or message) change restarts the settle time.
#[test]
fn a_severity_flip_restarts_the_settle_time() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    let sev = |s| vec![finding("BOND_PORT_DOWN", s, "bond0/eth1")];
    f.apply_report(&full("c1", "compute", 1, sev(Severity::Critical)), t0, W)
        .expect("ok");
    let mut t = t0;
    for seq in 2..100 {
        t += Duration::from_millis(500);
        let s = if seq % 2 == 0 {
            Severity::Warning
        } else {
            Severity::Critical
        };
        f.apply_report(&full("c1", "compute", seq, sev(s)), t, W)
            .expect("ok");
        f.tick(t);
        let a = f.gate(&sel("role=compute"), t, W).expect("ok");
        assert_eq!(a.verdict, Verdict::NoGo, "seq {seq}: {a:?}");
    }
    let mut msg = sev(Severity::Warning);
    f.apply_report(&full("c1", "compute", 100, msg.clone()), t, W)
        .expect("ok");
    let t = t + Duration::from_secs(11);
    msg[0].message = "another message".into();
    f.apply_report(&full("c1", "compute", 101, msg), t, W)
        .expect("ok");
    f.tick(t);
    assert_eq!(
        f.status("c1"),
        Some(Status::Settling),
        "a new message settles again"
    );
}

/// Issue 16, 1(c): a sequence far ahead is refused, not adopted; a new
/// boot id resets the sequence.
#[test]
fn a_far_sequence_is_refused_and_a_new_boot_resets() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.apply_report(&full("c1", "compute", 5, vec![]), t0, W)
        .expect("ok");
    let e = f
        .apply_report(&full("c1", "compute", 1 << 63, vec![]), t0, W)
        .expect_err("jump");
    assert!(matches!(e, FleetError::SequenceJump { last: 5, .. }), "{e}");
    f.apply_report(&full("c1", "compute", 6, vec![]), t0, W)
        .expect("the real agent goes on");
    f.apply_report(&full("c1", "compute", 6 + MAX_SEQ_JUMP, vec![]), t0, W)
        .expect("a jump of exactly the limit is allowed");
    let mut other = full("c1", "compute", 1, vec![]);
    other.boot_id = "boot-2".into();
    f.apply_report(&other, t0, W).expect("new boot id resets");
}

#[test]
fn a_state_with_too_many_interfaces_is_too_large() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    let mut r = full("c1", "compute", 1, vec![]);
    if let ReportBody::Full { state, .. } = &mut r.body {
        let one = preflight_model::Interface::default();
        state.interfaces = vec![one; MAX_STATE_ITEMS + 1];
    }
    let e = f.apply_report(&r, t0, W).expect_err("too many");
    assert!(matches!(e, FleetError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("4097 interfaces"), "{e}");
    assert_eq!(f.status("c1"), None, "nothing stored");
}

fn rack_full(node: &str, role: &str, rack: &str, seq: u64, findings: Vec<Finding>) -> Report {
    let mut r = full(node, role, seq, findings);
    if let ReportBody::Full { labels, .. } = &mut r.body {
        labels.insert("rack".into(), rack.into());
    }
    r
}

#[test]
fn a_cached_answer_changes_with_a_report_in_its_scope_only() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.track_scope(&sel("role=compute"));
    for (n, rack) in [("c1", "r1"), ("c2", "r2")] {
        f.apply_report(&rack_full(n, "compute", rack, 1, vec![]), t0, W)
            .expect("ok");
    }
    f.apply_report(&rack_full("k1", "control", "r3", 1, vec![]), t0, W)
        .expect("ok");
    // A tracked scope, an untracked one, and one of two terms.
    let scopes = [
        sel("role=compute"),
        sel("rack=r1"),
        sel("role=compute,rack=r1"),
    ];
    let keys = |f: &Fleet| {
        scopes
            .iter()
            .map(|s| f.scope_key(s).expect("known"))
            .collect::<Vec<_>>()
    };
    let before = keys(&f);
    // Outside every one of them: a full report that blocks its node.
    let broken = vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")];
    f.apply_report(&rack_full("k1", "control", "r3", 2, broken.clone()), t0, W)
        .expect("ok");
    assert_eq!(keys(&f), before, "a report outside the scopes");
    // A heartbeat in scope that changes nothing an answer shows.
    f.apply_report(&heartbeat("c1", 2, 1), t0 + Duration::from_secs(5), W)
        .expect("ok");
    assert_eq!(keys(&f), before, "a heartbeat that changes nothing");
    // In all three: c1 breaks.
    f.apply_report(
        &rack_full("c1", "compute", "r1", 3, broken),
        t0 + Duration::from_secs(6),
        W,
    )
    .expect("ok");
    let after = keys(&f);
    for (i, s) in scopes.iter().enumerate() {
        assert_ne!(after[i], before[i], "{}", s.text());
    }
    // c2 is in role=compute but not in rack=r1.
    f.apply_report(
        &rack_full("c2", "compute", "r2", 2, vec![]),
        t0 + Duration::from_secs(7),
        W,
    )
    .expect("ok");
    let last = keys(&f);
    assert_ne!(last[0], after[0], "role=compute has c2");
    assert_eq!(last[1], after[1], "rack=r1 does not");
    let (a, _) = f
        .gate_until(&sel("rack=r1"), t0 + Duration::from_secs(7), W, true)
        .expect("known");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(f.scope_key(&sel("rack=r9")), None, "an unknown scope");
}

#[test]
fn a_cached_go_ends_at_the_ttl_of_a_member() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let t1 = t0 + Duration::from_secs(10);
    f.apply_report(&full("c2", "compute", 1, vec![]), t1, W)
        .expect("ok");
    let s = sel("role=compute");
    let (a, until) = f.gate_until(&s, t1, W, true).expect("known");
    assert_eq!(a.verdict, Verdict::Go);
    let ttl_c1 = t0 + Duration::from_secs(30);
    assert_eq!(until, ttl_c1, "valid until c1's TTL runs out, no later");
    let key = f.scope_key(&s).expect("known");
    // At the deadline, before the sweeper got to it: nothing touched the
    // scope, but the answer is out of date (validity not after now).
    let (a, until) = f.gate_until(&s, ttl_c1, W, true).expect("known");
    assert_eq!(f.scope_key(&s), Some(key.clone()));
    assert!(until <= ttl_c1, "out of date: {a:?}");
    // Processing the deadline makes it no-go and moves the key.
    f.tick(ttl_c1);
    let (a, until) = f.gate_until(&s, ttl_c1, W, true).expect("known");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert_eq!(a.blockers[0].code, preflight_model::Code::NodeStale);
    assert!(until > ttl_c1, "valid again after the tick");
    assert_ne!(f.scope_key(&s), Some(key));
}

#[test]
fn next_change_is_the_first_ttl_end_and_moves_on_after_the_tick() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    assert_eq!(
        f.next_change(),
        None,
        "an empty fleet changes by itself never"
    );
    f.apply_report(&full("c1", "compute", 1, vec![]), t0, W)
        .expect("ok");
    let t1 = t0 + Duration::from_secs(10);
    f.apply_report(&full("c2", "compute", 1, vec![]), t1, W)
        .expect("ok");
    let ttl_c1 = t0 + Duration::from_secs(30);
    assert_eq!(f.next_change(), Some(ttl_c1));
    // A heartbeat of c1 moves its TTL end: c2's comes first now.
    let t2 = t0 + Duration::from_secs(20);
    f.apply_report(&heartbeat("c1", 2, 1), t2, W).expect("ok");
    assert_eq!(f.next_change(), Some(t1 + Duration::from_secs(30)));
    // Past c2's TTL end, before the tick, it is still due (a reader
    // ticks); after the tick c2 is stale and c1's end is next.
    let late = t1 + Duration::from_secs(31);
    assert!(f.next_change().is_some_and(|at| at <= late));
    f.tick(late);
    assert_eq!(f.next_change(), Some(t2 + Duration::from_secs(30)));
}

#[test]
fn a_cached_go_ends_when_its_waiver_expires() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ttl: Duration::from_secs(300),
            ..cfg()
        },
        W,
    );
    f.apply_report(
        &full(
            "c1",
            "compute",
            1,
            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")],
        ),
        t0,
        W,
    )
    .expect("ok");
    let s = sel("");
    let key = f.scope_key(&s).expect("the fleet");
    let w = waiver(
        1,
        "c1",
        Some("BOND_PORT_DOWN"),
        None,
        W + Duration::from_secs(60),
    );
    let left = f.check_waiver(&w, W).expect("valid");
    f.add_waiver(w, left, t0);
    assert_ne!(f.scope_key(&s), Some(key), "a waiver changes the answer");
    let (a, until) = f.gate_until(&s, t0, W, false).expect("known");
    assert_eq!(a.verdict, Verdict::Go);
    assert!(a.ready.is_empty(), "ready=false leaves the list out");
    let expiry = t0 + Duration::from_secs(60);
    assert_eq!(until, expiry);
    let (_, until) = f.gate_until(&s, expiry, W, false).expect("known");
    assert!(until <= expiry, "out of date at the expiry");
    let key = f.scope_key(&s);
    assert_eq!(f.tick(expiry).len(), 1);
    assert_ne!(f.scope_key(&s), key);
    let (a, _) = f.gate_until(&s, expiry, W, true).expect("known");
    assert_eq!(a.verdict, Verdict::NoGo);
    assert!(a.waived.is_empty());
}

/// The answer cache's rule, played against the truth at random: reports,
/// heartbeats, waivers added and removed, time moving with and without the
/// sweeper. Whatever a cache (kept by `scope_key`, served while `now` is
/// before its validity, redone after a tick when out of date) would serve
/// equals the answer the fleet gives once every deadline up to `now` has
/// been processed.
#[test]
fn a_cached_answer_is_always_the_current_one() {
    let nodes = ["a", "b", "c", "d"];
    let roles = ["compute", "control"];
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let t0 = Instant::now();
        let mut now = t0;
        let mut f = Fleet::new(
            FleetConfig {
                ttl: Duration::from_secs(30),
                settle: Duration::from_secs(5),
                closed_inventory: false,
                max_waiver: Duration::from_secs(3600),
                min_waiver: Duration::from_secs(1),
                ..FleetConfig::default()
            },
            W,
        );
        f.track_scope(&sel("role=control"));
        let mut seqs: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut cache: BTreeMap<String, (ScopeKey, Instant, GateAnswer)> = BTreeMap::new();
        let mut next_id = 1;
        for step in 0..80 {
            match rng.below(7) {
                0 | 1 => {
                    let n = nodes[rng.below(4) as usize];
                    let role = roles[rng.below(2) as usize];
                    let fs = match rng.below(4) {
                        0 => vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")],
                        1 => vec![finding("LINK_FLAPPING", Severity::Warning, "eth2")],
                        // Two blockers, reported out of order.
                        2 => vec![
                            finding("BOND_PORT_DOWN", Severity::Critical, "bond1/eth4"),
                            finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth3"),
                            finding("LINK_NO_CARRIER", Severity::Critical, "eth3"),
                        ],
                        _ => vec![],
                    };
                    let e = seqs.entry(n).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = e.0;
                    f.apply_report(&full(n, role, e.0, fs), now, W)
                        .expect("accepted");
                }
                2 => {
                    let n = nodes[rng.below(4) as usize];
                    if let Some(e) = seqs.get_mut(n) {
                        e.0 += 1;
                        f.apply_report(&heartbeat(n, e.0, e.1), now, W)
                            .expect("accepted");
                    }
                }
                3 => {
                    let n = nodes[rng.below(4) as usize];
                    if seqs.contains_key(n) {
                        let code = ["BOND_PORT_DOWN", "NODE_STALE"][rng.below(2) as usize];
                        let wall_now = W + now.duration_since(t0);
                        let life = Duration::from_secs(1 + rng.below(40));
                        let w = waiver(next_id, n, Some(code), None, wall_now + life);
                        next_id += 1;
                        let left = f.check_waiver(&w, wall_now).expect("valid waiver");
                        f.add_waiver(w, left, now);
                    }
                }
                4 => {
                    if let Some(w) = f.waivers().first() {
                        f.remove_waiver(w.id, now).expect("active");
                    }
                }
                // Time passes; the sweeper may or may not have run yet.
                5 => now += Duration::from_secs(rng.below(25)),
                _ => {
                    now += Duration::from_millis(rng.below(3000));
                    f.tick(now);
                }
            }
            for scope in ["", "role=compute", "role=control"] {
                let s = sel(scope);
                let Some(key) = f.scope_key(&s) else {
                    continue;
                };
                if f.gate(&s, now, W).is_err() {
                    // A tracked scope nobody is in (yet): an error, not cached.
                    continue;
                }
                let served = match cache.get(scope) {
                    Some((k, until, a)) if *k == key && now < *until => a.clone(),
                    _ => {
                        let (mut a, mut until) = f.gate_until(&s, now, W, true).expect("known");
                        let mut key = key;
                        if until <= now {
                            f.tick(now);
                            key = f.scope_key(&s).expect("known");
                            (a, until) = f.gate_until(&s, now, W, true).expect("known");
                            assert!(until > now, "seed {seed}: valid once ticked");
                        }
                        cache.insert(scope.to_owned(), (key, until, a.clone()));
                        a
                    }
                };
                // The API's answer is the serialized answer, byte for byte,
                // and its validity never outlasts the member-by-member one.
                let truth_until = f.gate_until(&s, now, W, true).expect("known").1;
                let json = f.gate_json(&s, now, W, true).expect("known");
                assert!(json.until <= truth_until, "seed {seed} step {step}");
                f.tick(now);
                let truth = f.gate(&s, now, W).expect("known");
                let json = f.gate_json(&s, now, W, true).expect("known");
                assert!(json.until > now, "seed {seed}: valid once ticked");
                same_json(
                    &json.body.clone().join(),
                    &truth,
                    &format!("seed {seed} step {step} `{scope}`"),
                );
                assert_eq!(json.verdict, truth.verdict);
                let short = f.gate_json(&s, now, W, false).expect("known").body.join();
                let mut expected = serde_json::to_value(&truth).expect("serializes");
                expected.as_object_mut().expect("object").remove("ready");
                assert_eq!(
                    clear_clock_text(serde_json::from_slice(&short).expect("json")),
                    clear_clock_text(expected),
                    "seed {seed} step {step}: ready=false"
                );
                assert_eq!(
                    (
                        &served.verdict,
                        &served.blocked,
                        &served.ready,
                        &served.waived
                    ),
                    (&truth.verdict, &truth.blocked, &truth.ready, &truth.waived),
                    "seed {seed} step {step} scope `{scope}`"
                );
                // Messages that count seconds may be up to TEXT_REFRESH old.
                let fixed = |b: &[preflight_model::report::Blocker]| {
                    b.iter()
                        .map(|b| {
                            let mut b = b.clone();
                            if matches!(b.code, Code::NodeStale | Code::NodeSettling) {
                                b.message.clear();
                            }
                            b
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    fixed(&served.blockers),
                    fixed(&truth.blockers),
                    "seed {seed} step {step}"
                );
            }
        }
    }
}

/// `body` is `truth` serialized: byte for byte, or, when a blocker's text
/// counts seconds (stale, settling: kept up to `TEXT_REFRESH`), equal but
/// for those messages.
fn same_json(body: &[u8], truth: &GateAnswer, what: &str) {
    let expected = serde_json::to_string(truth).expect("serializes");
    let counts_seconds = truth
        .blockers
        .iter()
        .any(|b| matches!(b.code, Code::NodeStale | Code::NodeSettling));
    if !counts_seconds {
        assert_eq!(
            std::str::from_utf8(body).expect("utf-8"),
            expected,
            "{what}"
        );
        return;
    }
    assert_eq!(
        clear_clock_text(serde_json::from_slice(body).expect("json")),
        clear_clock_text(serde_json::from_str(&expected).expect("json")),
        "{what}"
    );
}

/// An answer with the messages that count seconds (stale, settling) blanked.
fn clear_clock_text(mut v: serde_json::Value) -> serde_json::Value {
    for b in v["blockers"].as_array_mut().expect("blockers") {
        if matches!(b["code"].as_str(), Some("NODE_STALE" | "NODE_SETTLING")) {
            b["message"] = serde_json::Value::Null;
        }
    }
    v
}

/// The ready list, blockers and blocked names kept in ranges (`ready`)
/// split as a scope grows past `MAX_CHUNK` members per range: with 1,500 nodes joining in random
/// order, flipping between go and not go, moving between scopes and
/// leaving, every answer is still the serialized answer, byte for byte.
#[test]
fn ready_lists_kept_in_ranges_stay_exact_as_scopes_grow_and_shrink() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    f.track_scope(&sel("role=control"));
    let roles = ["compute", "control"];
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let check = |f: &Fleet, now: Instant, step: usize| {
        for scope in ["", "role=compute", "role=control"] {
            let s = sel(scope);
            let Ok(truth) = f.gate(&s, now, W) else {
                continue;
            };
            let json = f.gate_json(&s, now, W, true).expect("known");
            same_json(
                &json.body.clone().join(),
                &truth,
                &format!("step {step} `{scope}`"),
            );
        }
    };
    let mut now = t0;
    for step in 0..4000 {
        let name = format!("n{:05}", rng.below(1500) * 7 % 1500);
        match rng.below(10) {
            // Reports: half of them clean, half with a critical finding.
            0..=5 => {
                let seq = seqs.entry(name.clone()).or_insert(0);
                *seq += 1;
                let fs = if rng.below(2) == 0 {
                    vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")]
                } else {
                    vec![]
                };
                let role = roles[rng.below(2) as usize];
                f.apply_report(&full(&name, role, *seq, fs), now, W)
                    .expect("accepted");
            }
            // The inventory moves a node to the other role.
            6 | 7 => {
                let role = roles[rng.below(2) as usize];
                f.upsert_node(&name, labels(role), now, W).expect("valid");
            }
            8 => {
                if f.remove_node(&name).is_ok() {
                    seqs.remove(&name);
                }
            }
            _ => {
                now += Duration::from_secs(rng.below(4));
                f.tick(now);
            }
        }
        if step % 97 == 0 {
            f.tick(now);
            check(&f, now, step);
        }
    }
    assert!(
        f.len() > 2 * ready::MAX_CHUNK,
        "enough nodes to split ranges"
    );
    let whole = &f.scopes[&sel("")];
    assert!(
        whole.names.len() > 2 && whole.blocked.len() > 2,
        "the blocked names and blockers split into ranges too"
    );
    f.tick(now);
    check(&f, now, 4000);
}

#[test]
fn the_page_gets_nodes_that_are_not_go_first_and_at_most_its_limit() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    for i in 0..20 {
        let findings = if i % 5 == 3 {
            vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")]
        } else {
            vec![]
        };
        f.apply_report(&full(&format!("n{i:02}"), "compute", 1, findings), t0, W)
            .expect("ok");
    }
    f.upsert_node("a-silent", labels("compute"), t0, W)
        .expect("inventoried");
    let names = |limit| -> Vec<String> {
        f.page_summaries(t0, limit)
            .into_iter()
            .map(|s| s.node)
            .collect()
    };
    // Not go (one silent, four blocked) by name, then go by name.
    assert_eq!(
        names(7),
        ["a-silent", "n03", "n08", "n13", "n18", "n00", "n01"]
    );
    assert_eq!(names(3), ["a-silent", "n03", "n08"]);
    assert_eq!(names(0), Vec::<String>::new());
    let all = names(1000);
    assert_eq!(all.len(), 21);
    let mut go: Vec<_> = all[5..].to_vec();
    go.sort();
    assert_eq!(all[5..], go[..], "go nodes in name order");
}

/// Issue 37, item 2: with agent-added nodes, node-a reports a critical
/// finding under `role=compute` (that gate: no-go), then the same finding
/// under `role=comptue`. The `role=compute` gate turned go while node-a
/// still had the finding. A node may not change its scope while it blocks:
/// the labels wait until it is go, and its heartbeat then asks for the full
/// report that applies them.
#[test]
fn a_blocked_node_cannot_relabel_itself_out_of_its_scope() {
    let t0 = Instant::now();
    let mut f = Fleet::new(
        FleetConfig {
            settle: Duration::ZERO,
            ..cfg()
        },
        W,
    );
    let bad = vec![finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1")];
    f.apply_report(&full("node-a", "compute", 1, bad.clone()), t0, W)
        .expect("ok");
    f.apply_report(&full("node-b", "compute", 1, vec![]), t0, W)
        .expect("ok");
    assert_eq!(
        f.gate(&sel("role=compute"), t0, W).expect("ok").verdict,
        Verdict::NoGo
    );
    let out = f
        .apply_report(&full("node-a", "comptue", 2, bad), t0, W)
        .expect("accepted, labels held back");
    assert!(matches!(
        out,
        ReportOutcome::Accepted {
            relabeled: None,
            ..
        }
    ));
    let a = f.gate(&sel("role=compute"), t0, W).expect("scope");
    assert_eq!(a.verdict, Verdict::NoGo, "still blocks its own scope");
    assert_eq!(a.blocked, ["node-a"]);
    assert_eq!(
        f.labels("node-a").map(Labels::to_map),
        Some(labels("compute"))
    );
    // Healthy again, still asking for the other labels: it may move now.
    let out = f
        .apply_report(&full("node-a", "comptue", 3, vec![]), t0, W)
        .expect("ok");
    assert!(
        matches!(
            out,
            ReportOutcome::Accepted {
                relabeled: None,
                ..
            }
        ),
        "was not go before this report: held once more"
    );
    assert_eq!(
        f.apply_report(&heartbeat("node-a", 4, 3), t0, W)
            .expect("ok"),
        ReportOutcome::NeedFull,
        "a go node with labels held back asks for a full report"
    );
    let out = f
        .apply_report(&full("node-a", "comptue", 5, vec![]), t0, W)
        .expect("ok");
    assert!(matches!(
        out,
        ReportOutcome::Accepted {
            relabeled: Some(_),
            ..
        }
    ));
    assert_eq!(
        f.gate(&sel("role=compute"), t0, W).expect("ok").ready,
        ["node-b"]
    );
    assert_eq!(
        f.apply_report(&heartbeat("node-a", 6, 5), t0, W)
            .expect("ok"),
        ReportOutcome::Accepted {
            full: false,
            new_node: false,
            relabeled: None
        },
        "nothing held back any more"
    );
}

/// A prepared report's state is the one the fleet keeps: moved into its
/// `Arc` ahead of the lock, never copied (issue 32, the report path).
#[test]
fn a_prepared_reports_state_is_kept_not_copied() {
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg(), W);
    let r = PreparedReport::from(full("c1", "compute", 1, vec![]));
    let PreparedBody::Full { state, .. } = &r.body else {
        panic!("built as full");
    };
    let prepared = Arc::clone(state.state());
    f.apply_prepared(r, t0, W).expect("accepted");
    let kept = f.state("c1").expect("kept");
    assert!(Arc::ptr_eq(&prepared, &kept), "the state was copied");
}

/// A state parsed from JSON has room to spare in its lists (they grow by
/// doubling); the fleet keeps it for every node, so it keeps none.
#[test]
fn a_prepared_state_keeps_no_spare_room_in_its_lists() {
    let mut state = NodeState::new("c1".into(), &Snapshot::default(), vec![]);
    state.findings = (0..5)
        .map(|i| finding("BOND_PORT_DOWN", Severity::Critical, &format!("bond0/e{i}")))
        .collect();
    let json = serde_json::to_vec(&state).expect("serializes");
    let parsed: Box<NodeState> = serde_json::from_slice(&json).expect("parses");
    let prepared = Prepared::new(parsed);
    let kept = prepared.state();
    assert_eq!(kept.findings.len(), 5);
    assert_eq!(kept.findings.capacity(), 5, "spare room kept");
}
