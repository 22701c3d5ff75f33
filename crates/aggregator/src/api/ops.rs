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

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    s.service.read(|f| {
        for (state, n) in f.counts_by_status() {
            m.nodes
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        m.node_blocked.reset();
        f.for_each_status(|name, status| {
            m.node_blocked
                .with_label_values(&[name])
                .set(i64::from(status != Status::Go));
        });
        for sel in s.scopes.iter() {
            let go = f.scope_verdict(sel) == Some(Verdict::Go);
            m.scope_go
                .with_label_values(&[&sel.text()])
                .set(i64::from(go));
        }
        m.waivers_active
            .set(i64::try_from(f.waivers().len()).unwrap_or(0));
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.service.check_store().await?;
    let (nodes, silent) = s.service.read(|f| {
        let silent = f.counts_by_status().get("silent").copied().unwrap_or(0);
        (f.len(), silent)
    });
    Ok(Json(
        serde_json::json!({ "status": "ready", "nodes": nodes, "silent": silent }),
    ))
}
