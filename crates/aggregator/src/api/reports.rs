//! `POST /v1/reports`: agents' reports, with a rejection counter by reason.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use preflight_model::report::{AckStatus, Report, ReportAck};

use super::{json_rejection, span_node, ApiError};
use crate::auth::Caller;
use crate::fleet::{FleetError, ReportOutcome};
use crate::service::ServiceError;
use crate::state::AppState;

pub(super) async fn post_report(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<ReportAck>, ApiError> {
    let reject = |reason: &str| {
        s.metrics
            .reports_rejected
            .with_label_values(&[reason])
            .inc();
    };
    let Json(report) = body.map_err(|r| {
        let e = json_rejection(&r);
        reject(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        });
        e
    })?;
    span_node(&report.node);
    if !caller.may_report_for(&report.node) {
        // A credential used for another node: a stolen or misused key.
        reject("forbidden");
        s.service
            .audit_refusal(caller.name(), "report.forbidden", &report.node)
            .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`{}` may not report for node `{}`",
                caller.name(),
                report.node
            ),
        ));
    }
    let outcome = s.service.report(report, caller.name()).await.map_err(|e| {
        reject(match &e {
            ServiceError::Fleet(FleetError::UnknownNode(_)) => "unknown_node",
            ServiceError::Fleet(
                FleetError::StaleSequence { .. } | FleetError::RetiredBoot { .. },
            ) => "stale_sequence",
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
