//! `/v1/waivers`: active waivers; creating and ending one (admin token).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use preflight_model::api::WaiverRequest;
use preflight_model::report::Waiver;
use serde::Deserialize;

use super::{json_rejection, query_rejection, span_node, ApiError};
use crate::state::AppState;

pub(super) async fn waivers(State(s): State<AppState>) -> Json<Vec<Waiver>> {
    Json(s.service.read(crate::fleet::Fleet::waivers))
}

pub(super) async fn post_waiver(
    State(s): State<AppState>,
    body: Result<Json<WaiverRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Waiver>), ApiError> {
    let Json(b) = body.map_err(|r| json_rejection(&r))?;
    span_node(&b.node);
    let wall = crate::clock::wall();
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
    let w = s.service.add_waiver(w).await?;
    Ok((StatusCode::CREATED, Json(w)))
}

#[derive(Debug, Deserialize)]
pub(super) struct ByQuery {
    #[serde(default)]
    by: Option<String>,
}

pub(super) async fn delete_waiver(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ByQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(|e| query_rejection(&e))?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("waiver id `{id}` is not a number"),
        )
    })?;
    let actor =
        q.by.filter(|b| !b.is_empty() && b.len() <= 200)
            .unwrap_or_else(|| "api".into());
    s.service.remove_waiver(id, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
