//! The on-call page: one static HTML file (no CDN, no build step) that polls
//! `/v1/page` every two seconds and renders the fleet verdict, the blockers
//! worst first, the nodes, and the waivers. Node details load on demand.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;

use preflight_model::report::GateAnswer;

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

/// Rows of the node and blocker tables the page gets at most: a browser
/// table of 100,000 rows helps nobody, and building it every two seconds
/// would hold the fleet's lock for hundreds of milliseconds while reports
/// and gate questions wait. The rest is in `/v1/nodes` and `/v1/gate`.
pub const PAGE_ROWS: usize = 1000;

/// `GET /v1/page`: everything the page shows, in one answer. The verdict and
/// blockers are the whole fleet's gate answer, the scopes' rows theirs (the
/// kept answers without ready lists: no rendering when nothing changed); the
/// nodes are at most [`PAGE_ROWS`], those that are not go first.
pub async fn page_data(State(s): State<AppState>) -> Json<serde_json::Value> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let gate = |sel: &Selector| {
        s.answers
            .answer(&s.service, sel, false)
            .ok()
            .and_then(|r| serde_json::from_slice::<GateAnswer>(&r.body.to_bytes()).ok())
    };
    let all = gate(&Selector::default());
    let scopes: Vec<_> = s
        .scopes
        .iter()
        .filter_map(&gate)
        .map(|a| {
            serde_json::json!({
                "scope": a.scope, "verdict": a.verdict, "nodes": a.nodes, "blocked": a.blocked.len()
            })
        })
        .collect();
    let (counts, nodes_total, nodes, waivers) = s.service.read(|f| {
        (
            f.counts_by_status(),
            f.len(),
            f.page_summaries(now, PAGE_ROWS),
            f.waivers(),
        )
    });
    // Fail closed: an answer that cannot be had or read is a no-go.
    let (verdict, mut blockers, waived) = match all {
        Some(a) => (a.verdict, a.blockers, a.waived),
        None => (preflight_model::Verdict::NoGo, Vec::new(), Vec::new()),
    };
    let blockers_total = blockers.len();
    blockers.truncate(PAGE_ROWS);
    Json(serde_json::json!({
        "generated_at": preflight_model::time::format(wall),
        "verdict": verdict,
        "counts": counts,
        "scopes": scopes,
        "blockers": blockers,
        "blockers_total": blockers_total,
        "waived": waived,
        "nodes": nodes,
        "nodes_total": nodes_total,
        "waivers": waivers,
    }))
}
