//! `POST /v1/reports`: agents' reports, with a rejection counter by reason.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use preflight_model::report::{AckStatus, Report, ReportAck};

use super::{authorize, json_rejection, span_node, ApiError};
use crate::fleet::{FleetError, ReportOutcome};
use crate::service::ServiceError;
use crate::state::AppState;

pub(super) async fn post_report(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<ReportAck>, ApiError> {
    let reject = |reason: &str| {
        s.metrics
            .reports_rejected
            .with_label_values(&[reason])
            .inc();
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
    span_node(&report.node);
    let outcome = s.service.report(&report).await.map_err(|e| {
        reject(match &e {
            ServiceError::Fleet(FleetError::UnknownNode(_)) => "unknown_node",
            ServiceError::Fleet(FleetError::StaleSequence { .. }) => "stale_sequence",
            ServiceError::Fleet(FleetError::SequenceJump { .. }) => "sequence_jump",
            ServiceError::Fleet(FleetError::TooLarge(_)) => "too_large",
            ServiceError::Fleet(_) => "bad_request",
            ServiceError::Store(_) | ServiceError::Unrecorded(_) => "store_error",
        });
        ApiError::from(e)
    })?;
    match outcome {
        ReportOutcome::NeedFull => Ok(Json(ReportAck {
            status: AckStatus::NeedFull,
        })),
        ReportOutcome::Accepted { full, .. } => {
            s.metrics
                .reports
                .with_label_values(&[if full { "full" } else { "heartbeat" }])
                .inc();
            Ok(Json(ReportAck {
                status: AckStatus::Accepted,
            }))
        }
    }
}
