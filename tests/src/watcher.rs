//! `preflight inspect --watch --json` as a child process: its change lines
//! read on a thread, so a test can wait for one finding to appear or clear.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `inspect --watch --json`, killed when dropped.
pub struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    /// Starts `cmd` (a `preflight` command, e.g. run inside a namespace)
    /// with `inspect --watch --json` and `extra` arguments.
    #[must_use]
    pub fn start(mut cmd: Command, extra: &[&str]) -> Self {
        let mut child = cmd
            .args(["inspect", "--watch", "--json"])
            .args(extra)
            .env("PREFLIGHT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn watch");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = Arc::clone(&err);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                err2.lock().expect("lock").push_str(&(l + "\n"));
            }
        });
        Self {
            child,
            lines: rx,
            stderr: err,
        }
    }

    /// Next change line matching (change, code, subject), within `limit`;
    /// panics with the watcher's stderr otherwise.
    pub fn expect(&self, change: &str, code: &str, subject: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no `{change} {code} {subject}` within {limit:?}; stderr: {}",
                    self.stderr.lock().expect("lock")
                )
            });
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"));
            if v["change"] == change
                && v["finding"]["code"] == code
                && v["finding"]["subject"] == subject
            {
                return v;
            }
        }
    }
}

impl Watcher {
    /// The next line, parsed, if one comes within `limit`.
    #[must_use]
    pub fn next_line(&self, limit: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(limit).ok()?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}")),
        )
    }

    /// What the watcher wrote to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
