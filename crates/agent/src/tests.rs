//! The push loop against an HTTP server on loopback that refuses bodies
//! over the aggregator's limit the way the aggregator does (axum's
//! `DefaultBodyLimit` at `MAX_REPORT_BYTES`, answered 413): a report
//! refused for its size is counted and logged as such, not hidden among
//! other errors while the aggregator shows the node as silent.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use preflight_model::report::MAX_REPORT_BYTES;
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot};

use super::*;

async fn aggregator_like() -> BaseUrl {
    let app = Router::new()
        .route(
            "/v1/reports",
            post(|_body: axum::body::Bytes| async {
                Json(serde_json::json!({ "status": "accepted" }))
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    BaseUrl::parse(&format!("http://{addr}")).expect("url")
}

fn config() -> AgentConfig {
    toml::from_str::<RawAgentSection>("node = \"n1\"\novsdb = \"off\"")
        .expect("parses")
        .validate("agent")
        .expect("valid")
        .resolve("agent", PolicyConfig::default(), None)
        .expect("resolves")
}

/// A state whose report is about `bytes` long.
fn state_of(bytes: usize) -> Versioned {
    let findings = (0..bytes / 1000)
        .map(|i| Finding {
            code: Code::BondPortDown,
            severity: Severity::Critical,
            subject: format!("bond0/eth{i}"),
            message: "m".repeat(900),
            since: std::time::SystemTime::now(),
        })
        .collect();
    Versioned {
        version: 1,
        state: Arc::new(NodeState::new("n1".into(), &Snapshot::default(), findings)),
        expectations: None,
    }
}

async fn wait_for(metrics: &AgentMetrics, series: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.render();
        if text.contains(series) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_report_refused_for_its_size_is_counted_as_too_large() {
    let url = aggregator_like().await;
    let label = url.to_string();
    let client = AggregatorClient::http_only(vec![url], Duration::from_secs(5));
    let (tx, rx) = watch::channel(state_of(2 * MAX_REPORT_BYTES));
    let metrics = AgentMetrics::new();
    let pusher = tokio::spawn(push_loop(
        client,
        config(),
        "boot".into(),
        rx,
        metrics.clone(),
        Arc::new(Notify::new()),
    ));
    let series = format!(
        "preflight_report_pushes_rejected_total{{aggregator=\"{label}\",reason=\"too_large\"}}"
    );
    let text = wait_for(&metrics, &series).await;
    assert!(
        text.contains(&series),
        "no too_large rejection counted:\n{text}"
    );
    // The same aggregator takes a report of ordinary size.
    tx.send(Versioned {
        version: 2,
        ..state_of(10_000)
    })
    .expect("send");
    let ok = format!("preflight_report_pushes_total{{aggregator=\"{label}\",result=\"ok\"}} 1");
    let text = wait_for(&metrics, &ok).await;
    pusher.abort();
    assert!(
        text.contains(&ok),
        "the ordinary report was not accepted:\n{text}"
    );
}
