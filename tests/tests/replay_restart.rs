//! Issue 37, replays across boot ids, against a real aggregator process
//! that restarts: a report of a boot that a later one replaced is refused
//! also after the aggregator was killed and started again on the same
//! database (the retired boot ids are stored with the node's report). It
//! was accepted once after a restart, which made a broken node go.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::{curl, free_port, preflight_bin, Proc};
use serde_json::{json, Value};

const NODE_A: &str = "node-a-secret";

fn digest(token: &str) -> String {
    preflight_aggregator::auth::hex(&preflight_aggregator::auth::token_digest(token))
}

fn report(boot: &str, seq: u64, critical: bool) -> Value {
    let mut state = serde_json::to_value(preflight_model::NodeState::new(
        "node-a".into(),
        &preflight_model::Snapshot::default(),
        vec![],
    ))
    .expect("state");
    if critical {
        state["verdict"] = json!("no-go");
        state["findings"] = json!([{"code": "BOND_PORT_DOWN", "severity": "critical",
            "subject": "bond0/eth1", "message": "bond0 port eth1 is down",
            "since": "2025-01-01T00:00:00Z"}]);
    }
    json!({"node": "node-a", "boot_id": boot, "seq": seq, "kind": "full",
        "labels": {"role": "compute"}, "state": state})
}

/// Writes the configuration (node-a's token, the database in `dir`, no
/// settle time) and returns its path.
fn configure(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    std::fs::write(
        dir.join("node-tokens"),
        format!("node-a {}\n", digest(NODE_A)),
    )
    .expect("tokens");
    let cfg = dir.join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\n\
             node_tokens_file = \"{tokens}\"\nsettle = \"0s\"\n",
            db = dir.join("preflight.db").display(),
            tokens = dir.join("node-tokens").display(),
        ),
    )
    .expect("config");
    cfg
}

/// Starts the aggregator of `cfg` and waits until it answers.
fn start(cfg: &std::path::Path, url: &str) -> Proc {
    let proc = Proc(
        Command::new(preflight_bin())
            .args(["aggregator", "--config"])
            .arg(cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    let t = Instant::now();
    while curl("GET", &format!("{url}/healthz"), None, None).0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "aggregator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

fn gate(url: &str) -> i32 {
    Command::new(preflight_bin())
        .args(["gate", "--server", url, "--scope", "role=compute"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("preflight gate")
        .code()
        .expect("exit code")
}

/// Waits until the report writer stored node-a's report of `boot` (reports
/// are written in batches, after the answer), so that a kill loses nothing.
fn stored(dir: &std::path::Path, boot: &str) {
    let db = dir.join("preflight.db");
    let t = Instant::now();
    loop {
        let found: Option<String> =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row("SELECT boot_id FROM reports WHERE node='node-a'", [], |r| {
                        r.get(0)
                    })
                })
                .ok();
        if found.as_deref() == Some(boot) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "node-a's report of boot {boot} was not stored (found {found:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the aggregator (as a crash would) and starts it again on the same
/// database.
fn restart(agg: &mut Proc, cfg: &std::path::Path, url: &str) {
    agg.0.kill().expect("kill");
    agg.0.wait().expect("reap");
    *agg = start(cfg, url);
}

#[test]
fn a_retired_boot_stays_refused_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = configure(dir.path(), port);
    let mut agg = start(&cfg, &url);
    let post = |r: &Value| curl("POST", &format!("{url}/v1/reports"), Some(NODE_A), Some(r));

    // Boot a1 healthy (the report an attacker captured), then the agent
    // restarted as boot a2 and the node broke.
    assert_eq!(post(&report("a1", 1, false)).0, 200);
    let (status, body) = post(&report("a2", 1, true));
    assert_eq!(status, 200, "{body}");
    assert_eq!(gate(&url), 1, "node-a is broken");
    let (status, _) = post(&report("a1", 1, false));
    assert_eq!(status, 409, "refused before the restart");
    stored(dir.path(), "a2");

    restart(&mut agg, &cfg, &url);
    let (status, body) = post(&report("a1", 1, false));
    assert_eq!(status, 409, "a1 seq 1 replayed after a restart: {body}");
    assert_eq!(gate(&url), 1, "the replay made the gate go");

    // The real agent goes on (not locked out), and the list survives a
    // second restart too.
    assert_eq!(post(&report("a2", 2, true)).0, 200);
    stored(dir.path(), "a2");
    restart(&mut agg, &cfg, &url);
    let (status, body) = post(&report("a1", 1, false));
    assert_eq!(status, 409, "a1 replayed after a second restart: {body}");
    assert_eq!(gate(&url), 1, "still no-go");
    // A new boot of the agent is taken.
    assert_eq!(post(&report("a3", 1, true)).0, 200);
}
