//! Attacks on the gate from issue 16, against a real aggregator process:
//! forged reports (labels, severity flips, sequence lock-out), a waiver and
//! a clock that is behind at restart, a full disk, and slow connections.
//! Each forgery here made the gate say go (or locked the agent out) before
//! the fix. Runs as root (tmpfs, file-descriptor limits).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::curl;
use preflight_tests::{preflight_bin, require_root, workspace, Proc};
use serde_json::{json, Value};

const RTOK: &str = "report-secret";
const ATOK: &str = "admin-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The `LimitNOFILE` the shipped unit sets (the tests run with it), or
/// this machine's hard limit when that is lower (a container's); never
/// below 4096, which 1,100 connections need with room to spare.
fn unit_nofile() -> String {
    let unit = std::fs::read_to_string(workspace().join("systemd/preflight-aggregator.service"))
        .expect("unit");
    let want: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("the aggregator unit sets LimitNOFILE")
        .trim()
        .parse()
        .expect("a number");
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("sh");
    let hard = String::from_utf8_lossy(&hard.stdout)
        .trim()
        .parse::<u64>()
        .unwrap_or(u64::MAX);
    let n = want.min(hard);
    assert!(
        n >= 4096,
        "RLIMIT_NOFILE hard limit {hard} is too low for this test"
    );
    n.to_string()
}

struct Agg {
    proc: Option<Proc>,
    cfg: std::path::PathBuf,
    url: String,
    env: Vec<(String, String)>,
}

impl Agg {
    fn new(dir: &std::path::Path, db: &std::path::Path, extra: &str) -> Self {
        let port = free_port();
        let cfg = dir.join("agg.toml");
        std::fs::write(
            &cfg,
            format!(
                "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\nreport_token = \"{RTOK}\"\nadmin_token = \"{ATOK}\"\n\
                 settle = \"2s\"\nttl = \"30s\"\nscopes = [\"role=batch\"]\n{extra}\
                 [[aggregator.node]]\nname = \"b1\"\nlabels = {{ role = \"batch\" }}\n\
                 [[aggregator.node]]\nname = \"b2\"\nlabels = {{ role = \"batch\" }}\n",
                db.display()
            ),
        )
        .expect("config");
        Self {
            proc: None,
            cfg,
            url: format!("http://127.0.0.1:{port}"),
            env: Vec::new(),
        }
    }

    fn start(&mut self) {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "ulimit -n {} && exec \"$0\" aggregator --config \"$1\"",
                unit_nofile()
            ))
            .arg(preflight_bin())
            .arg(&self.cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.proc = Some(Proc(c.spawn().expect("spawn aggregator")));
        let t = Instant::now();
        while curl("GET", &format!("{}/healthz", self.url), None, None).0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "aggregator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        let mut p = self.proc.take().expect("running");
        let st = Command::new("kill")
            .args(["-9", &p.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let _ = p.0.wait();
    }

    fn gate(&self) -> u16 {
        curl(
            "GET",
            &format!("{}/v1/gate?scope=role%3Dbatch", self.url),
            None,
            None,
        )
        .0
    }

    fn post(&self, v: &Value) -> (u16, Value) {
        curl(
            "POST",
            &format!("{}/v1/reports", self.url),
            Some(RTOK),
            Some(v),
        )
    }
}

fn report(node: &str, boot: &str, seq: u64, role: &str, severity: Option<&str>) -> Value {
    let mut state = serde_json::to_value(preflight_model::NodeState::new(
        node.into(),
        &preflight_model::Snapshot::default(),
        vec![],
    ))
    .expect("state");
    if let Some(sev) = severity {
        state["verdict"] = json!(if sev == "critical" { "no-go" } else { "go" });
        state["findings"] = json!([{"code": "BOND_PORT_DOWN", "severity": sev,
            "subject": "bond0/eth1", "message": "bond0 port eth1 is down",
            "since": "2025-01-01T00:00:00Z"}]);
    }
    json!({"node": node, "boot_id": boot, "seq": seq, "kind": "full",
        "labels": {"role": role}, "state": state})
}

fn setup(extra: &str) -> (tempfile::TempDir, Agg) {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("preflight.db");
    let mut a = Agg::new(dir.path(), &db, extra);
    a.start();
    (dir, a)
}

/// b1 healthy and settled, b2 critical: the scope is no-go because of b2.
fn healthy_b1_critical_b2(a: &Agg) {
    assert_eq!(a.post(&report("b1", "real-b1", 1, "batch", None)).0, 200);
    assert_eq!(
        a.post(&report("b2", "real-b2", 1, "batch", Some("critical")))
            .0,
        200
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.post(&report("b1", "real-b1", 2, "batch", None)).0, 200);
    assert_eq!(a.gate(), 503);
}

#[test]
fn forged_labels_do_not_move_an_inventoried_node_out_of_its_scope() {
    let (_dir, a) = setup("");
    healthy_b1_critical_b2(&a);
    // The forger sends b2's own critical state, with another label.
    let (code, body) = a.post(&report("b2", "forged", 1, "other", Some("critical")));
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.gate(), 503, "b2 must stay in role=batch");
    let (_, nodes) = curl("GET", &format!("{}/v1/nodes/b2", a.url), None, None);
    assert_eq!(nodes["node"]["labels"]["role"], "batch", "{nodes}");
}

#[test]
fn a_severity_flip_every_half_second_never_yields_go() {
    let (_dir, a) = setup("");
    healthy_b1_critical_b2(&a);
    let mut real = 1;
    let mut forged = 1;
    for i in 0..16 {
        // The real agent keeps reporting critical; the forger says warning.
        real += 1;
        a.post(&report("b2", "real-b2", real, "batch", Some("critical")));
        std::thread::sleep(Duration::from_millis(250));
        forged += 1;
        a.post(&report("b2", "forger", forged, "batch", Some("warning")));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            a.gate(),
            503,
            "poll {i}: go while the real agent reports critical"
        );
    }
}

#[test]
fn a_reused_boot_id_with_a_huge_seq_does_not_lock_out_the_agent() {
    let (_dir, a) = setup("");
    healthy_b1_critical_b2(&a);
    let (code, body) = a.post(&report("b2", "real-b2", 1 << 63, "batch", None));
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "sequence_jump", "{body}");
    // The real agent goes on with its own next sequence number.
    let (code, body) = a.post(&report("b2", "real-b2", 2, "batch", Some("critical")));
    assert_eq!(code, 200, "the real agent is locked out: {body}");
}

#[test]
fn a_clock_behind_at_restart_does_not_revive_a_waiver() {
    require_root("the restart test (kill -9)");
    let (_dir, mut a) = setup("min_waiver = \"1s\"\n");
    healthy_b1_critical_b2(&a);
    let (code, w) = curl(
        "POST",
        &format!("{}/v1/waivers", a.url),
        Some(ATOK),
        Some(&json!({"node": "b2", "reason": "test", "author": "t", "duration": "3s"})),
    );
    assert_eq!(code, 201, "{w}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.post(&report("b1", "real-b1", 3, "batch", None)).0, 200);
    assert_eq!(a.gate(), 200, "the waiver makes the scope go");
    a.kill9();
    std::thread::sleep(Duration::from_secs(5));
    a.env = vec![("PREFLIGHT_TEST_CLOCK_OFFSET".into(), "-60s".into())];
    a.start();
    assert_eq!(a.post(&report("b1", "real-b1", 4, "batch", None)).0, 200);
    assert_eq!(
        a.post(&report("b2", "real-b2", 2, "batch", Some("critical")))
            .0,
        200
    );
    let (_, ws) = curl("GET", &format!("{}/v1/waivers", a.url), None, None);
    assert_eq!(ws, json!([]), "the waiver came back");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.post(&report("b1", "real-b1", 5, "batch", None)).0, 200);
    assert_eq!(a.gate(), 503);
    let (_, audit) = curl("GET", &format!("{}/v1/audit", a.url), None, None);
    let expired = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "waiver.expire" && e["detail"]["id"] == w["id"])
        .count();
    assert_eq!(expired, 1, "{audit:#}");
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_waiver_removal_and_readiness_honest() {
    require_root("the disk-full test (mounts a tmpfs)");
    let dir = tempfile::tempdir().expect("dir");
    let mnt = dir.path().join("store");
    std::fs::create_dir(&mnt).expect("mkdir");
    let st = Command::new("mount")
        // Room for the store and its 2 MiB reserve (issue 37).
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(st.success(), "cannot mount a tmpfs");
    let _guard = Tmpfs(mnt.clone());
    let db = mnt.join("preflight.db");
    let mut a = Agg::new(dir.path(), &db, "");
    a.start();
    healthy_b1_critical_b2(&a);
    let (code, w) = curl(
        "POST",
        &format!("{}/v1/waivers", a.url),
        Some(ATOK),
        Some(&json!({"node": "b2", "reason": "test", "author": "t", "duration": "1h"})),
    );
    assert_eq!(code, 201, "{w}");
    assert_eq!(a.post(&report("b1", "real-b1", 3, "batch", None)).0, 200);
    assert_eq!(a.gate(), 200);
    // Fill the disk.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let (code, _) = curl("GET", &format!("{}/readyz", a.url), None, None);
    assert_eq!(code, 503, "ready with a full disk");
    let id = w["id"].as_i64().expect("id");
    let (code, body) = curl(
        "DELETE",
        &format!("{}/v1/waivers/{id}", a.url),
        Some(ATOK),
        None,
    );
    // Issue 37: the reserve beside the database makes the end durable even
    // on a full disk, so it is acknowledged (before: 503, the end held in
    // memory only, and a restart then revived the waiver).
    assert_eq!(code, 204, "{body}");
    assert_eq!(a.gate(), 503, "the removed waiver is still in force");
    let (_, m) = (
        0,
        Command::new("curl")
            .args(["-s", &format!("{}/metrics", a.url)])
            .output()
            .expect("curl"),
    );
    let m = String::from_utf8_lossy(&m.stdout).into_owned();
    assert!(
        m.contains("preflight_aggregator_waiver_ends_unrecorded 0"),
        "{m}"
    );
    // Space returns: the end is recorded, readiness comes back.
    std::fs::remove_file(&filler).expect("rm");
    let t = Instant::now();
    while curl("GET", &format!("{}/readyz", a.url), None, None).0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not ready after space returned"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.kill9();
    a.start();
    let (_, ws) = curl("GET", &format!("{}/v1/waivers", a.url), None, None);
    assert_eq!(ws, json!([]), "the removal was not recorded");
    let (_, audit) = curl("GET", &format!("{}/v1/audit", a.url), None, None);
    let removes: Vec<&Value> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "waiver.remove")
        .collect();
    assert_eq!(
        removes.len(),
        1,
        "exactly one removal entry, nothing half-written: {audit:#}"
    );
}

#[test]
fn slow_connections_do_not_stop_the_gate() {
    require_root("the slow-connection test (raises RLIMIT_NOFILE)");
    let nofile = unit_nofile();
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={nofile}:{nofile}"),
        ])
        .status()
        .expect("prlimit");
    assert!(st.success(), "cannot raise this test's RLIMIT_NOFILE");
    let (_dir, a) = setup("");
    let addr = a.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        // Half a request, never finished.
        s.write_all(b"GET /v1/gate HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        held.push(s);
    }
    let t = Instant::now();
    assert_eq!(
        a.gate(),
        503,
        "the gate did not answer with 1,100 slow connections"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(held);
}

/// `curl` with the Authorization header exactly as given.
fn curl_auth(method: &str, url: &str, auth: &str, body: Option<&Value>) -> u16 {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        method,
    ])
    .args(["-H", &format!("authorization: {auth}")]);
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    let out = c.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let (_dir, a) = setup("");
    let reports = format!("{}/v1/reports", a.url);
    for (i, scheme) in ["bearer", "BEARER", "bEaReR"].iter().enumerate() {
        let r = report("b1", "real-b1", i as u64 + 1, "batch", None);
        assert_eq!(
            curl_auth("POST", &reports, &format!("{scheme} {RTOK}"), Some(&r)),
            200,
            "{scheme}"
        );
    }
    let waivers = format!("{}/v1/waivers", a.url);
    assert_eq!(
        curl_auth("GET", &waivers, &format!("BEARER {ATOK}"), None),
        200
    );
    // Another scheme, or the right scheme with a wrong token, is not a credential.
    let r = report("b1", "real-b1", 9, "batch", None);
    assert_eq!(
        curl_auth("POST", &reports, &format!("Basic {RTOK}"), Some(&r)),
        401
    );
    assert_eq!(curl_auth("POST", &reports, "bearer wrong", Some(&r)), 401);
}

#[test]
fn equal_report_and_admin_tokens_refuse_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{}\"\ndatabase = \"{}\"\nreport_token = \"same-secret\"\nadmin_token = \"same-secret\"\n",
            free_port(),
            dir.path().join("p.db").display()
        ),
    )
    .expect("config");
    let out = Command::new(preflight_bin())
        .args(["aggregator", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("admin_token") && err.contains("distinct"),
        "{err}"
    );
}

#[test]
fn waivers_shorter_than_min_waiver_are_400() {
    let (_dir, a) = setup("");
    assert_eq!(a.post(&report("b1", "real-b1", 1, "batch", None)).0, 200);
    let url = format!("{}/v1/waivers", a.url);
    for d in ["0s", "1s", "59s"] {
        let w = json!({"node": "b1", "reason": "CHG-1", "author": "ana", "duration": d});
        let (s, body) = curl("POST", &url, Some(ATOK), Some(&w));
        assert_eq!(s, 400, "{d}: {body}");
        assert_eq!(body["error"], "bad_waiver", "{d}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("at least")),
            "{body}"
        );
    }
    let (s, waivers) = curl("GET", &url, Some(ATOK), None);
    assert_eq!(s, 200);
    assert!(waivers.to_string().find("CHG-1").is_none(), "{waivers}");
    let w = json!({"node": "b1", "reason": "CHG-1", "author": "ana", "duration": "1m"});
    assert_eq!(curl("POST", &url, Some(ATOK), Some(&w)).0, 201);
}

#[test]
fn gate_and_status_escape_control_characters_from_the_aggregator() {
    let (_dir, a) = setup("");
    assert_eq!(a.post(&report("b1", "real-b1", 1, "batch", None)).0, 200);
    // A critical finding whose text would clear the screen and paint "GO"
    // (`gate` prints the message, `status` the subject).
    let paint = "\u{1b}[2J\u{1b}[H\u{1b}[32mGO: every node is ready\u{7}\r";
    let mut r = report("b2", "real-b2", 1, "batch", Some("critical"));
    r["state"]["findings"][0]["message"] = json!(format!("eth1 down{paint}"));
    r["state"]["findings"][0]["subject"] = json!("bond0/eth1\u{1b}[1A");
    assert_eq!(a.post(&r).0, 200);
    for (args, want_exit) in [
        (vec!["gate", "--scope", "role=batch"], 1),
        (vec!["status"], 1),
    ] {
        let out = Command::new(preflight_bin())
            .args(&args)
            .args(["--server", &a.url])
            .output()
            .expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(want_exit), "{args:?}: {text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {text:?}"
        );
        assert!(text.contains("b2"), "{args:?} does not name b2: {text}");
        assert!(
            text.contains("\\u{1b}["),
            "{args:?} does not show the escaped text: {text}"
        );
    }
}

/// Issue 37: a waiver granted while the wall clock was an hour ahead, and
/// the aggregator restarted (same boot) with the clock put right after the
/// waiver's time ran out by the boot clock. Its `waiver.expire` entry was
/// dated by the corrected clock, an hour before the waiver's own creation.
#[test]
fn an_expiry_is_never_dated_before_the_waiver_it_ends() {
    require_root("the restart test (kill -9)");
    let (_dir, mut a) = setup("min_waiver = \"1s\"\n");
    a.kill9();
    a.env = vec![("PREFLIGHT_TEST_CLOCK_OFFSET".into(), "3600s".into())];
    a.start();
    let (code, w) = curl(
        "POST",
        &format!("{}/v1/waivers", a.url),
        Some(ATOK),
        Some(&json!({"node": "b2", "reason": "test", "author": "t", "duration": "1s"})),
    );
    assert_eq!(code, 201, "{w}");
    a.kill9();
    std::thread::sleep(Duration::from_secs(2));
    a.env = Vec::new();
    a.start();
    let (_, audit) = curl("GET", &format!("{}/v1/audit", a.url), None, None);
    let at = |action: &str| {
        audit
            .as_array()
            .expect("audit")
            .iter()
            .find(|e| e["action"] == action && e["detail"]["id"] == w["id"])
            .and_then(|e| e["at"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {action} entry: {audit:#}"))
    };
    let (created, expired) = (at("waiver.create"), at("waiver.expire"));
    // RFC 3339 in UTC with the same precision compares as text.
    assert!(
        expired >= created,
        "expired at {expired}, before its creation at {created}"
    );
}
