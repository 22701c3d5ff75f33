//! Store faults against a real aggregator process and a real SQLite file:
//! a full disk while a waiver is removed, a store that lost its WAL or was
//! truncated, and a corrupt audit page. Each must end in no-go or in a
//! refusal to start, never in a waiver silently back in force or a store
//! silently emptied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_client::{AggregatorClient, BaseUrl};
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot};
use preflight_tests::{curl, free_port, preflight_bin, require_root, Proc};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-store";
const REPORT: &str = "report-secret-store";

/// A critical BOND_PORT_DOWN on bond0/eth1 of `node` (role=compute), as
/// the first report of a new agent boot (a restarted aggregator holds the
/// last sequence number of the previous one).
fn critical(node: &str) -> Report {
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    Report {
        node: node.into(),
        boot_id: format!("boot-{node}-{boot}"),
        seq: 1,
        body: ReportBody::Full {
            labels: BTreeMap::from([("role".into(), "compute".into())]),
            state: Box::new(NodeState::new(
                node.into(),
                &Snapshot::default(),
                vec![Finding {
                    code: Code::BondPortDown,
                    severity: Severity::Critical,
                    subject: "bond0/eth1".into(),
                    message: "bond0 port eth1 is down".into(),
                    since: std::time::SystemTime::now(),
                }],
            )),
        },
    }
}

/// One aggregator configuration (loopback, plain HTTP, open reads, open
/// inventory) whose database is `db`.
struct Agg {
    conf: tempfile::TempDir,
    db: PathBuf,
    port: u16,
}

impl Agg {
    fn new(db: PathBuf) -> Self {
        let conf = tempfile::Builder::new()
            .prefix("preflight-store-faults-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        std::fs::write(
            conf.path().join("agg.toml"),
            format!(
                "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\nadmin_token = \"{ADMIN}\"\n\
                 report_token = \"{REPORT}\"\nreads = \"open\"\nsettle = \"0s\"\nmin_waiver = \"1s\"\n",
                db.display()
            ),
        )
        .expect("aggregator config");
        Self { conf, db, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(preflight_bin());
        c.args(["aggregator", "--config"])
            .arg(self.conf.path().join("agg.toml"))
            .args(extra)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null());
        c
    }

    /// Spawns the aggregator with its stderr in a file (a pipe nobody
    /// reads would stall it once full).
    fn spawn(&self, extra: &[&str]) -> Proc {
        let log = std::fs::File::create(self.log()).expect("log file");
        Proc(
            self.command(extra)
                .stderr(log)
                .spawn()
                .expect("spawn aggregator"),
        )
    }

    fn log(&self) -> PathBuf {
        self.conf.path().join("aggregator.log")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts the aggregator and waits until it answers `/healthz`; panics
    /// with its stderr when it exits first.
    fn start(&self, extra: &[&str]) -> Proc {
        let mut p = self.spawn(extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if curl("GET", &self.url("/healthz"), None, None).0 == 200 {
                return p;
            }
            if let Some(status) = p.0.try_wait().expect("wait") {
                panic!(
                    "aggregator exited ({status}) instead of serving: {}",
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "aggregator did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the aggregator expecting it to refuse to start: (exit code,
    /// stderr). Panics when it serves instead.
    fn refused(&self, extra: &[&str]) -> (i32, String) {
        let mut p = self.spawn(extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.0.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), self.stderr());
            }
            assert!(
                curl("GET", &self.url("/healthz"), None, None).0 != 200,
                "the aggregator started on an emptied store instead of refusing"
            );
            assert!(
                Instant::now() < deadline,
                "aggregator neither served nor exited"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn report(&self, r: &Report) {
        let client = AggregatorClient::new(
            vec![BaseUrl::parse(&self.url("")).expect("url")],
            Duration::from_secs(5),
        )
        .with_token(Some(REPORT.into()));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(client.post_report(r))
            .expect("report accepted");
    }

    /// Waives n1's BOND_PORT_DOWN on bond0/eth1 for an hour; its id.
    fn waive(&self) -> i64 {
        let (code, w) = curl(
            "POST",
            &self.url("/v1/waivers"),
            Some(ADMIN),
            Some(
                &json!({ "node": "n1", "code": "BOND_PORT_DOWN", "subject": "bond0/eth1",
                          "reason": "CHG-1 NIC swap", "author": "ana", "duration": "1h" }),
            ),
        );
        assert_eq!(code, 201, "waiver created: {w}");
        w["id"].as_i64().expect("waiver id")
    }

    /// The gate's HTTP status for role=compute: 200 go, 503 no-go.
    fn gate(&self) -> (u16, Value) {
        curl("GET", &self.url("/v1/gate?scope=role=compute"), None, None)
    }

    fn waivers(&self) -> Value {
        let (code, v) = curl("GET", &self.url("/v1/waivers"), None, None);
        assert_eq!(code, 200, "list waivers: {v}");
        v
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("preflight-full-")
            .tempdir()
            .expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount -t tmpfs on {}", dir.path().display());
        Self(dir)
    }

    /// Writes `filler` until the file system refuses.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.path().join("filler")).expect("filler");
        let chunk = vec![0x5au8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk may have gone in: fill byte by byte too.
        while f.write_all(&[0x5a]).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.path().join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a restart the node reports its fault again: the gate must be
/// no-go, the removed waiver nowhere in force.
fn assert_removed_after_restart(agg: &Agg, id: i64, when: &str) {
    agg.report(&critical("n1"));
    let (code, v) = agg.gate();
    assert_eq!(
        code, 503,
        "{when}: a waiver whose removal was answered came back and the gate is go: {v}"
    );
    let ws = agg.waivers();
    assert!(
        !ws.to_string().contains(&format!("\"id\":{id},")),
        "{when}: removed waiver {id} is in force again: {ws}"
    );
}

#[test]
fn waiver_removed_on_a_full_disk_stays_removed_after_restart() {
    require_root("mounting a small tmpfs");
    let fs = Tmpfs::mount("8m");
    let agg = Agg::new(fs.0.path().join("preflight.db"));
    let proc = agg.start(&[]);
    agg.report(&critical("n1"));
    assert_eq!(agg.gate().0, 503, "n1 is critical: no-go");
    let id = agg.waive();
    assert_eq!(agg.gate().0, 200, "the waiver covers n1's finding: go");

    fs.fill();
    let (status, body) = curl(
        "DELETE",
        &agg.url(&format!("/v1/waivers/{id}?by=ana")),
        Some(ADMIN),
        None,
    );
    eprintln!("DELETE on a full disk: {status} {body}");
    assert_eq!(agg.gate().0, 503, "the waiver is gone: no-go");
    let (ready, detail) = curl("GET", &agg.url("/readyz"), None, None);
    eprintln!("/readyz on the full disk: {ready} {detail}");
    assert_eq!(
        ready, 503,
        "the reserve is spent and the disk full: not ready ({detail})"
    );

    // A crash or an upgrade restarts the aggregator with the disk still full…
    drop(proc);
    let proc = agg.start(&[]);
    assert_removed_after_restart(&agg, id, "restart on the full disk");
    // …and once more after the space came back.
    drop(proc);
    fs.free();
    let _proc = agg.start(&[]);
    assert_removed_after_restart(&agg, id, "restart after freeing the disk");
    wait_until("ready again with the reserve back", || {
        curl("GET", &agg.url("/readyz"), None, None).0 == 200
    });
    assert!(
        Path::new(&format!("{}.reserve", agg.db.display())).exists(),
        "the reserve file is recreated"
    );
    // SQLite's reserve lets the removal be written on the full disk: it is
    // acknowledged, not left pending.
    assert_eq!(
        status, 204,
        "the removal must be recorded even on a full disk: {body}"
    );
}

fn remove_wal(db: &Path) {
    for ext in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{ext}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).expect("remove WAL");
        }
    }
}

#[test]
fn emptied_store_is_refused_at_start() {
    let dir = tempfile::Builder::new()
        .prefix("preflight-emptied-")
        .tempdir()
        .expect("temp dir");
    let agg = Agg::new(dir.path().join("preflight.db"));

    // The WAL, which holds every write since the last checkpoint, is lost
    // after a crash.
    let proc = agg.start(&[]);
    agg.report(&critical("n1"));
    agg.waive();
    drop(proc);
    remove_wal(&agg.db);
    let (code, err) = agg.refused(&[]);
    eprintln!("lost WAL: exit {code}: {err}");
    assert_eq!(
        code, 64,
        "a store that lost its WAL is a refusal to start: {err}"
    );
    assert!(
        err.contains("--accept-empty-store") && err.contains(&agg.db.display().to_string()),
        "the refusal names the store and the way out: {err}"
    );

    // The operator accepts it: it starts empty, and stays accepted.
    let proc = agg.start(&["--accept-empty-store"]);
    assert_eq!(agg.waivers(), json!([]), "nothing survived the lost WAL");
    agg.report(&critical("n1"));
    agg.waive();
    drop(proc);
    let proc = agg.start(&[]);
    assert_eq!(agg.waivers().as_array().map(Vec::len), Some(1));
    drop(proc);

    // The main file truncated to 0 bytes.
    remove_wal(&agg.db);
    std::fs::File::create(&agg.db).expect("truncate");
    let (code, err) = agg.refused(&[]);
    assert_eq!(code, 64, "a truncated store is a refusal to start: {err}");
    assert!(err.contains("--accept-empty-store"), "{err}");
}

#[test]
fn corrupt_audit_page_makes_readyz_not_ready() {
    let dir = tempfile::Builder::new()
        .prefix("preflight-corrupt-")
        .tempdir()
        .expect("temp dir");
    let agg = Agg::new(dir.path().join("preflight.db"));
    let proc = agg.start(&[]);
    agg.report(&critical("n1"));
    agg.waive();
    drop(proc);

    // Everything into the main file, then the audit table's root page
    // overwritten: every write that appends to the audit log fails.
    let out = Command::new("sqlite3")
        .arg(&agg.db)
        .arg("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA page_size; SELECT rootpage FROM sqlite_master WHERE name='audit';")
        .output()
        .expect("sqlite3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let [.., page_size, root] = nums[..] else {
        panic!("sqlite3 answered {text:?}");
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&agg.db)
            .expect("open db");
        f.seek(SeekFrom::Start((root - 1) * page_size))
            .expect("seek");
        f.write_all(&vec![0xff; usize::try_from(page_size).expect("page size")])
            .expect("corrupt");
        f.sync_all().expect("sync");
    }

    let _proc = agg.start(&[]);
    let (code, body) = curl(
        "POST",
        &agg.url("/v1/waivers"),
        Some(ADMIN),
        Some(
            &json!({ "node": "n1", "code": "BOND_PORT_DOWN", "reason": "CHG-2",
                      "author": "ana", "duration": "1h" }),
        ),
    );
    assert_eq!(
        code, 503,
        "the waiver write fails on the corrupt audit table: {body}"
    );
    let (ready, detail) = curl("GET", &agg.url("/readyz"), None, None);
    eprintln!("/readyz with a corrupt audit page: {ready} {detail}");
    assert_eq!(
        ready, 503,
        "/readyz must not say ready while waiver writes fail: {detail}"
    );
    assert!(
        detail.to_string().contains("malformed") || detail.to_string().contains("corrupt"),
        "the detail says what is wrong: {detail}"
    );
}
