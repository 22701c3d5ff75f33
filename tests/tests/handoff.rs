//! Report connections are served on the aggregator's report threads and
//! every other connection where it was accepted (crates/aggregator's
//! `handoff`), over plain HTTP and TLS: each request answers with the name
//! of the thread that served it, and a connection keeps the pool its first
//! request chose for the requests after it.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use axum::routing::{get, post};
use axum::Router;
use preflight_aggregator::conn::ConnLimits;
use preflight_aggregator::metrics::Metrics;
use preflight_aggregator::tls::{ServerTls, TlsSettings};
use preflight_tests::certs::{ca, leaf};

const REPORT: &str = "POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}";
const GATE: &str = "GET /v1/gate?scope= HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// The serving thread's name and nice value (`/proc/thread-self/stat`).
fn thread_name() -> String {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let after_comm = stat.rsplit_once(") ").expect("comm").1;
    let nice = after_comm.split(' ').nth(16).expect("nice field");
    format!(
        "{} {nice}",
        std::thread::current().name().unwrap_or("unnamed")
    )
}

/// Answers the report and gate paths with the serving thread's name and
/// nice value.
fn app() -> Router {
    Router::new()
        .route("/v1/reports", post(|| async { thread_name() }))
        .route("/v1/gate", get(|| async { thread_name() }))
}

/// The accepting runtime: two workers named `front`.
fn front() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("front")
        .enable_all()
        .build()
        .expect("runtime")
}

fn limits() -> ConnLimits {
    ConnLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(10),
        ..ConnLimits::for_this_process()
    }
}

/// Sends each request in turn on one connection and returns each answer's
/// body.
fn exchange(stream: impl Read + Write, requests: &[&str]) -> Vec<String> {
    let mut conn = BufReader::new(stream);
    requests
        .iter()
        .map(|req| {
            conn.get_mut().write_all(req.as_bytes()).expect("send");
            conn.get_mut().flush().expect("flush");
            let mut length = None;
            loop {
                let mut line = String::new();
                conn.read_line(&mut line).expect("answer head");
                assert!(
                    !line.is_empty(),
                    "connection closed before the answer to {req:?}"
                );
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = Some(value.trim().parse::<usize>().expect("length"));
                    }
                }
            }
            let mut body = vec![0; length.expect("a Content-Length")];
            conn.read_exact(&mut body).expect("answer body");
            String::from_utf8(body).expect("text")
        })
        .collect()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Asserts which threads served a report-first and a gate-first
/// connection, each asking twice; `open` makes a client connection.
fn assert_split<S: Read + Write>(open: impl Fn() -> S) {
    let reports = exchange(open(), &[REPORT, GATE, REPORT]);
    let gate = exchange(open(), &[GATE, REPORT, GATE]);
    let front_nice: i32 = gate[0]
        .strip_prefix("front ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the gate's connection stays on the front threads: {gate:?}"));
    assert!(
        gate.iter().all(|t| *t == format!("front {front_nice}")),
        "a connection that asked the gate first stays where it was accepted: {gate:?}"
    );
    let expected = format!("preflight-reports {}", (front_nice + 10).min(19));
    assert!(
        reports.iter().all(|t| *t == expected),
        "a connection that reported first is served by the report threads at nice +10 ({expected}): {reports:?}"
    );
}

/// Shuts a server down when it resolves.
type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the server `start` makes (on a loopback listener, until the
/// [`Stop`] it is given resolves) on the front runtime while `client`
/// talks to its port.
fn with_server<F>(start: impl FnOnce(TcpListener, Stop) -> F, client: impl FnOnce(u16))
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = front();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(start(
        listener,
        Box::pin(async move {
            let _ = stopped.await;
        }),
    ));
    client(port);
    let _ = stop.send(());
    rt.block_on(server)
        .expect("the server ends without a panic");
}

#[test]
fn plain_report_connections_run_on_the_report_threads() {
    with_server(
        |listener, stop| async move {
            preflight_aggregator::conn::serve(listener, app(), limits(), &Metrics::new(), stop)
                .await
                .expect("served");
        },
        |port| assert_split(|| connect(port)),
    );
}

#[test]
fn tls_report_connections_run_on_the_report_threads() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    ca(d, "ca");
    leaf(d, "ca", "server", "IP:127.0.0.1", None);
    let tls = Arc::new(
        ServerTls::load(
            TlsSettings {
                cert: d.join("server.pem"),
                key: d.join("server.key"),
                client_ca: None,
            },
            Metrics::new(),
        )
        .expect("server TLS"),
    );
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read_to_string(d.join("ca.pem")).expect("ca.pem");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).expect("CA PEM");
    roots.add(der).expect("CA");
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    with_server(
        |listener, stop| async move {
            preflight_aggregator::tls::serve(listener, app(), tls, limits(), &Metrics::new(), stop)
                .await;
        },
        |port| {
            assert_split(|| {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
                rustls::StreamOwned::new(conn, connect(port))
            });
        },
    );
}
