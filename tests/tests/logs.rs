//! Issue 32: log lines written to a pipe or a file (the journal, `up`)
//! carry no terminal escape sequences, from the aggregator, the agent
//! daemon and `preflight up` alike; and `gate` says "1 node".

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::{curl, free_port, preflight_bin, Proc};

/// Runs `args` with stderr to a pipe until `ready` answers 200 (or, with
/// no URL, until it exits), then stops it and returns what it logged.
fn stderr_of(args: &[&str], ready: Option<&str>, dir: &std::path::Path) -> String {
    let mut child = Command::new(preflight_bin())
        .args(args)
        .current_dir(dir)
        .env("PREFLIGHT_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn preflight");
    if let Some(url) = ready {
        let t = Instant::now();
        while curl("GET", url, None, None).0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(30), "{url} never ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A moment for the first reports and their log lines.
        std::thread::sleep(Duration::from_millis(1500));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("read stderr");
    let _ = child.wait();
    err
}

#[test]
fn no_escape_sequences_in_piped_logs_and_gate_counts_one_node() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let log = stderr_of(
        &["up", "--listen", &listen, "--agent-listen", &agent_listen],
        Some(&format!("{url}/readyz")),
        dir.path(),
    );
    assert!(log.lines().count() >= 2, "up logged nothing: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in piped log lines:\n{log:?}"
    );
    // A bad configuration: the error path logs too.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[aggregator]\nlisten = \"nowhere\"\n").expect("write");
    let log = stderr_of(
        &["aggregator", "--config", bad.to_str().expect("utf-8")],
        None,
        dir.path(),
    );
    assert!(!log.is_empty() && !log.contains('\u{1b}'), "{log:?}");

    // `gate` on a one-node fleet: "1 node", not "1 nodes".
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("dir");
    let _up = Proc(
        Command::new(preflight_bin())
            .args(["up", "--listen", &listen, "--agent-listen", &agent_listen])
            .current_dir(dir.path())
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn up"),
    );
    let url = format!("http://{listen}");
    let t = Instant::now();
    let out = loop {
        let out = Command::new(preflight_bin())
            .args(["gate", "--server", &url])
            .output()
            .expect("gate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("(1 node") {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the local node never reported: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains("(1 node:"), "{out}");
}
