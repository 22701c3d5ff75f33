//! Maintenance leases and the plan through the router (`oneshot`): a node
//! under a lease blocks neither its scope's gate nor the plan and is not
//! ready; leases survive a restart; every bad request is a 4xx with a JSON
//! error.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use preflight_model::report::{Report, ReportBody};
use preflight_model::{NodeState, Snapshot};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::router;
use crate::auth::{Auth, Reads};
use crate::fleet::FleetConfig;
use crate::server::{build_state, AggregatorConfig};
use crate::state::AppState;

/// Compute nodes c1..c6 in racks r1 (c1, c2), r2 (c3, c4), r3 (c5, c6).
fn inventory() -> Vec<(String, BTreeMap<String, String>)> {
    (1..=6)
        .map(|i| {
            (
                format!("c{i}"),
                BTreeMap::from([
                    ("role".into(), "compute".into()),
                    ("rack".into(), format!("r{}", (i + 1) / 2)),
                ]),
            )
        })
        .collect()
}

fn cfg(db: &std::path::Path) -> AggregatorConfig {
    AggregatorConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: crate::store::Database::Sqlite(db.to_owned()),
        state_dir: None,
        fleet: FleetConfig {
            settle: Duration::ZERO,
            closed_inventory: true,
            ..FleetConfig::default()
        },
        auth: {
            let mut a = Auth::new(Reads::Open);
            a.add_fleet_report_token("rtok").expect("distinct");
            a.add_admin_token("atok").expect("distinct");
            a
        },
        tls: None,
        scopes: vec![crate::fleet::Selector::parse("role=compute").expect("scope")],
        inventory: inventory(),
        max_connections_per_source: crate::admit::DEFAULT_MAX_PER_SOURCE,
    }
}

fn app(db: &std::path::Path) -> AppState {
    build_state(&cfg(db)).expect("state").0
}

async fn call(s: &AppState, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let token = if method == "POST" && uri == "/v1/reports" {
        "rtok"
    } else {
        "atok"
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = router(s.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

async fn report_go(s: &AppState, node: &str) {
    let r = serde_json::to_value(Report {
        node: node.into(),
        boot_id: "b1".into(),
        seq: 1,
        body: ReportBody::Full {
            labels: BTreeMap::new(),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), vec![])),
        },
    })
    .expect("report");
    let (st, v) = call(s, "POST", "/v1/reports", Some(r)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The operator's problem: the nodes being updated go silent and the gate
/// blocks everything. Under a lease, a silent node blocks nothing and is not
/// ready; the lease is listed, survives a restart, and ends on DELETE.
#[tokio::test(flavor = "multi_thread")]
async fn a_leased_silent_node_blocks_nothing_and_is_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("preflight.db");
    let s = app(&db);
    for n in ["c2", "c3", "c4", "c5", "c6"] {
        report_go(&s, n).await;
    }
    let (st, _) = call(&s, "GET", "/v1/gate?scope=role=compute", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "c1 is silent");
    // Only a go node is leased: c1 reports go, then goes silent under the
    // lease.
    report_go(&s, "c1").await;

    let (st, lease) = call(
        &s,
        "POST",
        "/v1/maintenance",
        Some(json!({"nodes": ["c1"], "duration": "30m", "reason": "kernel update", "pipeline": "tripleo"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{lease}");
    assert_eq!(names(&lease["nodes"]), ["c1"]);
    let (st, gate) = call(&s, "GET", "/v1/gate?scope=role=compute", None).await;
    assert_eq!(st, StatusCode::OK, "{gate}");
    assert!(!names(&gate["ready"]).contains(&"c1".to_owned()), "{gate}");

    // Nobody leases c1 twice.
    let (st, v) = call(
        &s,
        "POST",
        "/v1/maintenance",
        Some(json!({"nodes": ["c1", "c2"], "duration": "30m", "reason": "x", "pipeline": "kolla"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("c1"), "{v}");

    // A restart keeps the lease.
    drop(s);
    let s = app(&db);
    let (st, list) = call(&s, "GET", "/v1/maintenance", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    for n in ["c2", "c3", "c4", "c5", "c6"] {
        report_go(&s, n).await;
    }
    let (st, gate) = call(&s, "GET", "/v1/gate?scope=role=compute", None).await;
    assert_eq!(st, StatusCode::OK, "{gate}");

    let id = lease["id"].as_i64().expect("id");
    let (st, v) = call(&s, "DELETE", &format!("/v1/maintenance/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, list) = call(&s, "GET", "/v1/maintenance", None).await;
    assert_eq!((st, list), (StatusCode::OK, json!([])));
    let (st, v) = call(&s, "DELETE", &format!("/v1/maintenance/{id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

/// The plan through the router: the largest batch within the limits, the
/// reasons for the rest, 200 or 503; `POST` takes it under one lease, and
/// the same question then gets the next batch.
#[tokio::test(flavor = "multi_thread")]
async fn the_plan_answers_and_takes_a_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = app(&dir.path().join("preflight.db"));
    for n in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        report_go(&s, n).await;
    }
    let q = "/v1/plan?scope=role%3Dcompute&max_unavailable=50%25&per=rack:1";
    let (st, plan) = call(&s, "GET", q, None).await;
    assert_eq!(st, StatusCode::OK, "{plan}");
    assert_eq!(names(&plan["batch"]), ["c1", "c3", "c5"], "{plan}");
    assert_eq!(
        plan["held"][0],
        json!({"node": "c2", "reason": "domain_full", "detail": "rack=r1 has 1 of at most 1 node(s) out"})
    );
    let (_, again) = call(&s, "GET", q, None).await;
    assert_eq!(again, plan, "same question, same answer");

    let take = json!({"scope": "role=compute", "max_unavailable": "50%", "per": "rack:1",
        "duration": "30m", "reason": "kernel", "pipeline": "p1"});
    let (st, taken) = call(&s, "POST", "/v1/plan", Some(take.clone())).await;
    assert_eq!(st, StatusCode::OK, "{taken}");
    assert_eq!(
        names(&taken["lease"]["nodes"]),
        ["c1", "c3", "c5"],
        "{taken}"
    );
    // Every rack has a node out, and the budget is spent.
    let (st, v) = call(&s, "POST", "/v1/plan", Some(take)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        (v["batch"].clone(), v["lease"].clone()),
        (json!([]), Value::Null),
        "{v}"
    );
    assert_eq!(names(&v["unavailable"]), ["c1", "c3", "c5"], "{v}");
    // Without `per`, the default budget of one node is spent too.
    let (st, v) = call(&s, "GET", "/v1/plan?scope=role%3Dcompute", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["held"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x["reason"] == "budget_spent")),
        "{v}"
    );
    let (_, audit) = call(&s, "GET", "/v1/audit?limit=5", None).await;
    assert_eq!(audit[0]["action"], "lease.create", "{audit}");
}

/// Bad leases and plan questions: a 4xx with a JSON error naming what is
/// wrong, and nothing leased.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_4xx_and_lease_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = app(&dir.path().join("preflight.db"));
    let lease = |nodes: Value, duration: &str, reason: &str| json!({"nodes": nodes, "duration": duration, "reason": reason, "pipeline": "p"});
    let long = "x".repeat(1025);
    let many: Vec<String> = (0..1001).map(|i| format!("n{i}")).collect();
    for (body, status, code, says) in [
        (
            lease(json!(["c1"]), "0s", "r"),
            400,
            "bad_lease",
            "duration",
        ),
        (
            lease(json!(["c1"]), "25h", "r"),
            400,
            "bad_lease",
            "max_lease",
        ),
        (lease(json!(["c1"]), "soon", "r"), 400, "bad_lease", "soon"),
        (lease(json!(["c1"]), "1h", ""), 400, "bad_lease", "reason"),
        (
            lease(json!(["c1"]), "1h", &long),
            400,
            "bad_lease",
            "reason",
        ),
        (lease(json!([]), "1h", "r"), 400, "bad_lease", "no nodes"),
        (
            lease(json!(many), "1h", "r"),
            400,
            "bad_lease",
            "at most 1000",
        ),
        (
            lease(json!(["c1", "c1"]), "1h", "r"),
            400,
            "bad_lease",
            "twice",
        ),
        (lease(json!(["nope"]), "1h", "r"), 404, "not_found", "nope"),
        (
            json!({"nodes": ["c1"], "duration": "1h", "reason": "r"}),
            400,
            "bad_request",
            "pipeline",
        ),
        (
            json!({"nodes": ["c1"], "duration": "1h", "reason": "r", "pipeline": "p", "x": 1}),
            400,
            "bad_request",
            "x",
        ),
    ] {
        let (st, v) = call(&s, "POST", "/v1/maintenance", Some(body.clone())).await;
        assert_eq!(
            (st.as_u16(), v["error"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{body}: {v}"
        );
    }
    for (q, says) in [
        ("scope=role%3Dcompute&max_unavailable=x", "max_unavailable"),
        ("scope=role%3Dcompute&max_unavailable=101%25", "percentage"),
        ("scope=role%3Dcompute&per=rack", "LABEL:K"),
        ("scope=role%3Dcompute&per=rack:0", "at least 1"),
        ("scope=role%3Dcompute&per=bad%20label:1", "per"),
        ("scope=role%3Dnobody", "unknown scope"),
        ("scope=role%3Dcompute&nope=1", "nope"),
    ] {
        let (st, v) = call(&s, "GET", &format!("/v1/plan?{q}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{q}: {v}"
        );
    }
    let (st, v) = call(&s, "DELETE", "/v1/maintenance/x", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(&s, "DELETE", "/v1/maintenance/99", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (_, list) = call(&s, "GET", "/v1/maintenance", None).await;
    assert_eq!(list, json!([]));
}

/// Review item 2: a lease of a node that is not go is refused (409
/// `not_go`, naming the node and its status), or leasing it would take
/// its finding out of every gate; nothing is leased.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_is_not_go_is_not_leased() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = app(&dir.path().join("preflight.db"));
    for n in ["c2", "c3", "c4", "c5", "c6"] {
        report_go(&s, n).await;
    }
    let (st, v) = call(
        &s,
        "POST",
        "/v1/maintenance",
        Some(json!({"nodes": ["c2", "c1"], "duration": "30m", "reason": "r", "pipeline": "p"})),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("not_go")),
        "{v}"
    );
    let m = v["message"].as_str().unwrap_or("");
    assert!(m.contains("c1") && m.contains("silent"), "{v}");
    let (_, list) = call(&s, "GET", "/v1/maintenance", None).await;
    assert_eq!(list, json!([]));
    let (st, _) = call(&s, "GET", "/v1/gate?scope=role=compute", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "c1 still blocks");
}

/// Review item 9: a batch larger than one lease may hold is cut, and the
/// nodes cut are held as `budget_spent`, not dropped from both lists.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_past_the_lease_cap_holds_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(&dir.path().join("preflight.db"));
    c.inventory = (0..1005)
        .map(|i| {
            (
                format!("n{i:04}"),
                BTreeMap::from([("role".into(), "compute".into())]),
            )
        })
        .collect();
    let s = build_state(&c).expect("state").0;
    for i in 0..1005 {
        report_go(&s, &format!("n{i:04}")).await;
    }
    let take = json!({"scope": "role=compute", "max_unavailable": "100%",
        "duration": "30m", "reason": "kernel", "pipeline": "p1"});
    let (st, v) = call(&s, "POST", "/v1/plan", Some(take)).await;
    assert_eq!(st, StatusCode::OK);
    let batch = names(&v["batch"]);
    let held = v["held"].as_array().cloned().unwrap_or_default();
    assert_eq!(batch.len(), 1000);
    assert_eq!(names(&v["lease"]["nodes"]), batch);
    assert_eq!(
        batch.len() + held.len(),
        1005,
        "every member chosen or held: {held:?}"
    );
    assert!(
        held.iter().all(|h| h["reason"] == "budget_spent"),
        "{held:?}"
    );
}

/// Review item 7: a lease that expired while the aggregator was down is
/// recorded as expired (with its `lease.expire` audit entry) at start, and
/// its node is back from maintenance (not go until it reports), not
/// simply in its scope again on its saved state.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_expired_while_down_is_recorded_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("preflight.db");
    let s = app(&db);
    report_go(&s, "c1").await;
    let (st, v) = call(
        &s,
        "POST",
        "/v1/maintenance",
        Some(json!({"nodes": ["c1"], "duration": "1s", "reason": "r", "pipeline": "p"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    drop(s);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = app(&db);
    let (_, audit) = call(&s, "GET", "/v1/audit?limit=5", None).await;
    assert_eq!(audit[0]["action"], "lease.expire", "{audit}");
    let (st, _) = call(
        &s,
        "POST",
        "/v1/maintenance",
        Some(json!({"nodes": ["c1"], "duration": "1m", "reason": "r", "pipeline": "p"})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "c1 is back from maintenance, not go yet"
    );
}
