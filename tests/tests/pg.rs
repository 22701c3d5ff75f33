//! Aggregator replicas on a real PostgreSQL (a throwaway cluster from
//! `preflight_tests::pg`; the store suite on PostgreSQL, in clear and over
//! TLS, runs in crates/store/tests/pg.rs): two `preflight
//! aggregator` processes sharing one database with reports posted to both,
//! a replica killed and restarted, the database stopped and started, and a
//! database from a newer preflight refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_aggregator::store::{
    Database, NodeChange, NodeWriter, PgListener, PgSettings, Store,
};
use preflight_tests::pg::Pg;
use preflight_tests::preflight_bin;
use preflight_tests::replica::Replica;
use serde_json::{json, Value};

fn db(pg: &Pg) -> Database {
    Database::Postgres(PgSettings::parse(&pg.url(), None).expect("url"))
}

/// A database of schema 2 (before reports kept their retired boot ids)
/// is migrated in place: its reports read back, and saved ones keep them.
#[test]
fn schema_2_gains_retired_boots_in_place() {
    let pg = Pg::start();
    drop(Store::open(&db(&pg)).expect("new database"));
    let state = json!({
        "node": "n1", "verdict": "go", "findings": [], "interfaces": [],
        "bonds": [], "addresses": [], "routes": []
    });
    pg.psql(
        "preflight",
        &format!(
            "ALTER TABLE reports DROP COLUMN retired_boots; UPDATE schema_version SET version = 2;
             INSERT INTO reports(node, boot_id, seq, received_at, state)
             VALUES('n1', 'b2', 3, 0, '{state}')"
        ),
    );
    let mut s = Store::open(&db(&pg)).expect("migrated");
    let v = pg.psql("preflight", "SELECT version FROM schema_version");
    assert_eq!(v.trim(), "4");
    let r = s.reports().expect("reports");
    assert_eq!((r[0].boot_id.as_str(), r[0].seq), ("b2", 3));
    assert!(r[0].retired_boots.is_empty());
    s.save_reports(&[preflight_aggregator::store::PendingReport {
        node: "n1".into(),
        boot_id: "b3".into(),
        seq: 1,
        received_at: std::time::SystemTime::now(),
        state_json: state.to_string(),
        retired_boots: vec![(7, 1), (u64::MAX, 2)],
    }])
    .expect("save");
    let r = s.reports().expect("reports");
    assert_eq!(r[0].retired_boots, [(7, 1), (u64::MAX, 2)]);
}

/// What the replicas of these tests add to their `[aggregator]`.
const PG_REPLICA: &str = "settle = \"0s\"\nmin_waiver = \"1s\"\nttl = \"60s\"\n";

/// [`preflight_tests::curl`] without a credential (`auth = "none"`).
fn curl(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    preflight_tests::curl(method, url, None, body)
}

fn report(node: &str, seq: u64, down: bool) -> Value {
    let mut state = serde_json::to_value(preflight_model::NodeState::new(
        node.into(),
        &preflight_model::Snapshot::default(),
        vec![],
    ))
    .expect("state");
    if down {
        state["verdict"] = json!("no-go");
        state["findings"] = json!([{"code": "BOND_PORT_DOWN", "severity": "critical",
            "subject": "bond0/eth1", "message": "bond0 port eth1 is down",
            "since": "2025-01-01T00:00:00Z"}]);
    }
    json!({"node": node, "boot_id": "b1", "seq": seq, "kind": "full",
        "labels": {"role": "compute"}, "state": state})
}

fn post_report(r: &Replica, v: &Value) {
    let (code, body) = curl("POST", &format!("{}/v1/reports", r.url), Some(v));
    assert_eq!(code, 200, "{body}");
}

/// `preflight gate --server …` with every given server: (exit code, JSON answer, stderr).
fn gate(servers: &[&str]) -> (i32, Value, String) {
    let mut c = Command::new(preflight_bin());
    c.args(["gate", "--json"]).env("PREFLIGHT_LOG", "error");
    for s in servers {
        c.args(["--server", s]);
    }
    let out = c.output().expect("gate");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until `server`'s gate exits with `code`; returns how long it took.
fn until_gate(server: &str, code: i32, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if gate(&[server]).0 == code {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{server}: gate not {code} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn actions(r: &Replica) -> Vec<String> {
    let (code, v) = curl("GET", &format!("{}/v1/audit?limit=1000", r.url), None);
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .expect("list")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn two_replicas_share_waivers_and_survive_losses() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Replica::new(dir.path(), "a", &pg.url(), PG_REPLICA);
    let b = Replica::new(dir.path(), "b", &pg.url(), PG_REPLICA);
    // Agents push every report to every replica.
    let mut seq = 1;
    for r in [&a, &b] {
        post_report(r, &report("c1", seq, true));
        post_report(r, &report("c2", seq, false));
    }
    seq += 1;
    for r in [&a, &b] {
        until_gate(&r.url, 1, Duration::from_secs(5));
    }

    // A waiver made on A changes B's answer within 1 s.
    let (code, w) = curl(
        "POST",
        &format!("{}/v1/waivers", a.url),
        Some(
            &json!({"node": "c1", "code": "BOND_PORT_DOWN", "reason": "NIC on order",
                     "author": "ana", "duration": "1h"}),
        ),
    );
    assert_eq!(code, 201, "{w}");
    let took = until_gate(&b.url, 0, Duration::from_secs(1));
    eprintln!("waiver A -> B in {took:?}");
    assert_eq!(gate(&[&a.url]).0, 0);

    // Removed on B: A's answer returns to no-go within 1 s.
    let id = w["id"].as_i64().expect("id");
    let (code, v) = curl("DELETE", &format!("{}/v1/waivers/{id}?by=bob", b.url), None);
    assert_eq!(code, 204, "{v}");
    until_gate(&a.url, 1, Duration::from_secs(1));
    // Removing it again, on either, is a 404: it ended once.
    let (code, _) = curl("DELETE", &format!("{}/v1/waivers/{id}", a.url), None);
    assert_eq!(code, 404);
    for r in [&a, &b] {
        let acts = actions(r);
        assert_eq!(
            acts.iter()
                .filter(|x| x.starts_with("waiver."))
                .collect::<Vec<_>>(),
            ["waiver.remove", "waiver.create"],
            "{}: {acts:?}",
            r.url
        );
    }

    // A new waiver so that the fleet is go, then replica A dies.
    let (code, w) = curl(
        "POST",
        &format!("{}/v1/waivers", a.url),
        Some(&json!({"node": "c1", "reason": "maintenance", "author": "ana", "duration": "1h"})),
    );
    assert_eq!(code, 201, "{w}");
    until_gate(&b.url, 0, Duration::from_secs(1));
    let (_, before, _) = gate(&[&b.url]);
    a.kill();
    let (code, after, stderr) = gate(&[&a.url, &b.url]);
    assert_eq!(code, 0, "answered by B: {after} {stderr}");
    assert_eq!(after["verdict"], before["verdict"]);
    assert!(
        stderr.contains(&b.url),
        "says which server answered: {stderr}"
    );

    // A restarted: no-go (silent nodes) until they report, then agrees with B.
    a.start();
    let (code, v, _) = gate(&[&a.url]);
    assert_eq!(code, 1, "silent after restart: {v}");
    post_report(&a, &report("c1", seq, true));
    assert_eq!(gate(&[&a.url]).0, 1, "c2 has not reported yet");
    post_report(&a, &report("c2", seq, false));
    seq += 1;
    until_gate(&a.url, 0, Duration::from_secs(2));

    // A short waiver that will expire while PostgreSQL is down.
    let (code, short) = curl(
        "POST",
        &format!("{}/v1/waivers", b.url),
        Some(&json!({"node": "c2", "reason": "brief", "author": "ana", "duration": "2s"})),
    );
    assert_eq!(code, 201, "{short}");
    let short_expires = Instant::now() + Duration::from_secs(2);

    // PostgreSQL stops: the gate answers from memory, writes are 503 naming
    // the database, readiness says no.
    pg.pg_ctl_stop();
    for r in [&a, &b] {
        assert_eq!(gate(&[&r.url]).0, 0, "{} answers from memory", r.url);
        post_report(r, &report("c2", seq, false));
        let (code, v) = curl(
            "POST",
            &format!("{}/v1/waivers", r.url),
            Some(&json!({"node": "c2", "reason": "x", "author": "ana", "duration": "1h"})),
        );
        assert_eq!(code, 503, "{v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("127.0.0.1:{}/preflight", pg.port)),
            "{msg}"
        );
        let (code, _) = curl("DELETE", &format!("{}/v1/waivers/{}", r.url, w["id"]), None);
        assert_eq!(code, 503);
        // A new node cannot be registered: refused, and not in the gate.
        let (code, v) = curl(
            "POST",
            &format!("{}/v1/reports", r.url),
            Some(&report("new1", 1, false)),
        );
        assert_eq!(code, 503, "{v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("127.0.0.1:{}/preflight", pg.port)),
            "{msg}"
        );
        let (code, _) = curl("GET", &format!("{}/v1/nodes/new1", r.url), None);
        assert_eq!(code, 404, "a node whose registration failed is not kept");
        let (code, v) = curl("GET", &format!("{}/readyz", r.url), None);
        assert_eq!(code, 503, "{v}");
        let (_, m) = curl("GET", &format!("{}/metrics", r.url), None);
        let _ = m; // text, not JSON: checked below
    }
    let metrics = Command::new("curl")
        .args(["-s", &format!("{}/metrics", b.url)])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("preflight_aggregator_store_up 0"));
    seq += 1;

    // The short waiver expires during the outage (both replicas see it end).
    std::thread::sleep(
        short_expires.saturating_duration_since(Instant::now()) + Duration::from_millis(1500),
    );
    for r in [&a, &b] {
        let (_, ws) = curl("GET", &format!("{}/v1/waivers", r.url), None);
        assert!(
            ws.as_array()
                .is_some_and(|l| l.iter().all(|x| x["id"] != short["id"])),
            "{}: expired in memory: {ws}",
            r.url
        );
    }

    // Back: nothing half-written (no audit entry for the refused writes),
    // the expiry missed during the outage recorded once (both replicas owed
    // it), and writes work again on both.
    pg.pg_ctl_start();
    let expiries = format!(
        "SELECT count(*) FROM audit WHERE action = 'waiver.expire' AND (detail::json->>'id')::bigint = {}",
        short["id"]
    );
    let t = Instant::now();
    while pg.psql("preflight", &expiries).trim() != "1" {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the missed expiry was not recorded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both replicas have retried by now (every 5 s); still one entry.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(pg.psql("preflight", &expiries).trim(), "1", "recorded once");
    // The removal asked for during the outage took effect at once in
    // memory (fail towards no-go) and is recorded now, once.
    let t2 = Instant::now();
    loop {
        let active = pg.psql(
            "preflight",
            "SELECT count(*) FROM waivers WHERE ended_at IS NULL",
        );
        if active.trim() == "0" {
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(10),
            "the removal made during the outage was never recorded ({} active)",
            active.trim()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let audit_waivers = pg.psql(
        "preflight",
        "SELECT count(*) FROM audit WHERE action LIKE 'waiver.%'",
    );
    assert_eq!(
        audit_waivers.trim(),
        "6",
        "3 before, the short one's create and expire, the removal made during the outage: each once"
    );
    for r in [&a, &b] {
        let t = Instant::now();
        while curl("GET", &format!("{}/readyz", r.url), None).0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} not ready again",
                r.url
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (code, w2) = curl(
        "POST",
        &format!("{}/v1/waivers", b.url),
        Some(
            &json!({"node": "c1", "reason": "after the outage", "author": "ana", "duration": "1h"}),
        ),
    );
    assert_eq!(code, 201, "{w2}");
    let (code, v) = curl(
        "DELETE",
        &format!("{}/v1/waivers/{}?by=bob", a.url, w2["id"]),
        None,
    );
    assert_eq!(code, 204, "{v}");
    post_report(&a, &report("c1", seq, true));
    post_report(&b, &report("c1", seq, true));
    until_gate(&a.url, 1, Duration::from_secs(2));
    until_gate(&b.url, 1, Duration::from_secs(2));
}

#[test]
fn newer_schema_refuses_to_start() {
    let pg = Pg::start();
    drop(Store::open(&db(&pg)).expect("migrate"));
    pg.psql("preflight", "UPDATE schema_version SET version = 99");
    let e = Store::open(&db(&pg)).expect_err("newer");
    assert!(e.is_config(), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{}\"\ndatabase = \"{}\"\nstate_dir = \"{}\"\nauth = \"none\"\n",
            preflight_tests::free_port(),
            pg.url(),
            dir.path().display()
        ),
    )
    .expect("config");
    let out = Command::new(preflight_bin())
        .args(["aggregator", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("schema version 99"), "{stderr}");
}

/// A replica's listener skips the announcements of its own changes (its
/// fleet has them already) and hears every other replica's.
#[test]
fn own_announcements_are_skipped() {
    let pg = Pg::start();
    let mine = PgSettings::parse(&pg.url(), None).expect("url");
    let other = PgSettings::parse(&pg.url(), None).expect("url");
    let mut store = Store::open(&Database::Postgres(mine.clone())).expect("open");
    let mut own = PgListener::connect(&mine).expect("listen");
    let mut others = PgListener::connect(&other).expect("listen");
    store
        .upsert_node(
            "c1",
            &std::collections::BTreeMap::new(),
            "test",
            std::time::SystemTime::now(),
        )
        .expect("write");
    let heard = others.wait(Duration::from_secs(5)).expect("wait");
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].starts_with("nodes "), "{heard:?}");
    assert!(own
        .wait(Duration::from_millis(500))
        .expect("wait")
        .is_empty());
}

fn change(name: &str) -> NodeChange {
    NodeChange {
        name: name.into(),
        labels: std::collections::BTreeMap::from([("role".into(), "compute".into())]),
        actor: "agent".into(),
        at: std::time::SystemTime::now(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn audited(s: &mut Store) -> usize {
    s.audit(10_000)
        .expect("audit")
        .iter()
        .filter(|a| a.action == "node.upsert")
        .count()
}

/// 500 agents registering at once through the group commit: every caller is
/// answered `Ok`, and each node is then in the database (read on a new
/// connection), agent-labelled, audited once.
#[test]
fn concurrent_registrations_are_all_durable_and_answered() {
    let pg = Pg::start();
    let settings = PgSettings::parse(&pg.url(), None).expect("url");
    let database = Database::Postgres(settings.clone());
    drop(Store::open(&database).expect("migrate"));
    let writer = NodeWriter::spawn(&settings);
    let answers = runtime().block_on(async {
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.upsert(change(&format!("n{i:03}"))).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    assert_eq!(answers.len(), 500);
    for a in &answers {
        assert!(a.is_ok(), "{a:?}");
    }
    let mut s = Store::open(&database).expect("reopen");
    let nodes = s.nodes().expect("nodes");
    assert_eq!(nodes.len(), 500);
    assert!(nodes.iter().all(|(_, l)| l["role"] == "compute"));
    assert_eq!(s.agent_nodes().expect("agent nodes").len(), 500);
    assert_eq!(audited(&mut s), 500);
    let batches = writer.batches();
    assert!((1..=500).contains(&batches), "{batches}");
    eprintln!("500 registrations in {batches} transaction(s)");
}

fn wait_for(pg: &Pg, sql: &str, what: &str) {
    let t = Instant::now();
    while pg.psql("preflight", sql).trim() == "0" {
        assert!(t.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One bad change fails its whole batch: each of its callers gets the error
/// (the service answers 503) and none of the batch is written; the batch
/// before it and the change after it are written. The writer is held inside
/// a first batch by a lock on `nodes`, so the next 99 changes queue and form
/// one batch. A database that is down fails a registration, and the writer
/// reconnects once it is back.
#[test]
fn a_failed_batch_fails_every_caller_and_writes_none() {
    use std::io::Write;
    let pg = Pg::start();
    let settings = PgSettings::parse(&pg.url(), None).expect("url");
    let database = Database::Postgres(settings.clone());
    drop(Store::open(&database).expect("migrate"));
    let rt = runtime();
    let writer = NodeWriter::spawn(&settings);

    let mut holder = pg
        .psql_session("preflight")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    let mut sql = holder.stdin.take().expect("stdin");
    sql.write_all(b"BEGIN; LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE;\n")
        .expect("lock");
    sql.flush().expect("flush");
    wait_for(
        &pg,
        "SELECT count(*) FROM pg_locks WHERE relation = 'nodes'::regclass AND granted",
        "the test's lock on nodes",
    );
    let first = writer.upsert(change("first"));
    wait_for(
        &pg,
        "SELECT count(*) FROM pg_locks WHERE relation = 'nodes'::regclass AND NOT granted",
        "the writer waiting for nodes",
    );
    // Queued now (before being polled), behind the held batch.
    let rest: Vec<_> = (0..99)
        .map(|i| {
            // PostgreSQL refuses a NUL byte in text: this row fails its statement.
            let name = if i == 50 {
                "bad\0node".to_owned()
            } else {
                format!("m{i:02}")
            };
            writer.upsert(change(&name))
        })
        .collect();
    sql.write_all(b"COMMIT;\n").expect("commit");
    drop(sql);
    assert!(holder.wait().expect("psql").success());

    assert!(rt.block_on(first).is_ok(), "the held batch is written");
    for r in rt.block_on(async {
        let mut out = Vec::new();
        for f in rest {
            out.push(f.await);
        }
        out
    }) {
        let e = r.expect_err("every caller of the failed batch is refused");
        let msg = e.to_string();
        assert!(
            msg.contains("a batch of 99 inventory changes, none written"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("127.0.0.1:{}/preflight", pg.port)),
            "{msg}"
        );
    }
    assert_eq!(writer.batches(), 2);
    let mut s = Store::open(&database).expect("reopen");
    let names: Vec<String> = s
        .nodes()
        .expect("nodes")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["first"]);
    assert_eq!(audited(&mut s), 1, "no audit entry of the failed batch");

    rt.block_on(writer.upsert(change("after")))
        .expect("the writer goes on");
    pg.pg_ctl_stop();
    let e = rt
        .block_on(writer.upsert(change("down")))
        .expect_err("database down");
    assert!(e.to_string().contains("none written"), "{e}");
    pg.pg_ctl_start();
    rt.block_on(writer.upsert(change("back")))
        .expect("reconnected");
    let mut s = Store::open(&database).expect("reopen");
    let names: Vec<String> = s
        .nodes()
        .expect("nodes")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["after", "back", "first"]);
    assert_eq!(audited(&mut s), 3);
}
