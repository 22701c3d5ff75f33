//! The client against a real aggregator (its SQLite store in a temporary
//! directory) on a loopback socket, with dead servers in front of it to show
//! the failover, and one misbehaving server for what a real one never says.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use preflight_aggregator::server::{run, AggregatorConfig};

use super::*;

/// A loopback address where nothing listens (bound once, then closed).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn url(addr: SocketAddr) -> BaseUrl {
    BaseUrl::parse(&format!("http://{addr}")).expect("url")
}

/// Starts a real aggregator; the directory holds its database.
async fn aggregator(dir: &tempfile::TempDir) -> SocketAddr {
    let cfg = AggregatorConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: preflight_aggregator::store::Database::Sqlite(dir.path().join("preflight.db")),
        state_dir: None,
        fleet: preflight_aggregator::fleet::FleetConfig::default(),
        auth: preflight_aggregator::auth::Auth::default(),
        tls: None,
        scopes: Vec::new(),
        inventory: vec![(
            "n1".into(),
            BTreeMap::from([("role".into(), "compute".into())]),
        )],
        max_connections_per_source: preflight_aggregator::admit::DEFAULT_MAX_PER_SOURCE,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(run(cfg, std::future::pending(), move |a| {
        let _ = tx.send(a);
    }));
    rx.await.expect("aggregator started")
}

#[tokio::test]
async fn fails_over_to_the_server_that_answers_and_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = url(aggregator(&dir).await);
    let dead = url(dead_addr());
    let c = AggregatorClient::new(vec![dead.clone(), live.clone()], Duration::from_secs(5));

    // A node in the inventory that never reported: no-go, answered by the
    // second server, the first named as skipped.
    let GateResult::NoGo(a) = c.gate("role=compute").await else {
        panic!("a silent node is no-go");
    };
    assert_eq!(a.server, live);
    assert_eq!(a.skipped.len(), 1);
    assert!(a.skipped[0].contains(&dead.to_string()), "{:?}", a.skipped);
    assert_eq!(a.value.blocked, ["n1"]);

    // A scope no node has is the question's fault: refused, not no-go.
    match c.gate("role=storage").await {
        GateResult::Refused(ClientError::Refused { status, server, .. }) => {
            assert_eq!((status, server), (400, live.clone()));
        }
        other => panic!("unknown scope: {other:?}"),
    }

    let nodes = c.nodes().await.expect("nodes");
    assert_eq!(nodes.value[0].node, "n1");
    let n = c.node("n1").await.expect("node");
    assert_eq!((n.value.node.node.as_str(), n.value.state), ("n1", None));
    assert_eq!(c.node("n2").await.expect_err("unknown").status(), Some(404));

    let req = WaiverRequest {
        node: "n1".into(),
        code: None,
        subject: None,
        reason: "rack move".into(),
        author: "test".into(),
        expires_at: None,
        duration: Some("1h".into()),
    };
    let w = c.add_waiver(&req).await.expect("waiver");
    assert_eq!(w.value.node, "n1");
    assert_eq!(c.waivers().await.expect("list").value.len(), 1);
    let no_expiry = WaiverRequest {
        duration: None,
        ..req
    };
    assert_eq!(
        c.add_waiver(&no_expiry)
            .await
            .expect_err("no expiry")
            .status(),
        Some(400)
    );
    c.remove_waiver(w.value.id, "test").await.expect("removed");
    assert!(c.waivers().await.expect("list").value.is_empty());
    assert_eq!(
        c.remove_waiver(w.value.id, "test")
            .await
            .expect_err("gone")
            .status(),
        Some(404)
    );
}

/// The agent's client when nothing it talks to is https (no CA store is
/// read) speaks to an http aggregator like any other.
#[tokio::test]
async fn an_http_only_client_reaches_an_http_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = url(aggregator(&dir).await);
    let c = AggregatorClient::http_only(vec![live.clone()], Duration::from_secs(5));
    let GateResult::NoGo(a) = c.gate("role=compute").await else {
        panic!("a silent node is no-go");
    };
    assert_eq!(a.server, live);
}

#[tokio::test]
async fn nobody_answering_is_undecided() {
    let c = AggregatorClient::new(
        vec![url(dead_addr()), url(dead_addr())],
        Duration::from_secs(2),
    );
    match c.gate("").await {
        GateResult::Undecided(ClientError::NoAnswer(errors)) => assert_eq!(errors.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.nodes().await,
        Err(ClientError::NoAnswer(e)) if e.len() == 2
    ));
}

/// A server whose status and body disagree (200 with a no-go body) is not
/// trusted: the next server is asked, and with none left it is undecided.
#[tokio::test]
async fn status_and_body_must_agree() {
    let answer = serde_json::json!({
        "verdict": "no-go", "scope": "", "nodes": 1, "blockers": [], "ready": [],
        "blocked": ["n1"], "waived": [], "generated_at": "2024-01-01T00:00:00Z"
    });
    let app = axum::Router::new().route(
        "/v1/gate",
        axum::routing::get(move || {
            let a = answer.clone();
            async move { axum::Json(a) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    let c = AggregatorClient::new(vec![url(addr)], Duration::from_secs(5));
    match c.gate("").await {
        GateResult::Undecided(e) => {
            assert!(e.to_string().contains("disagrees with the verdict"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
