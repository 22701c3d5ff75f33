//! Operations endpoints: the audit log, Prometheus metrics, liveness and
//! readiness.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use preflight_model::Verdict;
use serde::Deserialize;

use super::{query_rejection, ApiError};
use crate::fleet::Status;
use crate::state::AppState;
use crate::store::AuditEntry;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(q) = q.map_err(|e| query_rejection(&e))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.service.audit(limit).await?))
}

/// What the metrics show of the fleet, copied under its read lock.
struct FleetFigures {
    by_status: Vec<(&'static str, usize)>,
    blocked: Vec<(String, bool)>,
    scopes: Vec<(String, bool)>,
    waivers: usize,
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    // Copied under the lock, set outside it: setting 100,000 labelled
    // gauges takes long enough to hold every report and gate question up.
    let fig = s.service.read(|f| {
        let mut blocked = Vec::with_capacity(f.len());
        f.for_each_status(|name, status| blocked.push((name.to_owned(), status != Status::Go)));
        FleetFigures {
            by_status: f.counts_by_status().into_iter().collect(),
            blocked,
            scopes: s
                .scopes
                .iter()
                .map(|sel| (sel.text(), f.scope_verdict(sel) == Some(Verdict::Go)))
                .collect(),
            waivers: f.waivers().len(),
        }
    });
    let body = {
        // One scrape at a time sets the gauges and renders them.
        let _one = m
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (state, n) in fig.by_status {
            m.nodes
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        m.node_blocked.reset();
        for (name, blocked) in &fig.blocked {
            m.node_blocked
                .with_label_values(&[name])
                .set(i64::from(*blocked));
        }
        for (scope, go) in &fig.scopes {
            m.scope_go.with_label_values(&[scope]).set(i64::from(*go));
        }
        m.waivers_active
            .set(i64::try_from(fig.waivers).unwrap_or(i64::MAX));
        m.render()
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.service.check_store().await?;
    let synchronous = s.service.store_synchronous().await?;
    let (nodes, silent) = s.service.read(|f| {
        let silent = f.counts_by_status().get("silent").copied().unwrap_or(0);
        (f.len(), silent)
    });
    Ok(Json(
        serde_json::json!({ "status": "ready", "nodes": nodes, "silent": silent,
            "store_synchronous": synchronous }),
    ))
}
