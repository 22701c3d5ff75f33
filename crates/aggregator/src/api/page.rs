//! The on-call page: one static HTML file (no CDN, no build step) that polls
//! `/v1/page` every two seconds and renders the fleet verdict, the blockers
//! worst first, the nodes, and the waivers. Node details load on demand.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;

use crate::fleet::Selector;
use crate::state::AppState;

const PAGE: &str = include_str!("page.html");

/// `GET /`: the page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /v1/page`: everything the page shows, in one answer.
pub async fn page_data(State(s): State<AppState>) -> Json<serde_json::Value> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let (all, scopes, counts, nodes, waivers) = s.service.read(|f| {
        let all = f.gate(&Selector::default(), now, wall);
        let mut scopes = Vec::new();
        for sel in s.scopes.iter() {
            if let Ok(a) = f.gate(sel, now, wall) {
                scopes.push(serde_json::json!({
                    "scope": a.scope, "verdict": a.verdict, "nodes": a.nodes, "blocked": a.blocked.len()
                }));
            }
        }
        (all, scopes, f.counts_by_status(), f.summaries(now), f.waivers())
    });
    let (verdict, blockers, waived) = match all {
        Ok(a) => (a.verdict, a.blockers, a.waived),
        Err(_) => (preflight_model::Verdict::NoGo, Vec::new(), Vec::new()),
    };
    Json(serde_json::json!({
        "generated_at": preflight_model::time::format(wall),
        "verdict": verdict,
        "counts": counts,
        "scopes": scopes,
        "blockers": blockers,
        "waived": waived,
        "nodes": nodes,
        "waivers": waivers,
    }))
}
