//! The gate's answer at fleet scale, in process: no HTTP, no other load,
//! just the work the aggregator does under its read lock for one question.
//! A fleet of N nodes (1% of them per rack, a share of them blocked) is
//! built with real reports; between questions a few nodes change (a full
//! report flipping a critical finding, as the load bench sends), then the
//! same question is answered both ways on the same state: the answer built
//! as a `GateAnswer` and serialized (`Fleet::gate_until`, what the API did
//! before), and written straight to JSON (`Fleet::gate_json`, what it does
//! now). Both bodies are compared, so the figures are for equal answers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use preflight_aggregator::fleet::{Fleet, FleetConfig, Selector};
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot};
use tokio::time::Instant;

fn report(i: usize, seq: u64, broken: bool) -> Report {
    let node = format!("n{i:06}");
    let findings = if broken {
        vec![Finding {
            code: Code::BondPortDown,
            severity: Severity::Critical,
            subject: "bond0/eno2".into(),
            message: "bond0 port eno2 is down (MII status down, 1 link failures)".into(),
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        }]
    } else {
        Vec::new()
    };
    let labels: BTreeMap<String, String> = [
        ("rack".to_string(), format!("r{:02}", i % 100)),
        ("role".to_string(), "compute".to_string()),
    ]
    .into_iter()
    .collect();
    Report {
        node: node.clone(),
        boot_id: "bench".into(),
        seq,
        body: ReportBody::Full {
            labels,
            state: Box::new(NodeState::new(node, &Snapshot::default(), findings)),
        },
    }
}

/// Both ways give the same answer (the old way sent `"ready": []` when the
/// ready list was not asked for).
fn same_answer(f: &Fleet, sel: &Selector, now: Instant, wall: SystemTime, ready: bool) {
    let (answer, _) = f.gate_until(sel, now, wall, ready).expect("known scope");
    let mut expected = serde_json::to_value(&answer).expect("serializes");
    if !ready {
        expected.as_object_mut().expect("object").remove("ready");
    }
    let json = f.gate_json(sel, now, wall, ready).expect("known scope");
    let got: serde_json::Value = serde_json::from_slice(&json.body.join()).expect("json");
    assert_eq!(got, expected, "both ways give the same answer");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `questions` answers per way for the whole fleet (with and without
/// the ready list) and one rack, `changes` reports apart.
///
/// # Panics
/// When the two ways give different answers.
pub fn run(nodes: usize, blocked_pct: usize, changes: usize, questions: usize) {
    let cfg = FleetConfig {
        ttl: Duration::from_secs(3600),
        settle: Duration::from_secs(1),
        ..FleetConfig::default()
    };
    let wall = SystemTime::now();
    let t0 = Instant::now();
    let mut f = Fleet::new(cfg, wall);
    let mut seq = vec![1u64; nodes];
    let mut broken = vec![false; nodes];
    for (i, b) in broken.iter_mut().enumerate() {
        *b = (i * 7919) % 100 < blocked_pct;
        f.apply_report(&report(i, 1, *b), t0, wall)
            .expect("accepted");
    }
    let mut now = t0 + Duration::from_secs(5);
    f.tick(now);
    let blocked = broken.iter().filter(|b| **b).count();
    println!(
        "gate-render: {nodes} nodes, {blocked} blocked, {changes} changed reports between questions, {questions} questions per way"
    );
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let scopes = [
        ("whole fleet, ready list", Selector::default(), true),
        ("whole fleet, ready=false", Selector::default(), false),
        (
            "one rack (1%)",
            Selector::parse("rack=r07").expect("selector"),
            true,
        ),
    ];
    for (what, sel, ready) in &scopes {
        let (mut old, mut new, mut held) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0;
        // One way at a time, so that neither pays for the other's garbage;
        // every tenth question is answered both ways (untimed) and compared.
        for way in 0..2 {
            for q in 0..questions {
                for _ in 0..changes {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let i = usize::try_from(rng % nodes as u64).expect("fits");
                    seq[i] += 1;
                    broken[i] = !broken[i];
                    f.apply_report(&report(i, seq[i], broken[i]), now, wall)
                        .expect("accepted");
                }
                now += Duration::from_millis(50);
                f.tick(now);
                let t = std::time::Instant::now();
                if way == 0 {
                    // Rendered (under the lock, in the aggregator), then its
                    // pieces joined (after it).
                    let json = f.gate_json(sel, now, wall, *ready).expect("known scope");
                    let locked = ms(t.elapsed());
                    let body = json.body.join();
                    new.push(ms(t.elapsed()));
                    held.push(locked);
                    bytes = body.len();
                } else {
                    let (answer, _) = f.gate_until(sel, now, wall, *ready).expect("known scope");
                    let body = serde_json::to_vec(&answer).expect("serializes");
                    old.push(ms(t.elapsed()));
                    drop(body);
                }
                if q % 10 == 0 {
                    same_answer(&f, sel, now, wall, *ready);
                }
            }
        }
        old.sort_by(f64::total_cmp);
        new.sort_by(f64::total_cmp);
        let (o50, o99) = (crate::percentile(&old, 50.0), crate::percentile(&old, 99.0));
        let (n50, n99) = (crate::percentile(&new, 50.0), crate::percentile(&new, 99.0));
        held.sort_by(f64::total_cmp);
        let (h50, h99) = (
            crate::percentile(&held, 50.0),
            crate::percentile(&held, 99.0),
        );
        println!(
            "  {what:<26} {bytes:>9} bytes  built+serialized p50 {o50:7.2} ms p99 {o99:7.2}  written p50 {n50:6.2} ms p99 {n99:6.2} (of which under the fleet's lock p50 {h50:6.2} ms p99 {h99:6.2})  ({:.1}x at p50)",
            o50 / n50.max(1e-6)
        );
    }
}
