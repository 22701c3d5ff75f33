//! Waiver propagation between aggregator replicas: two real `preflight
//! aggregator` processes (A and B) on one throwaway PostgreSQL cluster
//! (`preflight_tests::pg`). A node with a critical finding reports to both;
//! then, `waivers` times, a waiver is created on A and B's gate is polled
//! until it turns go, and the waiver is removed on A and B is polled until
//! it is no-go again. Prints median, p99 and max of both directions,
//! measured from A's answer (the write is committed) to B's changed answer,
//! so A's own write time is not counted (it is printed on its own).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use preflight_client::{AggregatorClient, BaseUrl, GateResult};
use preflight_model::api::WaiverRequest;
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Finding, NodeState, Severity, Snapshot};
use preflight_tests::pg::Pg;

/// Longest wait for one change to reach B before the run is called broken.
const LIMIT: Duration = Duration::from_secs(10);

/// Pause between two gate questions to B: short against the figures measured.
const POLL: Duration = Duration::from_millis(2);

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replica(bin: &str, dir: &std::path::Path, name: &str, db: &str) -> (Replica, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nstate_dir = \"{}\"\nauth = \"none\"\nsettle = \"0s\"\nttl = \"1h\"\n",
            dir.join(format!("{name}-state")).display()
        ),
    )
    .expect("config");
    let child = Command::new(bin)
        .args(["aggregator", "-c"])
        .arg(&cfg)
        .env("PREFLIGHT_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn aggregator");
    (Replica(child), format!("http://127.0.0.1:{port}"))
}

fn broken_report(node: &str) -> Report {
    let finding = Finding {
        code: preflight_model::Code::BondPortDown,
        severity: Severity::Critical,
        subject: "bond0/eno2".into(),
        message: "bond0 port eno2 is down".into(),
        since: std::time::SystemTime::now(),
    };
    Report {
        node: node.into(),
        boot_id: "bench".into(),
        seq: 1,
        body: ReportBody::Full {
            labels: BTreeMap::new(),
            state: Box::new(NodeState::new(
                node.into(),
                &Snapshot::default(),
                vec![finding],
            )),
        },
    }
}

async fn until(client: &AggregatorClient, go: bool) -> Duration {
    let t = Instant::now();
    loop {
        let r = client.gate("").await;
        if matches!(
            (&r, go),
            (GateResult::Go(_), true) | (GateResult::NoGo(_), false)
        ) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < LIMIT,
            "B did not change within {LIMIT:?}: {r:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(what: &str, v: Vec<f64>) {
    let n = v.len();
    let (p50, p99, lo, hi) = crate::stats(v);
    println!(
        "  {what:<34} median {p50:7.1} ms  p99 {p99:7.1} ms  min {lo:6.1}  max {hi:7.1}  (n={n})"
    );
}

/// Runs the measurement and prints it.
pub fn report(bin: &str, waivers: usize) {
    let pg = Pg::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!(
        "postgres://postgres@127.0.0.1:{}/preflight?sslmode=disable",
        pg.port
    );
    let (_a, url_a) = replica(bin, dir.path(), "a", &db);
    let (_b, url_b) = replica(bin, dir.path(), "b", &db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = |u: &str| {
            AggregatorClient::new(vec![BaseUrl::parse(u).expect("url")], Duration::from_secs(5))
        };
        let (a, b) = (client(&url_a), client(&url_b));
        let t = Instant::now();
        while a.nodes().await.is_err() || b.nodes().await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "replicas did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for c in [&a, &b] {
            c.post_report(&broken_report("c1")).await.expect("report");
        }
        until(&b, false).await;
        let (mut write, mut create, mut remove, mut remove_write) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..waivers {
            let t = Instant::now();
            let w = a
                .add_waiver(&WaiverRequest {
                    node: "c1".into(),
                    code: None,
                    subject: None,
                    reason: format!("bench {i}"),
                    author: "bench".into(),
                    expires_at: None,
                    duration: Some("1h".into()),
                })
                .await
                .expect("waiver on A");
            write.push(ms(t.elapsed()));
            create.push(ms(until(&b, true).await));
            let t = Instant::now();
            a.remove_waiver(w.value.id, "bench")
                .await
                .expect("remove on A");
            remove_write.push(ms(t.elapsed()));
            remove.push(ms(until(&b, false).await));
        }
        println!(
            "waiver propagation, replica A -> replica B on one PostgreSQL ({}), {waivers} waivers; B polled every {} ms:",
            pg.psql("postgres", "SHOW server_version").trim(),
            POLL.as_millis()
        );
        line("create on A: A's answer", write);
        line("created on A -> B's gate go", create);
        line("remove on A: A's answer", remove_write);
        line("removed on A -> B's gate no-go", remove);
    });
}
