//! The one error answer of the HTTP API: [`ApiError`], a status, a code and
//! a message, rendered as `{"error": code, "message"}`, and how the fleet's
//! and the service's errors map to it. A module of its own so that the
//! code that refuses requests (`auth`, the handlers in `api`) shares it
//! without depending on the router, and the router on it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use preflight_model::api::ApiErrorBody;

use crate::fleet::FleetError;
use crate::service::ServiceError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiErrorBody {
                error: self.code.to_owned(),
                message: self.message,
            }),
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
            FleetError::StaleSequence { .. } | FleetError::RetiredBoot { .. } => {
                (StatusCode::CONFLICT, "stale_sequence")
            }
            FleetError::SequenceJump { .. } => (StatusCode::CONFLICT, "sequence_jump"),
            FleetError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            FleetError::BadReport(_) => (StatusCode::BAD_REQUEST, "bad_report"),
            FleetError::BadWaiver(_) => (StatusCode::BAD_REQUEST, "bad_waiver"),
            FleetError::BadLease(_) => (StatusCode::BAD_REQUEST, "bad_lease"),
            FleetError::Leased(_) => (StatusCode::CONFLICT, "leased"),
            FleetError::NotGo { .. } => (StatusCode::CONFLICT, "not_go"),
            FleetError::NoSuchWaiver(_)
            | FleetError::NoSuchNode(_)
            | FleetError::NoSuchLease(_) => (StatusCode::NOT_FOUND, "not_found"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Fleet(e) => e.into(),
            // Counted and logged by the service.
            ServiceError::Store(e) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                format!("the store failed: {e}"),
            ),
            ServiceError::Unrecorded(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_error", m)
            }
        }
    }
}
