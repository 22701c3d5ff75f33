//! `GET /v1/gate`: the go/no-go answer for a scope; 200 for go, 503 for
//! no-go, same body. A read: it never changes the fleet.

use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use preflight_model::Verdict;
use serde::Deserialize;
use tokio::time::Instant;

use super::{query_rejection, ApiError};
use crate::fleet::Selector;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(super) struct GateQuery {
    #[serde(default)]
    scope: String,
}

pub(super) async fn gate(
    State(s): State<AppState>,
    query: Result<Query<GateQuery>, QueryRejection>,
) -> Response {
    let result = (|| {
        let Query(q) = query.map_err(|e| query_rejection(&e))?;
        tracing::Span::current().record("scope", q.scope.as_str());
        let sel = Selector::parse(&q.scope)?;
        let answer = s
            .service
            .read(|f| f.gate(&sel, Instant::now(), SystemTime::now()))?;
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
