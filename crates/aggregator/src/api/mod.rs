//! The HTTP API (axum). [`router`] builds the whole app from an [`AppState`];
//! tests drive it with `oneshot`, `main` binds and serves it. Handlers parse
//! and authorize, then call the [`Service`](crate::service::Service), which
//! owns every change; one submodule per resource.
//!
//! Errors are one [`ApiError`] type (`crate::error`) rendered as
//! `{"error": code, "message"}`. Every rejected request changes nothing.
//! [`require_role`] puts `auth`'s decision in front of every route.

mod gate;
mod maintenance;
mod nodes;
mod ops;
pub mod page;
mod reports;
mod waivers;

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use preflight_model::report::MAX_REPORT_BYTES;
use tower_http::trace::TraceLayer;

use crate::auth::{Caller, PeerCert, Role};
pub use crate::error::ApiError;
pub use crate::state::AppState;

/// Longest a request may take. Every handler is a lock and at most one
/// SQLite call; one that hangs (a stuck disk) is answered 503 `timeout`,
/// which clients treat as "no answer": the gate client fails closed and
/// tries the next aggregator, agents retry.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a request not answered within [`REQUEST_TIMEOUT`] with 503
/// `timeout` (its handler is dropped).
async fn timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "not answered within {} s (is the store stuck?); a change asked for may or may not have been made",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
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

fn query_rejection(r: &QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
}

/// The middleware: authenticates, authorizes by route (the role
/// `auth` says the route needs), and leaves the [`Caller`] in the
/// request's extensions; a refused report is counted.
pub async fn require_role(
    State(s): State<AppState>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let Some(role) = crate::auth::needs(req.method(), &route) else {
        req.extensions_mut().insert(Caller(None));
        return next.run(req).await;
    };
    match s
        .auth
        .check(role, req.headers(), req.extensions().get::<PeerCert>())
    {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            if role == Role::Agent {
                s.metrics
                    .reports_rejected
                    .with_label_values(&[if e.status() == StatusCode::FORBIDDEN {
                        "forbidden"
                    } else {
                        "unauthorized"
                    }])
                    .inc();
            }
            e.into_response()
        }
    }
}

/// Records `node` on the request's span (the trace layer declares it).
fn span_node(node: &str) {
    tracing::Span::current().record("node", node);
}

/// The request's span: method, route, and the fields handlers and the
/// response fill in (`node`, `scope`, `status`).
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path(), MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        node = tracing::field::Empty,
        scope = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(request_span)
        .on_response(|resp: &Response, latency: Duration, span: &tracing::Span| {
            span.record("status", resp.status().as_u16());
            tracing::debug!(latency_us = latency.as_micros(), "response");
        })
        // A no-go gate answer is a 503 and store errors are logged where they
        // happen: the layer's default "failure" log would be noise.
        .on_failure(());
    Router::new()
        .route("/v1/reports", post(reports::post_report))
        .route("/v1/gate", get(gate::gate))
        .route("/v1/nodes", get(nodes::nodes))
        .route(
            "/v1/nodes/{node}",
            get(nodes::node)
                .put(nodes::put_node)
                .delete(nodes::delete_node),
        )
        .route(
            "/v1/waivers",
            get(waivers::waivers).post(waivers::post_waiver),
        )
        .route("/v1/waivers/{id}", delete(waivers::delete_waiver))
        .route(
            "/v1/maintenance",
            get(maintenance::leases).post(maintenance::post_lease),
        )
        .route("/v1/maintenance/{id}", delete(maintenance::delete_lease))
        .route("/v1/plan", get(maintenance::get_plan).post(maintenance::post_plan))
        .route("/v1/audit", get(ops::audit))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/", get(page::page))
        .route("/v1/page", get(page::page_data))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/api.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method (the Allow header lists those it takes); see docs/api.md",
            )
        })
        // Only matched routes: an unknown path is a 404 for everyone.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_role,
        ))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .layer(axum::middleware::from_fn(timeout))
        .layer(trace)
        .with_state(state)
}

#[cfg(test)]
mod maintenance_tests;
#[cfg(test)]
mod tests;
