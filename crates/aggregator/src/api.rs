//! The HTTP API (axum). [`router`] builds the whole app from an [`AppState`];
//! tests drive it with `oneshot`, `main` binds and serves it.
//!
//! Errors are one [`ApiError`] type rendered as `{"error": code, "message"}`.
//! Every rejected request changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use preflight_model::report::{Report, ReportAck, ReportBody, Waiver, MAX_REPORT_BYTES};
use preflight_model::Verdict;
use serde::Deserialize;
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetError, ReportOutcome, Selector, Status};
use crate::metrics::Metrics;
use crate::store::{PendingReport, Store};

/// Bearer tokens; `None` disables the check for that class of request.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Token agents send with reports.
    pub report: Option<String>,
    /// Token for waivers and inventory changes.
    pub admin: Option<String>,
}

/// Shared state of the app.
#[derive(Clone)]
pub struct AppState {
    /// The fleet (gate logic).
    pub fleet: Arc<Mutex<Fleet>>,
    /// The SQLite store.
    pub store: Arc<Mutex<Store>>,
    /// Reports to persist, written in batches by the writer thread.
    pub reports_tx: std::sync::mpsc::Sender<PendingReport>,
    /// Tokens.
    pub tokens: Arc<Tokens>,
    /// Metrics.
    pub metrics: Metrics,
    /// Scopes whose verdict is exported as a metric.
    pub scopes: Arc<Vec<Selector>>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        let (status, code) = match &e {
            FleetError::BadScope { .. } => (StatusCode::BAD_REQUEST, "bad_scope"),
            FleetError::UnknownScope(_) => (StatusCode::BAD_REQUEST, "unknown_scope"),
            FleetError::UnknownNode(_) => (StatusCode::FORBIDDEN, "unknown_node"),
            FleetError::BadNodeName(_) => (StatusCode::BAD_REQUEST, "bad_node_name"),
            FleetError::BadLabel(_) => (StatusCode::BAD_REQUEST, "bad_label"),
            FleetError::StaleSequence { .. } => (StatusCode::CONFLICT, "stale_sequence"),
            FleetError::BadReport(_) => (StatusCode::BAD_REQUEST, "bad_report"),
            FleetError::BadWaiver(_) => (StatusCode::BAD_REQUEST, "bad_waiver"),
            FleetError::NoSuchWaiver(_) | FleetError::NoSuchNode(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    let status = r.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_media_type"
    } else {
        "bad_request"
    };
    // A body that is JSON but not the expected shape (axum says 422) is as
    // malformed as one that is not JSON: 400, like every other bad input.
    let status = if status.is_client_error() && status != StatusCode::UNPROCESSABLE_ENTITY {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, code, r.body_text())
}

fn store_error(m: &Metrics, e: &dyn std::fmt::Display) -> ApiError {
    m.store_errors.inc();
    tracing::error!(error = %e, "store error");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_error",
        format!("cannot write the store: {e}"),
    )
}

fn authorize(headers: &HeaderMap, expected: Option<&String>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Length check first, then a comparison that does not stop early.
    let ok = got.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock poisons it; the data is still the last
    // consistent state we wrote, so keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/reports", post(post_report))
        .route("/v1/gate", get(gate))
        .route("/v1/nodes", get(nodes))
        .route(
            "/v1/nodes/{node}",
            get(node).put(put_node).delete(delete_node),
        )
        .route("/v1/waivers", get(waivers).post(post_waiver))
        .route("/v1/waivers/{id}", axum::routing::delete(delete_waiver))
        .route("/v1/audit", get(audit))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(crate::page::page))
        .route("/v1/page", get(crate::page::page_data))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/api.md",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(state)
}

async fn post_report(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<ReportAck>, ApiError> {
    let reject = |reason: &str| {
        s.metrics
            .reports_rejected
            .with_label_values(&[reason])
            .inc()
    };
    if let Err(e) = authorize(&headers, s.tokens.report.as_ref()) {
        reject("unauthorized");
        return Err(e);
    }
    let Json(report) = body.map_err(|r| {
        let e = json_rejection(&r);
        reject(if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        });
        e
    })?;
    let now = Instant::now();
    let wall = SystemTime::now();
    let outcome = lock(&s.fleet)
        .apply_report(&report, now, wall)
        .map_err(|e| {
            reject(match e {
                FleetError::UnknownNode(_) => "unknown_node",
                FleetError::StaleSequence { .. } => "stale_sequence",
                _ => "bad_request",
            });
            ApiError::from(e)
        })?;
    match outcome {
        ReportOutcome::NeedFull => Ok(Json(ReportAck {
            status: "need_full".into(),
        })),
        ReportOutcome::Accepted { full, new_node } => {
            if let ReportBody::Full { labels, state } = &report.body {
                if new_node {
                    // The inventory must survive a restart, or a node that
                    // never reports again would silently drop out of the gate.
                    let (store, node, labels) =
                        (s.store.clone(), report.node.clone(), labels.clone());
                    let saved = tokio::task::spawn_blocking(move || {
                        lock(&store).upsert_node(&node, &labels, "agent", wall)
                    })
                    .await;
                    let failed = match saved {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = failed {
                        let _ = lock(&s.fleet).remove_node(&report.node);
                        reject("store_error");
                        return Err(store_error(&s.metrics, &e));
                    }
                }
                let state_json = serde_json::to_string(state).expect("state serializes");
                let _ = s.reports_tx.send(PendingReport {
                    node: report.node.clone(),
                    boot_id: report.boot_id.clone(),
                    seq: report.seq,
                    received_at: wall,
                    state_json,
                });
            }
            s.metrics
                .reports
                .with_label_values(&[if full { "full" } else { "heartbeat" }])
                .inc();
            Ok(Json(ReportAck {
                status: "accepted".into(),
            }))
        }
    }
}

#[derive(Debug, Deserialize)]
struct GateQuery {
    #[serde(default)]
    scope: String,
}

async fn gate(
    State(s): State<AppState>,
    query: Result<Query<GateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = (|| {
        let Query(q) = query
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        let sel = Selector::parse(&q.scope)?;
        let answer = lock(&s.fleet).gate(&sel, Instant::now(), SystemTime::now())?;
        Ok::<_, ApiError>(answer)
    })();
    match result {
        Ok(a) => {
            let status = if a.verdict == Verdict::Go {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            s.metrics
                .gate_requests
                .with_label_values(&[a.verdict.as_str()])
                .inc();
            (status, Json(a)).into_response()
        }
        Err(e) => {
            s.metrics.gate_requests.with_label_values(&["error"]).inc();
            e.into_response()
        }
    }
}

async fn nodes(State(s): State<AppState>) -> Json<Vec<preflight_model::report::NodeSummary>> {
    Json(lock(&s.fleet).summaries(Instant::now()))
}

async fn node(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let f = lock(&s.fleet);
    let summary = f.summary(&name, Instant::now()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no node `{name}` in the inventory"),
        )
    })?;
    let state = f.state(&name);
    drop(f);
    Ok(Json(serde_json::json!({ "node": summary, "state": state.as_deref() })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn put_node(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<NodeBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    authorize(&headers, s.tokens.admin.as_ref())?;
    let Json(body) = body.map_err(|r| json_rejection(&r))?;
    crate::fleet::check_node_name(&name)?;
    crate::fleet::check_labels(&body.labels)?;
    let wall = SystemTime::now();
    let (store, n, l) = (s.store.clone(), name.clone(), body.labels.clone());
    tokio::task::spawn_blocking(move || lock(&store).upsert_node(&n, &l, "api", wall))
        .await
        .map_err(|e| store_error(&s.metrics, &e))?
        .map_err(|e| store_error(&s.metrics, &e))?;
    lock(&s.fleet).upsert_node(&name, body.labels, Instant::now(), wall)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_node(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&headers, s.tokens.admin.as_ref())?;
    if lock(&s.fleet).status(&name).is_none() {
        return Err(FleetError::NoSuchNode(name).into());
    }
    let (store, n) = (s.store.clone(), name.clone());
    tokio::task::spawn_blocking(move || lock(&store).remove_node(&n, "api", SystemTime::now()))
        .await
        .map_err(|e| store_error(&s.metrics, &e))?
        .map_err(|e| store_error(&s.metrics, &e))?;
    lock(&s.fleet).remove_node(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn waivers(State(s): State<AppState>) -> Json<Vec<Waiver>> {
    Json(lock(&s.fleet).waivers())
}

/// Body of `POST /v1/waivers`: `expires_at` (RFC 3339) or `duration`
/// (`2h`) is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaiverBody {
    node: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    reason: String,
    author: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    duration: Option<String>,
}

async fn post_waiver(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<WaiverBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Waiver>), ApiError> {
    authorize(&headers, s.tokens.admin.as_ref())?;
    let Json(b) = body.map_err(|r| json_rejection(&r))?;
    let wall = SystemTime::now();
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_waiver", m);
    let expires_at = match (&b.expires_at, &b.duration) {
        (Some(_), Some(_)) => return Err(bad("give either expires_at or duration, not both")),
        (None, None) => {
            return Err(bad(
                "an expiry is required: expires_at (RFC 3339) or duration (e.g. \"2h\")",
            ))
        }
        (Some(t), None) => {
            humantime::parse_rfc3339_weak(t).map_err(|e| bad(&format!("expires_at `{t}`: {e}")))?
        }
        (None, Some(d)) => {
            let d: Duration =
                humantime::parse_duration(d).map_err(|e| bad(&format!("duration `{d}`: {e}")))?;
            wall.checked_add(d)
                .ok_or_else(|| bad("duration too large"))?
        }
    };
    let w = Waiver {
        id: 0,
        node: b.node,
        code: b.code.filter(|c| !c.is_empty()),
        subject: b.subject.filter(|c| !c.is_empty()),
        reason: b.reason,
        author: b.author,
        created_at: wall,
        expires_at,
    };
    lock(&s.fleet).check_waiver(&w, wall)?;
    let store = s.store.clone();
    let w = tokio::task::spawn_blocking(move || lock(&store).insert_waiver(w))
        .await
        .map_err(|e| store_error(&s.metrics, &e))?
        .map_err(|e| store_error(&s.metrics, &e))?;
    let left = w
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    lock(&s.fleet).add_waiver(w.clone(), left, Instant::now());
    Ok((StatusCode::CREATED, Json(w)))
}

#[derive(Debug, Deserialize)]
struct ByQuery {
    #[serde(default)]
    by: Option<String>,
}

async fn delete_waiver(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ByQuery>,
) -> Result<StatusCode, ApiError> {
    authorize(&headers, s.tokens.admin.as_ref())?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("waiver id `{id}` is not a number"),
        )
    })?;
    let w = lock(&s.fleet)
        .waiver(id)
        .cloned()
        .ok_or(FleetError::NoSuchWaiver(id))?;
    let actor =
        q.by.filter(|b| !b.is_empty() && b.len() <= 200)
            .unwrap_or_else(|| "api".into());
    let store = s.store.clone();
    let w2 = w.clone();
    tokio::task::spawn_blocking(move || {
        lock(&store).end_waiver(&w2, &actor, "waiver.remove", SystemTime::now())
    })
    .await
    .map_err(|e| store_error(&s.metrics, &e))?
    .map_err(|e| store_error(&s.metrics, &e))?;
    lock(&s.fleet).remove_waiver(w.id, Instant::now())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

async fn audit(
    State(s): State<AppState>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<crate::store::AuditEntry>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = s.store.clone();
    let rows = tokio::task::spawn_blocking(move || lock(&store).audit(limit))
        .await
        .map_err(|e| store_error(&s.metrics, &e))?
        .map_err(|e| store_error(&s.metrics, &e))?;
    Ok(Json(rows))
}

async fn metrics(State(s): State<AppState>) -> Response {
    {
        let f = lock(&s.fleet);
        for (state, n) in f.counts_by_status() {
            s.metrics
                .nodes
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        s.metrics.node_blocked.reset();
        f.for_each_status(|name, status| {
            s.metrics
                .node_blocked
                .with_label_values(&[name])
                .set(i64::from(status != Status::Go));
        });
        for sel in s.scopes.iter() {
            let go = f.scope_verdict(sel) == Some(Verdict::Go);
            s.metrics
                .scope_go
                .with_label_values(&[&sel.text()])
                .set(i64::from(go));
        }
        s.metrics
            .waivers_active
            .set(i64::try_from(f.waivers().len()).unwrap_or(0));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || lock(&store).audit(1).map(|_| ()))
        .await
        .map_err(|e| store_error(&s.metrics, &e))?
        .map_err(|e| store_error(&s.metrics, &e))?;
    let f = lock(&s.fleet);
    let counts = f.counts_by_status();
    Ok(Json(
        serde_json::json!({ "status": "ready", "nodes": f.len(), "silent": counts.get("silent").copied().unwrap_or(0) }),
    ))
}

#[cfg(test)]
mod tests;
