//! Router tests with `oneshot`: every endpoint, every error status, and that
//! rejected requests store nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::router;
use crate::auth::{token_digest, Auth, Identity, Nodes, Reads, Roles};
use crate::fleet::FleetConfig;
use crate::server::{build_state, AggregatorConfig};
use crate::state::AppState;

struct T {
    state: AppState,
    /// Holds the SQLite file (and its -wal, -shm) until the test ends.
    _dir: tempfile::TempDir,
}

fn cfg(db: &std::path::Path, closed: bool) -> AggregatorConfig {
    AggregatorConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: crate::store::Database::Sqlite(db.to_owned()),
        state_dir: None,
        fleet: FleetConfig {
            ttl: Duration::from_secs(30),
            settle: Duration::ZERO,
            closed_inventory: closed,
            max_waiver: Duration::from_secs(86_400),
            min_waiver: Duration::from_secs(60),
            ..FleetConfig::default()
        },
        auth: {
            let mut a = Auth::new(Reads::Open);
            a.add_fleet_report_token("rtok").expect("distinct");
            a.add_admin_token("atok").expect("distinct");
            a.add_node_token("c1", token_digest("c1tok"))
                .expect("distinct");
            a.add_token(
                token_digest("rdtok"),
                Identity {
                    name: "dashboard".into(),
                    roles: Roles::parse(&["reader".into()]).expect("role"),
                    nodes: Nodes::Only(vec![]),
                },
            )
            .expect("distinct");
            a
        },
        tls: None,
        scopes: vec![crate::fleet::Selector::parse("role=compute").expect("scope")],
        inventory: if closed {
            vec![(
                "c1".into(),
                BTreeMap::from([("role".into(), "compute".into())]),
            )]
        } else {
            vec![]
        },
        max_connections_per_source: crate::admit::DEFAULT_MAX_PER_SOURCE,
    }
}

fn app(name: &str, closed: bool) -> T {
    let dir = tempfile::Builder::new()
        .prefix(&format!("preflight-api-{name}-"))
        .tempdir()
        .expect("temp dir");
    let (state, _rx) = build_state(&cfg(&dir.path().join("preflight.db"), closed)).expect("state");
    T { state, _dir: dir }
}

async fn call(
    t: &T,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(tok) = token {
        req = req.header("authorization", format!("Bearer {tok}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = router(t.state.clone())
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, v)
}

fn report(node: &str, seq: u64, findings: Vec<Finding>) -> Value {
    serde_json::to_value(Report {
        node: node.into(),
        boot_id: "b1".into(),
        seq,
        body: ReportBody::Full {
            labels: BTreeMap::from([("role".into(), "compute".into())]),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
    })
    .expect("serializes")
}

fn port_down() -> Finding {
    Finding {
        code: Code::BondPortDown,
        severity: Severity::Critical,
        subject: "bond0/eth1".into(),
        message: "bond0 port eth1 is down".into(),
        since: std::time::SystemTime::now(),
    }
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test]
async fn report_then_gate_go_and_no_go() {
    let t = app("gate", false);
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    let (s, v) = call(&t, "GET", "/v1/gate?scope=role=compute", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verdict"], "go");
    assert_eq!(v["ready"], json!(["c1"]));
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c2", 1, vec![port_down()])),
    )
    .await;
    let (s, v) = call(&t, "GET", "/v1/gate?scope=role%3Dcompute", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["verdict"], "no-go");
    assert_eq!(v["blocked"], json!(["c2"]));
    assert_eq!(v["blockers"][0]["node"], "c2");
    assert_eq!(v["blockers"][0]["subject"], "bond0/eth1");
    // No scope: all nodes.
    let (s, _) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn gate_errors() {
    let t = app("gate-errors", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    let (s, v) = call(&t, "GET", "/v1/gate?scope=role=comptue", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "unknown_scope");
    let (s, v) = call(&t, "GET", "/v1/gate?scope=role", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_scope");
}

#[tokio::test]
async fn report_errors_store_nothing() {
    let t = app("report-errors", false);
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        None,
        Some(report("c1", 1, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, _) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("wrong"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(json!({"node": "c1"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(json!("not an object")),
    )
    .await;
    assert!(s.is_client_error(), "{s}");
    assert_error(&v, "bad_request");
    let mut bad_name = report("c1", 1, vec![]);
    bad_name["node"] = json!("c 1; rm");
    let (s, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(bad_name)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_node_name");
    let mut mismatch = report("c1", 1, vec![]);
    mismatch["state"]["node"] = json!("c9");
    let (s, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(mismatch)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_report");
    // A code this aggregator does not know (a newer agent): refused, named.
    let mut unknown_code = report("c1", 1, vec![port_down()]);
    unknown_code["state"]["findings"][0]["code"] = json!("BOND_ON_FIRE");
    let (s, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(unknown_code)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
    assert!(
        v["message"]
            .as_str()
            .expect("msg")
            .contains("`BOND_ON_FIRE`"),
        "{v}"
    );
    // Too large.
    let big = json!({ "node": "c1", "boot_id": "b1", "seq": 1, "kind": "heartbeat", "state_seq": 1, "pad": "x".repeat(2 * 1024 * 1024) });
    let (s, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, "too_large");
    // Nothing of that reached the fleet.
    let (_, v) = call(&t, "GET", "/v1/nodes", None, None).await;
    assert_eq!(v, json!([]));
    // Wrong content type.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/reports")
        .header("authorization", "Bearer rtok")
        .body(Body::from("{}"))
        .expect("req");
    let resp = router(t.state.clone()).oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn stale_sequence_is_409_and_changes_nothing() {
    let t = app("stale-seq", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 5, vec![])),
    )
    .await;
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 4, vec![port_down()])),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "stale_sequence");
    let (s, _) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::OK, "the stale report did not land");
}

#[tokio::test]
async fn closed_inventory_rejects_unknown_node_with_403() {
    let t = app("closed", true);
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("intruder", 1, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "unknown_node");
    let (s, v) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v["blockers"][0]["code"], "NODE_SILENT",
        "c1 from the inventory never reported"
    );
    assert_eq!(v["blockers"][0]["node"], "c1");
}

#[tokio::test]
async fn heartbeat_without_state_asks_for_full() {
    let t = app("hb", false);
    let hb =
        json!({ "node": "c1", "boot_id": "b1", "seq": 2, "kind": "heartbeat", "state_seq": 1 });
    let (s, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(hb.clone())).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("need_full"))
    );
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    let (_, v) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(hb)).await;
    assert_eq!(v["status"], "accepted");
}

#[tokio::test]
async fn waivers_lifecycle_and_errors() {
    let t = app("waivers", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c2", 1, vec![port_down()])),
    )
    .await;
    let body = json!({ "node": "c2", "code": "BOND_PORT_DOWN", "subject": "bond0/eth1", "reason": "NIC on order", "author": "ana", "duration": "2h" });
    let (s, v) = call(&t, "POST", "/v1/waivers", None, Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, _) = call(&t, "POST", "/v1/waivers", Some("rtok"), Some(body.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the report token cannot waive");
    let mut no_expiry = body.clone();
    no_expiry.as_object_mut().expect("obj").remove("duration");
    let (s, v) = call(&t, "POST", "/v1/waivers", Some("atok"), Some(no_expiry)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_waiver");
    assert!(v["message"]
        .as_str()
        .expect("msg")
        .contains("expiry is required"));
    let mut too_long = body.clone();
    too_long["duration"] = json!("30d");
    let (s, v) = call(&t, "POST", "/v1/waivers", Some("atok"), Some(too_long)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_waiver");
    let mut unknown_code = body.clone();
    unknown_code["code"] = json!("BOND_PORT_DOWM");
    let (s, v) = call(&t, "POST", "/v1/waivers", Some("atok"), Some(unknown_code)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_waiver");
    assert!(
        v["message"]
            .as_str()
            .expect("msg")
            .contains("`BOND_PORT_DOWM`"),
        "{v}"
    );
    let mut unknown_field = body.clone();
    unknown_field["expires"] = json!("tomorrow");
    let (s, _) = call(&t, "POST", "/v1/waivers", Some("atok"), Some(unknown_field)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = call(&t, "GET", "/v1/waivers", None, None).await;
    assert_eq!(v, json!([]), "no rejected waiver was stored");

    let (s, w) = call(&t, "POST", "/v1/waivers", Some("atok"), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let id = w["id"].as_i64().expect("id");
    let (s, v) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["waived"][0]["id"], id);
    let (_, v) = call(&t, "GET", "/v1/nodes/c2", None, None).await;
    assert_eq!(
        v["node"]["findings"][0]["waived_by"], id,
        "a waived finding is still shown, marked"
    );

    let (s, v) = call(&t, "DELETE", "/v1/waivers/999", Some("atok"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, v) = call(&t, "DELETE", "/v1/waivers/abc", Some("atok"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_request");
    // A bad query is a JSON 400 and changes nothing.
    let (s, v) = call(
        &t,
        "DELETE",
        &format!("/v1/waivers/{id}?by=a&by=b"),
        Some("atok"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
    let (s, v) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::OK, "still waived: {v}");
    let (s, _) = call(&t, "DELETE", &format!("/v1/waivers/{id}"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &t,
        "DELETE",
        &format!("/v1/waivers/{id}?by=ana"),
        Some("atok"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&t, "GET", "/v1/gate", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (_, audit) = call(&t, "GET", "/v1/audit?limit=10", None, None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| a["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions[..2], ["waiver.remove", "waiver.create"]);
    assert_eq!(audit[0]["actor"], "ana");
}

#[tokio::test]
async fn nodes_endpoints() {
    let t = app("nodes", false);
    let (s, v) = call(&t, "GET", "/v1/nodes/none", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, _) = call(
        &t,
        "PUT",
        "/v1/nodes/c7",
        None,
        Some(json!({"labels": {"role": "compute"}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(
        &t,
        "PUT",
        "/v1/nodes/c7",
        Some("atok"),
        Some(json!({"labels": {"role": "com pute"}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "bad_label");
    let (s, _) = call(
        &t,
        "PUT",
        "/v1/nodes/c7",
        Some("atok"),
        Some(json!({"labels": {"role": "compute"}})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = call(&t, "GET", "/v1/nodes", None, None).await;
    assert_eq!(v[0]["node"], "c7");
    assert_eq!(v[0]["status"], "silent");
    let (_, v) = call(&t, "GET", "/v1/gate?scope=role=compute", None, None).await;
    assert_eq!(v["blockers"][0]["code"], "NODE_SILENT");
    let (s, _) = call(&t, "DELETE", "/v1/nodes/c7", Some("atok"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&t, "DELETE", "/v1/nodes/c7", Some("atok"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_metrics_page_and_fallback() {
    let t = app("misc", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![port_down()])),
    )
    .await;
    let (s, v) = call(&t, "GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = call(&t, "GET", "/readyz", None, None).await;
    assert_eq!((s, v["nodes"].as_u64()), (StatusCode::OK, Some(1)));
    let (s, v) = call(&t, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().expect("text");
    assert!(
        text.contains("preflight_aggregator_node_blocked{node=\"c1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("preflight_aggregator_scope_go{scope=\"role=compute\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("preflight_aggregator_reports_received_total{kind=\"full\"} 1"),
        "{text}"
    );
    let (s, v) = call(&t, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().expect("html").contains("<title>preflight"));
    let (s, v) = call(&t, "GET", "/v1/page", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["blockers"][0]["code"], "BOND_PORT_DOWN");
    assert_eq!(
        v["blockers_total"],
        v["blockers"].as_array().expect("list").len()
    );
    assert_eq!(v["nodes_total"], v["nodes"].as_array().expect("list").len());
    assert_eq!(v["verdict"], "no-go");
    let (s, v) = call(&t, "GET", "/v2/nothing", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
}

/// A method a path does not take: 405 with the JSON error shape and the
/// methods it does take in `Allow`; nothing changes.
#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let t = app("method", true);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/gate")
        .header("authorization", "Bearer atok")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let resp = router(t.state.clone())
        .oneshot(req)
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp
        .headers()
        .get("allow")
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("a JSON error");
    assert_error(&v, "method_not_allowed");
    let (s, v) = call(&t, "PATCH", "/v1/nodes/c1", Some("atok"), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&v, "method_not_allowed");
    let (_, nodes) = call(&t, "GET", "/v1/nodes", None, None).await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
}

/// Every path and method of docs/openapi.json is served (not the fallback,
/// not 405), and every route of the router is documented there.
#[tokio::test]
async fn openapi_document_matches_the_router() {
    let t = app("openapi", false);
    let doc: Value = serde_json::from_str(include_str!("../../../../docs/openapi.json"))
        .expect("openapi.json parses");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            documented.push(format!("{} {path}", method.to_uppercase()));
            let uri = path.replace("{node}", "c1").replace("{id}", "1");
            let body = matches!(method, "post" | "put").then(|| json!({}));
            let (s, v) = call(&t, &method.to_uppercase(), &uri, Some("atok"), body).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(s == StatusCode::NOT_FOUND
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no such endpoint"))),
                "{method} {path} is documented but not served"
            );
        }
    }
    documented.sort();
    let mut served = vec![
        "POST /v1/reports",
        "GET /v1/gate",
        "GET /v1/nodes",
        "GET /v1/nodes/{node}",
        "PUT /v1/nodes/{node}",
        "DELETE /v1/nodes/{node}",
        "GET /v1/waivers",
        "POST /v1/waivers",
        "DELETE /v1/waivers/{id}",
        "GET /v1/maintenance",
        "POST /v1/maintenance",
        "DELETE /v1/maintenance/{id}",
        "GET /v1/plan",
        "POST /v1/plan",
        "GET /v1/audit",
        "GET /v1/page",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
        "GET /",
    ];
    served.sort_unstable();
    assert_eq!(documented, served, "router and docs/openapi.json disagree");
    let listed: Vec<&str> = doc["components"]["schemas"]["Code"]["enum"]
        .as_array()
        .expect("Code enum")
        .iter()
        .map(|c| c.as_str().expect("string"))
        .collect();
    let known: Vec<&str> = preflight_model::code::FINDING_CODES
        .iter()
        .chain(preflight_model::code::NODE_CODES)
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        listed, known,
        "docs/openapi.json's Code enum and the codes disagree"
    );
}

fn documented_metrics(section: &str) -> Vec<String> {
    let doc = include_str!("../../../../docs/metrics.md");
    let part = doc
        .split("## ")
        .find(|s| s.starts_with(section))
        .expect("section");
    let mut v: Vec<String> = part
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// docs/metrics.md lists exactly the metrics the aggregator emits.
#[tokio::test]
async fn every_metric_is_documented_and_emitted() {
    let t = app("metrics-doc", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    let (_, v) = call(&t, "GET", "/metrics", None, None).await;
    let mut emitted: Vec<String> = v
        .as_str()
        .expect("text")
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    emitted.sort();
    assert_eq!(emitted, documented_metrics("Aggregator"));
}

/// Asking the gate about any number of selectors registers none of them:
/// the tracked scopes stay the whole fleet plus the configured one.
#[tokio::test]
async fn gate_questions_do_not_change_the_fleet() {
    let t = app("gate-read", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    let tracked = t.state.service.read(crate::fleet::Fleet::tracked_scopes);
    assert_eq!(tracked, 2, "the whole fleet and role=compute");
    for i in 0..300 {
        let (s, v) = call(&t, "GET", &format!("/v1/gate?scope=rack=r{i}"), None, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_error(&v, "unknown_scope");
        let (s, _) = call(&t, "GET", "/v1/gate?scope=role=compute,kind=x", None, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
    let (s, v) = call(&t, "GET", "/v1/gate?scope=role=compute", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        t.state.service.read(crate::fleet::Fleet::tracked_scopes),
        tracked
    );
}

/// A token of the right length but wrong content, a prefix of the right
/// token, and the right token with extra bytes are all refused.
#[tokio::test]
async fn near_miss_tokens_are_refused() {
    let t = app("tokens", false);
    for tok in ["rtoq", "rto", "rtokk", "Rtok", ""] {
        let (s, v) = call(
            &t,
            "POST",
            "/v1/reports",
            Some(tok),
            Some(report("c1", 1, vec![])),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "token `{tok}`");
        assert_error(&v, "unauthorized");
    }
    let (_, v) = call(&t, "GET", "/v1/nodes", None, None).await;
    assert_eq!(v, json!([]));
}

/// A node token reports for its own node only; using it for another is a
/// 403 that changes nothing and leaves an audit entry naming both. A reader
/// reads but cannot waive or change the inventory.
#[tokio::test]
async fn node_tokens_and_roles() {
    let t = app("roles", false);
    let (s, _) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("c1tok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("c1tok"),
        Some(report("c2", 1, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden");
    let (_, nodes) = call(&t, "GET", "/v1/nodes", Some("rdtok"), None).await;
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(1),
        "c2 not added: {nodes}"
    );
    let (s, audit) = call(&t, "GET", "/v1/audit", Some("c1tok"), None).await;
    assert_eq!(s, StatusCode::OK, "a node's credential may read");
    let e = &audit[0];
    assert_eq!(
        (
            e["action"].as_str(),
            e["actor"].as_str(),
            e["detail"]["node"].as_str()
        ),
        (Some("report.forbidden"), Some("node-token:c1"), Some("c2")),
        "{audit}"
    );
    let body = json!({ "node": "c1", "reason": "r", "author": "a", "duration": "1h" });
    let (s, v) = call(&t, "POST", "/v1/waivers", Some("rdtok"), Some(body.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = call(&t, "POST", "/v1/waivers", Some("c1tok"), Some(body)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &t,
        "PUT",
        "/v1/nodes/x",
        Some("rdtok"),
        Some(json!({"labels": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &t,
        "POST",
        "/v1/reports",
        Some("rdtok"),
        Some(report("c1", 2, vec![])),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a reader cannot report");
    let (s, _) = call(&t, "GET", "/healthz", Some("wrong"), None).await;
    assert_eq!(s, StatusCode::OK, "probes need no credential");
}

/// Raw body of a GET (to compare the bytes of two answers).
async fn get_bytes(t: &T, uri: &str) -> (StatusCode, axum::body::Bytes) {
    let req = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let resp = router(t.state.clone())
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

#[tokio::test]
async fn gate_answers_are_shared_until_their_scope_changes() {
    let t = app("gate-cache", false);
    for (node, seq) in [("c1", 1), ("c2", 1)] {
        call(
            &t,
            "POST",
            "/v1/reports",
            Some("rtok"),
            Some(report(node, seq, vec![])),
        )
        .await;
    }
    let (s1, b1) = get_bytes(&t, "/v1/gate?scope=role=compute").await;
    let (s2, b2) = get_bytes(&t, "/v1/gate?scope=role=compute").await;
    assert_eq!(s1, StatusCode::OK);
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(b1.as_ptr(), b2.as_ptr(), "the same rendered bytes, shared");
    // A report outside the scope leaves it cached.
    let mut other = report("k1", 1, vec![]);
    other["labels"] = json!({ "role": "control" });
    let (s, _) = call(&t, "POST", "/v1/reports", Some("rtok"), Some(other)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, b3) = get_bytes(&t, "/v1/gate?scope=role=compute").await;
    assert_eq!(b3.as_ptr(), b1.as_ptr(), "not touched by role=control");
    // One in scope renders it again, and it says so.
    let broken = vec![Finding {
        code: Code::BondPortDown,
        severity: Severity::Critical,
        subject: "bond0/eth1".into(),
        message: "down".into(),
        since: std::time::SystemTime::now(),
    }];
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c2", 2, broken)),
    )
    .await;
    let (s4, b4) = get_bytes(&t, "/v1/gate?scope=role=compute").await;
    assert_eq!(s4, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&b4).expect("json");
    assert_eq!(v["blocked"], json!(["c2"]));
    assert_eq!(v["ready"], json!(["c1"]));
}

#[tokio::test]
async fn gate_ready_false_leaves_out_the_list_and_bad_values_are_400() {
    let t = app("gate-ready", false);
    call(
        &t,
        "POST",
        "/v1/reports",
        Some("rtok"),
        Some(report("c1", 1, vec![])),
    )
    .await;
    let (s, full) = call(&t, "GET", "/v1/gate?scope=role=compute", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(full["ready"], json!(["c1"]));
    let (s, short) = call(
        &t,
        "GET",
        "/v1/gate?scope=role=compute&ready=false",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(short.get("ready").is_none(), "{short}");
    let mut expected = full.clone();
    expected.as_object_mut().expect("object").remove("ready");
    expected["generated_at"] = short["generated_at"].clone();
    assert_eq!(short, expected, "everything else as with the list");
    let (_, explicit) = call(
        &t,
        "GET",
        "/v1/gate?scope=role=compute&ready=true",
        None,
        None,
    )
    .await;
    assert_eq!(explicit["ready"], json!(["c1"]));
    for bad in ["no", "1", "", "FALSE"] {
        let (s, v) = call(&t, "GET", &format!("/v1/gate?ready={bad}"), None, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "ready={bad}: {v}");
        assert_error(&v, "bad_request");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("ready")),
            "the error names the parameter: {v}"
        );
    }
}
