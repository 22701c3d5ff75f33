//! One `preflight aggregator` process on loopback, for tests that start,
//! kill and restart aggregators (replicas sharing one PostgreSQL, a
//! restart on SQLite). Its log goes to a file beside its configuration,
//! shown when it does not start.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{curl, free_port, preflight_bin, Proc};

/// An aggregator process with its configuration file, its log and its URL.
pub struct Replica {
    proc: Option<Proc>,
    cfg: PathBuf,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Replica {
    /// Writes `DIR/NAME.toml` (a free loopback port, `database`, its own
    /// state directory `DIR/NAME-state`, `auth = "none"`, then `extra`:
    /// more `[aggregator]` lines) and starts the aggregator on it.
    ///
    /// # Panics
    /// When the file cannot be written or the aggregator does not answer
    /// `/healthz` within 20 s (its log is in the message).
    #[must_use]
    pub fn new(dir: &Path, name: &str, database: &str, extra: &str) -> Self {
        let port = free_port();
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\nstate_dir = \"{}\"\nauth = \"none\"\n{extra}",
                dir.join(format!("{name}-state")).display()
            ),
        )
        .expect("config");
        let mut r = Self {
            proc: None,
            cfg,
            log: dir.join(format!("{name}.log")),
            url: format!("http://127.0.0.1:{port}"),
        };
        r.start();
        r
    }

    /// Starts the process (again) and waits for `/healthz`.
    ///
    /// # Panics
    /// When it does not answer within 20 s.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let p = Command::new(preflight_bin())
            .args(["aggregator", "--config"])
            .arg(&self.cfg)
            .env("PREFLIGHT_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn aggregator");
        self.proc = Some(Proc(p));
        let t = Instant::now();
        while curl("GET", &format!("{}/healthz", self.url), None, None).0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{} did not start:\n{}",
                self.url,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL and start again.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGKILL: no shutdown, no last reload.
    ///
    /// # Panics
    /// When it is not running.
    pub fn kill(&mut self) {
        let mut p = self.proc.take().expect("running");
        let _ = p.0.kill();
        let _ = p.0.wait();
    }

    /// Stops it if it runs.
    pub fn stop(&mut self) {
        drop(self.proc.take());
    }

    /// Its log so far.
    #[must_use]
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}
