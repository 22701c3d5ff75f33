//! Network namespaces made by a test, deleted when dropped. Traffic in tests
//! stays inside these namespaces.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by a test.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "`{what}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates a namespace with loopback up. Panics (never skips) when that is
    /// impossible, with the reason.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        crate::require_root("a network namespace test");
        let name = format!(
            "pf-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
        check(&format!("ip netns add {name}"), &out);
        let ns = Self { name };
        ns.ip("link set lo up");
        ns
    }

    /// Runs `ip -n NS <args>` and panics on failure.
    pub fn ip(&self, args: &str) {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args.split_whitespace());
        let out = cmd.output().expect("ip runs");
        check(&format!("ip -n {} {args}", self.name), &out);
    }

    /// Runs several `ip` commands in one process (`ip -batch`).
    pub fn ip_batch(&self, lines: &[String]) {
        let mut file = tempfile::NamedTempFile::new().expect("create batch file");
        std::io::Write::write_all(&mut file, (lines.join("\n") + "\n").as_bytes())
            .expect("write batch file");
        let out = Command::new("ip")
            .args(["-n", &self.name, "-batch"])
            .arg(file.path())
            .output()
            .expect("ip runs");
        check("ip -batch", &out);
    }

    /// A command that runs `program` inside the namespace.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
