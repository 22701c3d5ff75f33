//! Issue 32: `preflight agent` and `preflight-agent` read a configuration
//! file with one loader, so they accept and refuse the same files. Before,
//! `preflight agent` also validated `[aggregator]` and read its token
//! files, so a file the packaged agent ran with was refused by the other.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::{agent_bin, curl, free_port, preflight_bin, Proc};

/// Started with `cfg`: `Ok(())` when the agent serves its `/healthz`, or
/// `Err(stderr)` when it exits 64 first.
fn outcome(mut cmd: Command, port: u16) -> Result<(), String> {
    let child = cmd
        .env("PREFLIGHT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let mut proc = Proc(child);
    let t = Instant::now();
    loop {
        if let Some(status) = proc.0.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = proc.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert_eq!(status.code(), Some(64), "exit status; stderr: {err}");
            return Err(err);
        }
        if curl(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .0 == 200
        {
            return Ok(());
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "neither served nor exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn both_agent_commands_accept_and_refuse_the_same_files() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let cases: [(&str, &str, bool); 7] = [
        ("valid", "", true),
        (
            "valid with an aggregator section",
            "[aggregator]\nlisten = \"127.0.0.1:1\"\n",
            true,
        ),
        (
            "a bad [aggregator] (the aggregator's to refuse)",
            "[aggregator]\nlisten = \"not an address\"\nunknown_key = 1\n",
            true,
        ),
        (
            "a missing aggregator token file",
            "[aggregator]\nnode_tokens_file = \"/nonexistent/node-tokens\"\n",
            true,
        ),
        ("a bad [agent] key", "[agent]\nheartbeat = \"0s\"\n", false),
        (
            "expect = networkd with a directory",
            "expect = \"networkd:/nonexistent/network\"\n",
            true,
        ),
        ("expect naming no stack", "expect = \"ifcfg\"\n", false),
    ];
    for (name, extra, accepted) in cases {
        let mut results = Vec::new();
        for preflight_cmd in [true, false] {
            let port = free_port();
            // `[agent]` first; a case's own `[agent]` table would be a
            // duplicate, so the bad-agent case replaces it.
            let agent = if extra.starts_with("[agent]") {
                format!("{extra}listen = \"127.0.0.1:{port}\"\nnode = \"parity\"\n")
            } else {
                format!(
                    "[agent]\nnode = \"parity\"\nlisten = \"127.0.0.1:{port}\"\nprobe_gateways = false\novsdb = \"off\"\naggregators = []\n{extra}"
                )
            };
            let cfg = d.join(format!("{}.toml", results.len()));
            std::fs::write(&cfg, &agent).expect("config");
            let cmd = if preflight_cmd {
                let mut c = Command::new(preflight_bin());
                c.args(["agent", "--config"]).arg(&cfg);
                c
            } else {
                let mut c = Command::new(agent_bin());
                c.arg("--config").arg(&cfg);
                c
            };
            results.push(outcome(cmd, port));
        }
        assert_eq!(
            results[0].is_ok(),
            results[1].is_ok(),
            "{name}: `preflight agent` {:?} vs `preflight-agent` {:?}",
            results[0],
            results[1]
        );
        assert_eq!(results[0].is_ok(), accepted, "{name}: {:?}", results[0]);
        if let (Err(a), Err(b)) = (&results[0], &results[1]) {
            let key = if extra.starts_with("expect") {
                "agent.expect"
            } else {
                "agent.heartbeat"
            };
            assert!(
                a.contains(key) && b.contains(key),
                "{name}: both name the key: {a} / {b}"
            );
        }
    }
}
