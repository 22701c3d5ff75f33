//! Test harness shared by preflight's integration tests: network namespaces
//! (veth, bridge) for real netlink on this host, a real Open vSwitch in a
//! temp dir, and a qemu VM with a real Debian kernel for bonding, which this
//! host's kernel lacks.
//!
//! Nothing here skips: a test that cannot get root, a namespace or a VM
//! panics with the reason, so CI goes red instead of silently green.

pub mod certs;
pub mod netns;
pub mod ovs;
pub mod pg;
pub mod replica;
pub mod stack;
pub mod vm;
pub mod watcher;

use std::path::PathBuf;

/// A child process killed and reaped when the test ends, also when it
/// panics, so that a failed test leaves no daemon behind.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root.
#[must_use]
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// The `preflight` binary under test: `$PREFLIGHT_BIN`, else the debug build
/// of this workspace (the test command builds it before running tests).
#[must_use]
pub fn preflight_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PREFLIGHT_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| workspace().join("target"), PathBuf::from);
    let bin = target.join("debug").join("preflight");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace` first (the README test command does), or set PREFLIGHT_BIN",
        bin.display()
    );
    bin
}

/// A TCP port free on loopback right now (the kernel's pick).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on loopback")
        .port()
}

/// The `preflight-agent` binary built beside [`preflight_bin`].
#[must_use]
pub fn agent_bin() -> PathBuf {
    let bin = preflight_bin().with_file_name("preflight-agent");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// Panics unless running as root, naming what needs it.
pub fn require_root(what: &str) {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "{what} needs root (network namespaces / qemu); CI runs as root. This test does not skip."
    );
}

/// `curl` (loopback or a test namespace only): (HTTP status, body as JSON or
/// Null); status 0 when nothing answered. `token` is sent as a bearer token.
#[must_use]
pub fn curl(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    curl_with(&[], method, url, token, body)
}

/// [`curl`] with more arguments for it first (`--cacert`, `--cert`, …).
#[must_use]
pub fn curl_with(
    args: &[std::ffi::OsString],
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut c = std::process::Command::new("curl");
    c.args(args);
    c.args([
        "-s",
        "-m",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
    ]);
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
