//! A flap storm against a real agent in a namespace: the agent publishes at
//! most once per short window during a burst (the netlink watch paces its
//! snapshots) and sets its gauges at the scrape, so these tests check that
//! nothing is lost on the way: after 1,000 carrier toggles the final state is
//! exact, LINK_FLAPPING counts every transition, the metrics show the last
//! state, and speed and duplex (read once per publication) follow carrier;
//! a storm longer than a second (a wider window) ends as exactly. Needs
//! root (CI runs as root); never skips.

use std::process::Stdio;
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, Proc};
use serde_json::Value;

const PORT: u16 = 19_301;

/// GET inside the namespace (the agent listens on the namespace's loopback).
fn get(ns: &Netns, path: &str) -> Option<String> {
    let out = ns
        .command("curl")
        .args(["-s", "-f", "-m", "5"])
        .arg(format!("http://127.0.0.1:{PORT}{path}"))
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn report(ns: &Netns) -> Option<Value> {
    serde_json::from_str(&get(ns, "/v1/report")?).ok()
}

fn iface<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

fn finding<'a>(v: &'a Value, code: &str, subject: &str) -> Option<&'a Value> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == code && f["subject"] == subject)
}

/// Polls the report until `pred` holds; panics with the last report after
/// `limit` (a bound on waiting, not a latency assertion).
fn wait_report(ns: &Netns, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(v) = report(ns) {
            if pred(&v) {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}; last report: {last:#}");
}

/// A namespace with the veth pair w0/w1 up and an agent watching it; the
/// agent runs until the returned `Proc` drops (before the namespace).
fn agent(tag: &str) -> (Proc, Netns, tempfile::TempDir) {
    let ns = Netns::new(tag);
    for l in [
        "link add w0 type veth peer name w1",
        "link set w0 up",
        "link set w1 up",
    ] {
        ns.ip(l);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    // A window far longer than the test: every toggle stays counted.
    std::fs::write(
        &cfg,
        format!("[agent]\nnode = \"flap\"\nlisten = \"127.0.0.1:{PORT}\"\nprobe_gateways = false\novsdb = \"off\"\n\n[policy.flapping]\nwindow = \"30m\"\nmax_changes = 4\n"),
    )
    .expect("config");
    let agent = Proc(
        ns.command(preflight_bin())
            .args(["agent", "--config"])
            .arg(&cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    );
    (agent, ns, dir)
}

/// w0's `carrier_changes` once the agent reports it up (before a storm).
fn carrier_changes_once_up(ns: &Netns) -> u64 {
    let before = wait_report(
        ns,
        Duration::from_secs(30),
        "the agent never reported w0 up",
        |v| iface(v, "w0")["carrier"] == true,
    );
    iface(&before, "w0")["carrier_changes"]
        .as_u64()
        .expect("carrier_changes")
}

/// The first report after `toggles` changes of w1 that shows their end
/// exactly: w0's carrier as `carrier`, its `carrier_changes` at `expected`,
/// LINK_FLAPPING counting every toggle (and LINK_NO_CARRIER when w0 ended
/// without carrier).
fn wait_storm_end(ns: &Netns, toggles: u64, expected: u64, carrier: bool) -> Value {
    let message = format!("w0 changed carrier {toggles} times");
    wait_report(
        ns,
        Duration::from_secs(30),
        "the storm's end never reached the report exactly",
        |v| {
            let w0 = iface(v, "w0");
            w0["carrier"] == carrier
                && w0["carrier_changes"].as_u64() == Some(expected)
                && (carrier || finding(v, "LINK_NO_CARRIER", "w0").is_some())
                && finding(v, "LINK_FLAPPING", "w0")
                    .is_some_and(|f| f["message"].as_str().unwrap_or("").contains(&message))
        },
    )
}

#[test]
fn a_thousand_toggles_end_in_the_exact_state_and_flap_count() {
    let (_agent, ns, _dir) = agent("flap");
    let start = carrier_changes_once_up(&ns);

    // 1,000 toggles of w1 as fast as `ip -batch` can send them: w0 loses
    // and regains carrier 1,000 times, w1 ends up as it started.
    let toggles = 1000;
    let batch: Vec<String> = (0..toggles)
        .map(|i| format!("link set w1 {}", if i % 2 == 0 { "down" } else { "up" }))
        .collect();
    ns.ip_batch(&batch);

    let expected = start + toggles;
    let after = wait_storm_end(&ns, toggles, expected, true);
    assert!(
        finding(&after, "LINK_NO_CARRIER", "w0").is_none(),
        "w0 has carrier again: {after:#}"
    );
    assert_eq!(iface(&after, "w1")["carrier"], true);
    // Speed and duplex are read from sysfs when the watch publishes (once
    // per interface that regained carrier since the last publication): a
    // veth reports 10000 Mb/s full duplex.
    for name in ["w0", "w1"] {
        assert_eq!(iface(&after, name)["speed_mbps"], 10_000, "{after:#}");
        assert_eq!(iface(&after, name)["duplex"], "full", "{after:#}");
    }

    // The gauges follow the last state at the scrape, not a state in the
    // middle of the storm.
    let metrics = get(&ns, "/metrics").expect("metrics");
    let line = format!("preflight_interface_carrier_changes{{interface=\"w0\"}} {expected}");
    assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    assert!(
        metrics.contains("preflight_interface_carrier{interface=\"w0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("preflight_finding_active{")
                && l.contains("code=\"LINK_FLAPPING\"")
                && l.contains("subject=\"w0\"")),
        "{metrics}"
    );

    // A single change after the storm (and a quiet second) still arrives.
    std::thread::sleep(Duration::from_secs(1));
    ns.ip("link set w1 down");
    let v = wait_report(
        &ns,
        Duration::from_secs(30),
        "a single change after the storm was lost",
        |v| finding(v, "LINK_NO_CARRIER", "w0").is_some(),
    );
    assert_eq!(
        iface(&v, "w0")["carrier_changes"].as_u64(),
        Some(expected + 1)
    );
    // Without carrier, no speed (although a veth's sysfs still shows one).
    assert_eq!(iface(&v, "w0")["speed_mbps"], Value::Null, "{v:#}");

    // Back up after a quiet second: published at once, speed read again.
    std::thread::sleep(Duration::from_secs(1));
    ns.ip("link set w1 up");
    wait_report(
        &ns,
        Duration::from_secs(30),
        "w0's speed was not read again after it regained carrier",
        |v| {
            let w0 = iface(v, "w0");
            w0["carrier"] == true
                && w0["carrier_changes"].as_u64() == Some(expected + 2)
                && w0["speed_mbps"] == 10_000
        },
    );
}

/// Toggles spread over about three seconds, each within the normal window
/// of the one before: the watch widens its window after the first second
/// (a storm), and still ends in the exact state and count, published once
/// the storm is over.
#[test]
fn a_storm_longer_than_a_second_ends_in_the_exact_state() {
    let (_agent, ns, _dir) = agent("storm");
    let start = carrier_changes_once_up(&ns);
    // One `ip` per toggle, 10 ms apart (each takes a few ms to start): far
    // more often than once per 50 ms, for longer than a second.
    let toggles: u64 = 201;
    let began = Instant::now();
    for i in 0..toggles {
        ns.ip(&format!(
            "link set w1 {}",
            if i % 2 == 0 { "down" } else { "up" }
        ));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        began.elapsed() > Duration::from_secs(1),
        "the toggles did not last a second: not a storm"
    );
    // An odd number of toggles: w1 and so w0 end without carrier.
    let expected = start + toggles;
    let after = wait_storm_end(&ns, toggles, expected, false);
    assert_eq!(iface(&after, "w1")["admin_up"], false, "{after:#}");
    assert_eq!(iface(&after, "w0")["speed_mbps"], Value::Null, "{after:#}");
}
