//! `preflight-agent`, the agent's own binary (what the unit, the package,
//! the Ansible role and the DaemonSet run): in a namespace with a veth
//! pair it serves the same report as `preflight agent`, and its command
//! line and configuration errors exit 64 with the file and line.

use std::process::Stdio;
use std::time::Duration;

use preflight_tests::netns::Netns;
use preflight_tests::{agent_bin, Proc};
use serde_json::Value;

#[test]
fn the_agent_binary_reports_what_the_kernel_says() {
    let ns = Netns::new("abin");
    ns.ip("link add v0 type veth peer name v1");
    ns.ip("link set v0 up");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[agent]\nnode = \"abin\"\nlisten = \"127.0.0.1:9101\"\nprobe_gateways = false\novsdb = \"off\"\n\
         [aggregator]\nlisten = \"127.0.0.1:9100\"\n",
    )
    .expect("config");
    let _agent = Proc(
        ns.command(agent_bin())
            .arg("--config")
            .arg(&cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn preflight-agent"),
    );
    let report = || -> Option<Value> {
        let out = ns
            .command("curl")
            .args(["-sf", "http://127.0.0.1:9101/v1/report"])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let mut last = None;
    for _ in 0..100 {
        last = report();
        if last.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = last.expect("preflight-agent answers /v1/report");
    let text = state.to_string();
    // v0 is admin up without carrier: the kernel's state, through the same
    // pipeline as `preflight agent`.
    assert!(text.contains("\"v0\""), "{text}");
    assert!(text.contains("LINK_NO_CARRIER"), "{text}");
    let metrics = ns
        .command("curl")
        .args(["-sf", "http://127.0.0.1:9101/metrics"])
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&metrics.stdout).contains("preflight_"),
        "no preflight metrics"
    );
}

#[test]
fn bad_usage_and_bad_configuration_exit_64() {
    let out = std::process::Command::new(agent_bin())
        .arg("agent")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument `agent`"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[agent]\n\nheartbeat = \"0s\"\n").expect("config");
    let out = std::process::Command::new(agent_bin())
        .arg("-c")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: key `agent.heartbeat`", cfg.display())),
        "{err}"
    );
    let out = std::process::Command::new(agent_bin())
        .arg("--version")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("preflight-agent "));
}

/// `PREFLIGHT_LOG` reaches the agent's own binary: `debug` for one module
/// shows its debug lines and nothing below `warn` from the others (a
/// subscriber capped at `info` once swallowed every debug line).
#[test]
fn preflight_log_turns_on_debug_lines_per_target() {
    let ns = Netns::new("alog");
    ns.ip("link add v0 type veth peer name v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[agent]\nnode = \"alog\"\nlisten = \"127.0.0.1:9101\"\nprobe_gateways = false\novsdb = \"off\"\n",
    )
    .expect("config");
    let log = dir.path().join("stderr");
    let mut agent = Proc(
        ns.command(agent_bin())
            .arg("--config")
            .arg(&cfg)
            .env("PREFLIGHT_LOG", "warn,preflight_agent::monitor=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn preflight-agent"),
    );
    // A change after the first evaluation is evaluated and logged.
    let mut text = String::new();
    for i in 0..100 {
        if i % 10 == 5 {
            ns.ip(if i % 20 == 5 {
                "link set v0 up"
            } else {
                "link set v0 down"
            });
        }
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("state evaluated") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    assert!(
        text.lines().any(|l| l.contains("DEBUG")
            && l.contains("preflight_agent")
            && l.contains("state evaluated")),
        "no debug line of preflight_agent:\n{text}"
    );
    // `agent listening` is preflight_agentd's info line: below warn.
    assert!(!text.contains("agent listening"), "{text}");
}
