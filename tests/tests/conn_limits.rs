//! A connection flood from one address must not keep a pipeline's gate or
//! an agent's report out (issue 37): a real `preflight aggregator` process
//! with a small file-descriptor limit (`ulimit -n 256`, so that the flood
//! reaches the process-wide connection cap), flooded from 127.0.0.2 with
//! slowloris connections (half send nothing, half drip a request header a
//! byte at a time), while `preflight gate` and an agent's report come from
//! 127.0.0.1. Loopback only; every loop is bounded in count and time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_client::{AggregatorClient, BaseUrl};
use preflight_model::report::{Report, ReportBody};
use preflight_model::{NodeState, Snapshot};
use preflight_tests::{free_port, preflight_bin, Proc};
use tokio::io::AsyncWriteExt as _;

const ADMIN: &str = "admin-secret-conn-limits";
const N1_TOKEN: &str = "n1-token-conn-limits";
/// The aggregator's RLIMIT_NOFILE: its connection cap is this minus the
/// descriptors it keeps for itself.
const NOFILE: u32 = 256;
/// Flood connections: more than the whole cap.
const FLOOD: usize = 400;
/// Longest a gate question or a report may take under the flood.
const PROMPT: Duration = Duration::from_secs(3);

fn digest(token: &str) -> String {
    preflight_aggregator::auth::hex(&preflight_aggregator::auth::token_digest(token))
}

fn healthy_report(seq: u64) -> Report {
    Report {
        node: "n1".into(),
        boot_id: "boot-n1".into(),
        seq,
        body: ReportBody::Full {
            labels: BTreeMap::from([("role".into(), "compute".into())]),
            state: Box::new(NodeState::new("n1".into(), &Snapshot::default(), vec![])),
        },
    }
}

/// Starts the aggregator under `ulimit -n NOFILE`, plain HTTP on
/// 127.0.0.1, node tokens, one expected node; waits until it answers.
fn start(dir: &std::path::Path) -> (Proc, SocketAddr) {
    let port = free_port();
    std::fs::write(
        dir.join("node-tokens"),
        format!("n1 {}\n", digest(N1_TOKEN)),
    )
    .expect("tokens");
    std::fs::write(
        dir.join("agg.toml"),
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nadmin_token = \"{ADMIN}\"\n\
             node_tokens_file = \"{tokens}\"\nsettle = \"0s\"\nclosed_inventory = true\n\
             [[aggregator.node]]\nname = \"n1\"\nlabels = {{ role = \"compute\" }}\n",
            db = dir.join("preflight.db").display(),
            tokens = dir.join("node-tokens").display(),
        ),
    )
    .expect("config");
    let proc = Proc(
        Command::new("sh")
            .args([
                "-c",
                &format!("ulimit -n {NOFILE} && exec \"$0\" aggregator --config \"$1\""),
            ])
            .arg(preflight_bin())
            .arg(dir.join("agg.toml"))
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "aggregator did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (proc, addr)
}

/// Opens `n` connections to `to` from `from`: the even ones send nothing,
/// the odd ones drip a request header, one byte every 500 ms, that never
/// ends (at most `drip_for`). Returns the connected streams' count; the
/// connections stay open until the returned task is dropped with its
/// runtime.
async fn flood(from: [u8; 4], to: SocketAddr, n: usize, drip_for: Duration) -> usize {
    let mut dripping = Vec::new();
    let mut silent = Vec::new();
    for i in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind a flood source address");
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await
        else {
            continue;
        };
        if i % 2 == 0 {
            silent.push(s);
        } else {
            dripping.push(s);
        }
    }
    let connected = silent.len() + dripping.len();
    tokio::spawn(async move {
        let header = b"GET /v1/gate?scope= HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let end = Instant::now() + drip_for;
        let mut i = 0;
        while Instant::now() < end {
            let b = header.get(i).copied().unwrap_or(b'a');
            for s in &mut dripping {
                // The aggregator may have closed it: the flood goes on.
                let _ = s.write_all(&[b]).await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(silent);
    });
    connected
}

fn gate(addr: SocketAddr) -> (i32, Duration) {
    let t = Instant::now();
    let out = Command::new(preflight_bin())
        .args([
            "gate",
            "--server",
            &format!("http://{addr}"),
            "--scope",
            "role=compute",
            "--timeout",
            "0s",
        ])
        .env("PREFLIGHT_LOG", "error")
        .stdout(Stdio::null())
        .output()
        .expect("run preflight gate");
    (out.status.code().unwrap_or(-1), t.elapsed())
}

#[test]
fn a_flood_from_one_address_keeps_neither_the_gate_nor_a_report_out() {
    let dir = tempfile::Builder::new()
        .prefix("preflight-conn-limits-")
        .tempdir()
        .expect("temp dir");
    let (_agg, addr) = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let agent = AggregatorClient::new(
        vec![BaseUrl::parse(&format!("http://{addr}")).expect("url")],
        Duration::from_secs(10),
    )
    .with_token(Some(N1_TOKEN.into()));
    rt.block_on(agent.post_report(&healthy_report(1)))
        .expect("a report before the flood");

    let connected = rt.block_on(flood([127, 0, 0, 2], addr, FLOOD, Duration::from_secs(40)));
    assert!(
        connected >= FLOOD / 2,
        "the flood itself failed: {connected} of {FLOOD} connected"
    );
    // Let the aggregator accept what it will of the flood.
    std::thread::sleep(Duration::from_secs(1));

    // A new agent connection (a separate pool: not the kept-alive one).
    let t = Instant::now();
    let reported = rt.block_on(async {
        tokio::time::timeout(
            PROMPT,
            agent.separate_pool().post_report(&healthy_report(2)),
        )
        .await
    });
    let report_took = t.elapsed();
    eprintln!(
        "under a flood of {connected} connections from 127.0.0.2: report took {report_took:?}"
    );
    let (code, gate_took) = gate(addr);
    eprintln!("under a flood of {connected} connections from 127.0.0.2: gate took {gate_took:?}, exit {code}");
    match reported {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("the report under the flood was refused: {e}"),
        Err(_) => panic!("the report under the flood had no answer within {PROMPT:?}"),
    }
    assert!(
        report_took < PROMPT,
        "the report took {report_took:?} under the flood"
    );
    assert_eq!(
        code, 0,
        "the gate under the flood: exit {code} after {gate_took:?}"
    );
    assert!(
        gate_took < PROMPT,
        "the gate took {gate_took:?} under the flood"
    );
    let evicted = refused(addr, "evicted");
    assert!(
        evicted > 0.0,
        "no flood connection was closed to make room: {evicted}"
    );
    drop(rt);
}

/// Connections from four addresses that each sent a whole request (so
/// none may be closed for a newcomer) fill every slot but the reserve:
/// the gate, from an address holding none, still gets one.
#[test]
fn served_connections_from_many_addresses_leave_the_reserve_for_the_gate() {
    let dir = tempfile::Builder::new()
        .prefix("preflight-conn-limits-")
        .tempdir()
        .expect("temp dir");
    let (_agg, addr) = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let agent = AggregatorClient::new(
        vec![BaseUrl::parse(&format!("http://{addr}")).expect("url")],
        Duration::from_secs(10),
    )
    .with_token(Some(N1_TOKEN.into()));
    rt.block_on(agent.post_report(&healthy_report(1)))
        .expect("a report before the flood");
    let mut held = Vec::new();
    rt.block_on(async {
        // 70 from each of four addresses: past the per-source cap (64) on
        // every one and, together, past the process's 192 slots.
        for last in 2..6u8 {
            for _ in 0..70 {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind(SocketAddr::from(([127, 0, 0, last], 0)))
                    .expect("bind a flood source address");
                let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await
                else {
                    continue;
                };
                // A whole request, kept alive, its answer never read.
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .await;
                held.push(s);
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let reported = rt.block_on(async {
        tokio::time::timeout(
            PROMPT,
            agent.separate_pool().post_report(&healthy_report(2)),
        )
        .await
    });
    let report_took = t.elapsed();
    let (code, gate_took) = gate(addr);
    eprintln!(
        "{} served connections from 127.0.0.2-5: report took {report_took:?}, gate {gate_took:?} (exit {code})",
        held.len()
    );
    assert!(
        matches!(reported, Ok(Ok(_))),
        "the report under the flood: {reported:?} after {report_took:?}"
    );
    assert_eq!(
        code, 0,
        "the gate under the flood: exit {code} after {gate_took:?}"
    );
    assert!(
        gate_took < PROMPT,
        "the gate took {gate_took:?} under the flood"
    );
    // Which limit turns a connection away first depends on the order the
    // acceptor sees them in (a loaded machine interleaves the four
    // sources differently); that some were turned away does not.
    let capacity = refused(addr, "capacity");
    let per_source = refused(addr, "per_source");
    assert!(
        capacity + per_source > 0.0,
        "the flood was never refused: capacity {capacity}, per_source {per_source}"
    );
    drop(held);
    drop(rt);
}

/// `preflight_aggregator_connections_refused_total{reason}` from
/// `/metrics` (asked from 127.0.0.1, which holds no other connection).
fn refused(addr: SocketAddr, reason: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, PROMPT).expect("connect for /metrics");
    s.set_read_timeout(Some(PROMPT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("ask /metrics");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    let series = format!("preflight_aggregator_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics: {text}"))
}
