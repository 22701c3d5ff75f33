//! `/v1/maintenance` (leases: list, take, end) and `/v1/plan` (the largest
//! batch that may start now; `POST` takes it under a lease). A plan is 200
//! when its batch is not empty, 503 when it is, same body.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{json_rejection, query_rejection, ApiError};
use crate::auth::Caller;
use crate::fleet::{Budget, Plan, PlanQuestion, Selector};
use crate::state::AppState;
use crate::store::Lease;

/// `POST /v1/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LeaseRequest {
    nodes: Vec<String>,
    duration: String,
    reason: String,
    pipeline: String,
}

/// `GET /v1/plan`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanQuery {
    #[serde(default)]
    scope: String,
    max_unavailable: Option<String>,
    per: Option<String>,
}

/// `POST /v1/plan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanRequest {
    #[serde(default)]
    scope: String,
    max_unavailable: Option<String>,
    per: Option<String>,
    duration: String,
    reason: String,
    pipeline: String,
}

/// `POST /v1/plan`'s answer: the plan, and the lease of its batch.
#[derive(Debug, Serialize)]
struct Taken {
    #[serde(flatten)]
    plan: Plan,
    lease: Option<Lease>,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
}

/// The question: a scope, `max_unavailable` (`N` or `P%`, default 1: one
/// node at a time, as kured's lock), `per=LABEL:K`.
fn question(scope: &str, max: Option<&str>, per: Option<&str>) -> Result<PlanQuestion, ApiError> {
    tracing::Span::current().record("scope", scope);
    let scope = Selector::parse(scope)?;
    let max_unavailable = match max {
        None => Budget::Count(1),
        Some(m) => Budget::parse(m).map_err(|e| bad(format!("max_unavailable {e}")))?,
    };
    let per = match per {
        None => None,
        Some(p) => {
            let (label, k) = p.rsplit_once(':').ok_or_else(|| {
                bad(format!(
                    "per `{}`: expected LABEL:K, e.g. rack:1",
                    preflight_model::excerpt::excerpt(p)
                ))
            })?;
            preflight_model::names::check_labels(
                &std::iter::once((label.to_owned(), "x".to_owned())).collect(),
            )
            .map_err(|e| bad(format!("per: {e}")))?;
            let k: usize = k.parse().ok().filter(|k| *k >= 1).ok_or_else(|| {
                bad(format!(
                    "per: K `{}` is not a number of at least 1",
                    preflight_model::excerpt::excerpt(k)
                ))
            })?;
            Some((label.to_owned(), k))
        }
    };
    Ok(PlanQuestion {
        scope,
        max_unavailable,
        per,
    })
}

/// A lease's terms from a request, its author the caller.
fn terms(
    caller: &Caller,
    duration: &str,
    reason: String,
    pipeline: String,
) -> Result<Lease, ApiError> {
    let d: Duration = humantime::parse_duration(duration).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_lease",
            format!(
                "duration `{}`: {e}",
                preflight_model::excerpt::excerpt(duration)
            ),
        )
    })?;
    let now = crate::clock::wall();
    let expires_at = now
        .checked_add(d)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_lease", "duration too large"))?;
    Ok(Lease {
        id: 0,
        nodes: Vec::new(),
        pipeline,
        reason,
        author: caller
            .0
            .as_ref()
            .map_or_else(|| "api".to_owned(), |i| i.name.clone()),
        created_at: now,
        expires_at,
    })
}

fn plan_response<T: Serialize>(empty: bool, body: &T) -> Response {
    let status = if empty {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

pub(super) async fn leases(State(s): State<AppState>) -> Json<Vec<Lease>> {
    Json(s.service.read(crate::fleet::Fleet::leases))
}

pub(super) async fn post_lease(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Lease>), ApiError> {
    let Json(b) = body.map_err(|r| json_rejection(&r))?;
    let mut l = terms(&caller, &b.duration, b.reason, b.pipeline)?;
    l.nodes = b.nodes;
    let l = s.service.add_lease(l).await?;
    Ok((StatusCode::CREATED, Json(l)))
}

pub(super) async fn delete_lease(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        bad(format!(
            "lease id `{}` is not a number",
            preflight_model::excerpt::excerpt(&id)
        ))
    })?;
    let actor = caller
        .0
        .as_ref()
        .map_or_else(|| "api".to_owned(), |i| i.name.clone());
    s.service.end_lease(id, actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_plan(
    State(s): State<AppState>,
    q: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| query_rejection(&e))?;
    let q = question(&q.scope, q.max_unavailable.as_deref(), q.per.as_deref())?;
    let plan = s.service.plan(&q)?;
    Ok(plan_response(plan.batch.is_empty(), &plan))
}

pub(super) async fn post_plan(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|r| json_rejection(&r))?;
    let q = question(&b.scope, b.max_unavailable.as_deref(), b.per.as_deref())?;
    let template = terms(&caller, &b.duration, b.reason, b.pipeline)?;
    let (plan, lease) = s.service.take_plan(q, template).await?;
    Ok(plan_response(lease.is_none(), &Taken { plan, lease }))
}
