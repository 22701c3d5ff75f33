//! `GET /v1/gate`: the go/no-go answer for a scope; 200 for go, 503 for
//! no-go, same body. A read: it never changes the fleet. The body comes
//! from [`crate::answers`] (rendered once per change of the scope);
//! `ready=false` leaves out the list of ready nodes, which is most of a
//! large scope's answer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use preflight_model::Verdict;
use serde::Deserialize;

use super::{query_rejection, ApiError};
use crate::fleet::Selector;
use crate::state::AppState;

const fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub(super) struct GateQuery {
    #[serde(default)]
    scope: String,
    /// List the ready nodes (`true`, the default) or not (`false`).
    #[serde(default = "yes")]
    ready: bool,
}

pub(super) async fn gate(
    State(s): State<AppState>,
    query: Result<Query<GateQuery>, QueryRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let result = (|| {
        let Query(q) = query.map_err(|e| query_rejection(&e))?;
        tracing::Span::current().record("scope", q.scope.as_str());
        let sel = Selector::parse(&q.scope)?;
        Ok::<_, ApiError>(s.answers.answer(&s.service, &sel, q.ready)?)
    })();
    s.metrics
        .gate_seconds
        .observe(started.elapsed().as_secs_f64());
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
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::new(a.body.frames()),
            )
                .into_response()
        }
        Err(e) => {
            s.metrics.gate_requests.with_label_values(&["error"]).inc();
            e.into_response()
        }
    }
}
