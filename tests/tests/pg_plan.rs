//! Maintenance leases and plans across two aggregator replicas sharing one
//! real PostgreSQL (a throwaway cluster from `preflight_tests::pg`): 50
//! concurrent `POST /v1/plan` from two pipelines, half through each
//! replica, never lease more than `max_unavailable` nodes or more than K of
//! a rack together, and never one node twice; both replicas list the same
//! leases, which survive a restart. Needs root (the cluster runs as the
//! `postgres` user); fails, never skips, without it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use preflight_tests::pg::Pg;
use preflight_tests::replica::Replica;
use serde_json::{json, Value};

const NODES: usize = 20;
const MAX_UNAVAILABLE: usize = 6;
const PER_RACK: usize = 2;

/// What the replicas of these tests add to their `[aggregator]`.
const PLAN_REPLICA: &str = "settle = \"0s\"\nttl = \"600s\"\nmaintenance_grace = \"5m\"\n";

fn curl(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    preflight_tests::curl(method, url, None, body)
}

fn rack(i: usize) -> String {
    format!("r{}", i % 5)
}

fn report(i: usize) -> Value {
    let node = format!("c{i:02}");
    let state = serde_json::to_value(preflight_model::NodeState::new(
        node.clone(),
        &preflight_model::Snapshot::default(),
        vec![],
    ))
    .expect("state");
    json!({"node": node, "boot_id": "b1", "seq": 1, "kind": "full",
        "labels": {"role": "compute", "rack": rack(i)}, "state": state})
}

fn leases(r: &Replica) -> Vec<Value> {
    let (code, v) = curl("GET", &format!("{}/v1/maintenance", r.url), None);
    assert_eq!(code, 200, "{v}");
    v.as_array().expect("list").clone()
}

fn leased_nodes(ls: &[Value]) -> Vec<String> {
    let mut all: Vec<String> = ls
        .iter()
        .flat_map(|l| l["nodes"].as_array().expect("nodes").clone())
        .map(|n| n.as_str().expect("name").to_owned())
        .collect();
    all.sort();
    all
}

#[test]
fn concurrent_plans_through_two_replicas_stay_within_the_limits() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Replica::new(dir.path(), "a", &pg.url(), PLAN_REPLICA);
    let b = Replica::new(dir.path(), "b", &pg.url(), PLAN_REPLICA);
    for i in 0..NODES {
        for r in [&a, &b] {
            let (code, v) = curl("POST", &format!("{}/v1/reports", r.url), Some(&report(i)));
            assert_eq!(code, 200, "{v}");
        }
    }
    let q = format!("scope=role%3Dcompute&max_unavailable={MAX_UNAVAILABLE}&per=rack:{PER_RACK}");
    let (code, plan) = curl("GET", &format!("{}/v1/plan?{q}", a.url), None);
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        plan["batch"].as_array().map(Vec::len),
        Some(MAX_UNAVAILABLE),
        "{plan}"
    );

    // 50 plans at once, from two pipelines, each through its own replica.
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (url, pipeline) = if i % 2 == 0 { (&a.url, "p1") } else { (&b.url, "p2") };
                let body = json!({"scope": "role=compute", "max_unavailable": MAX_UNAVAILABLE.to_string(),
                    "per": format!("rack:{PER_RACK}"), "duration": "10m",
                    "reason": "rolling kernel update", "pipeline": pipeline});
                s.spawn(move || curl("POST", &format!("{url}/v1/plan"), Some(&body)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let took = started.elapsed();
    let mut taken: Vec<String> = Vec::new();
    for (code, v) in &answers {
        match code {
            200 => {
                let nodes = v["lease"]["nodes"].as_array().expect("a lease");
                assert_eq!(v["batch"], v["lease"]["nodes"], "{v}");
                taken.extend(nodes.iter().map(|n| n.as_str().expect("name").to_owned()));
            }
            503 => assert!(v["lease"].is_null() && v["batch"] == json!([]), "{v}"),
            _ => panic!("POST /v1/plan answered {code}: {v}"),
        }
    }
    taken.sort();
    let distinct: BTreeSet<&String> = taken.iter().collect();
    assert_eq!(
        distinct.len(),
        taken.len(),
        "a node leased twice: {taken:?}"
    );
    assert_eq!(
        taken.len(),
        MAX_UNAVAILABLE,
        "the budget is used, not exceeded: {taken:?}"
    );
    let mut per_rack: BTreeMap<String, usize> = BTreeMap::new();
    for n in &taken {
        let i: usize = n[1..].parse().expect("index");
        *per_rack.entry(rack(i)).or_default() += 1;
    }
    assert!(per_rack.values().all(|c| *c <= PER_RACK), "{per_rack:?}");
    eprintln!("50 concurrent POST /v1/plan through 2 replicas: {took:?}; leased {taken:?}");

    // The database agrees, and both replicas list the same leases.
    let rows = pg.psql("preflight", "SELECT count(*) FROM lease_nodes");
    assert_eq!(rows.trim(), MAX_UNAVAILABLE.to_string());
    let t = Instant::now();
    while leased_nodes(&leases(&b)) != taken || leased_nodes(&leases(&a)) != taken {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "replicas did not converge"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A lease of a node already leased is refused through either replica.
    let (code, v) = curl(
        "POST",
        &format!("{}/v1/maintenance", b.url),
        Some(&json!({"nodes": [taken[0]], "duration": "5m", "reason": "x", "pipeline": "p3"})),
    );
    assert_eq!(code, 409, "{v}");
    // The gate: leased nodes are silent-to-be, neither blocking nor ready.
    let (code, g) = curl(
        "GET",
        &format!("{}/v1/gate?scope=role%3Dcompute", b.url),
        None,
    );
    assert_eq!(code, 200, "{g}");
    assert_eq!(
        g["ready"].as_array().map(Vec::len),
        Some(NODES - MAX_UNAVAILABLE),
        "{g}"
    );

    // A restart keeps them.
    a.stop();
    a.start();
    assert_eq!(leased_nodes(&leases(&a)), taken);
    // Ending one through a frees its nodes for the next batch through b.
    let first = leases(&a)[0].clone();
    let id = first["id"].as_i64().expect("id");
    let (code, v) = curl("DELETE", &format!("{}/v1/maintenance/{id}", a.url), None);
    assert_eq!(code, 204, "{v}");
    let t = Instant::now();
    while leases(&b).iter().any(|l| l["id"] == first["id"]) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "b did not follow the end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let audit = pg.psql(
        "preflight",
        "SELECT action, count(*) FROM audit WHERE action LIKE 'lease.%' GROUP BY action ORDER BY action",
    );
    assert!(audit.contains("lease.create"), "{audit}");
    assert!(audit.contains("lease.end"), "{audit}");
}
