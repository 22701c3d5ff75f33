//! `/v1/nodes`: the inventory with each node's status, one node with its
//! last state, and adding, relabeling or removing a node (admin token).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use preflight_model::api::{NodeDetail, NodeRequest};
use preflight_model::report::NodeSummary;
use tokio::time::Instant;

use super::{json_rejection, span_node, ApiError};
use crate::state::AppState;

pub(super) async fn nodes(State(s): State<AppState>) -> Json<Vec<NodeSummary>> {
    Json(s.service.read(|f| f.summaries(Instant::now())))
}

pub(super) async fn node(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    span_node(&name);
    let (summary, state) = s
        .service
        .read(|f| (f.summary(&name, Instant::now()), f.state(&name)));
    let summary = summary.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no node `{name}` in the inventory"),
        )
    })?;
    Ok(Json(NodeDetail {
        node: summary,
        state: state.map(|s| (*s).clone()),
    })
    .into_response())
}

pub(super) async fn put_node(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<NodeRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    span_node(&name);
    let Json(body) = body.map_err(|r| json_rejection(&r))?;
    s.service.put_node(&name, body.labels).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_node(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    span_node(&name);
    s.service.delete_node(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
