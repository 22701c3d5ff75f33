//! Issue 37, items 1 and 2, against a real aggregator process on loopback:
//! no write is open once any credential exists, and a blocked node cannot
//! relabel itself out of the scope being gated. Both made the gate say go
//! (or let anyone waive a finding) before the fix.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::{curl, free_port, preflight_bin, Proc};
use serde_json::{json, Value};

const READER: &str = "reader-secret";
const NODE_A: &str = "node-a-secret";

fn digest(token: &str) -> String {
    preflight_aggregator::auth::hex(&preflight_aggregator::auth::token_digest(token))
}

fn report(node: &str, seq: u64, role: &str, critical: bool) -> Value {
    let mut state = serde_json::to_value(preflight_model::NodeState::new(
        node.into(),
        &preflight_model::Snapshot::default(),
        vec![],
    ))
    .expect("state");
    if critical {
        state["verdict"] = json!("no-go");
        state["findings"] = json!([{"code": "BOND_PORT_DOWN", "severity": "critical",
            "subject": "bond0/eth1", "message": "bond0 port eth1 is down",
            "since": "2025-01-01T00:00:00Z"}]);
    }
    json!({"node": node, "boot_id": "boot-a", "seq": seq, "kind": "full",
        "labels": {"role": role}, "state": state})
}

/// An aggregator on loopback with a reader identity and node tokens, and no
/// operator credential at all (the audit's configuration, tokens instead of
/// a client CA: the role logic is the same).
fn start(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    std::fs::write(
        dir.join("node-tokens"),
        format!("node-a {}\n", digest(NODE_A)),
    )
    .expect("tokens");
    let cfg = dir.join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\n\
             node_tokens_file = \"{tokens}\"\nsettle = \"0s\"\n\
             [[aggregator.identity]]\nname = \"dashboard\"\ntoken_sha256 = \"{reader}\"\nroles = [\"reader\"]\n",
            db = dir.join("preflight.db").display(),
            tokens = dir.join("node-tokens").display(),
            reader = digest(READER),
        ),
    )
    .expect("config");
    let proc = Proc(
        Command::new(preflight_bin())
            .args(["aggregator", "--config"])
            .arg(&cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while curl("GET", &format!("{url}/healthz"), None, None).0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "aggregator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, url)
}

fn gate(url: &str, scope: &str) -> i32 {
    Command::new(preflight_bin())
        .args(["gate", "--server", url, "--scope", scope])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("preflight gate")
        .code()
        .expect("exit code")
}

#[test]
fn no_write_is_open_once_a_credential_exists_and_blocked_nodes_keep_their_scope() {
    let dir = tempfile::tempdir().expect("dir");
    let (_agg, url) = start(dir.path());
    let waiver = json!({"node": "node-a", "reason": "test", "author": "mallory", "duration": "1h"});

    // Item 1: no operator credential is configured; the writes it guards are
    // closed to a caller without a credential (was 201/204), and a reader
    // still gets 403.
    let (status, body) = curl("POST", &format!("{url}/v1/waivers"), None, Some(&waiver));
    assert_eq!(status, 401, "an anonymous waiver: {body}");
    let (status, _) = curl(
        "POST",
        &format!("{url}/v1/waivers"),
        Some(READER),
        Some(&waiver),
    );
    assert_eq!(status, 403);
    let inv = json!({"labels": {"role": "compute"}});
    let (status, _) = curl("PUT", &format!("{url}/v1/nodes/node-x"), None, Some(&inv));
    assert_eq!(status, 401, "an anonymous inventory change");
    let (status, _) = curl("DELETE", &format!("{url}/v1/nodes/node-a"), None, None);
    assert_eq!(status, 401, "an anonymous node removal");
    // Reports need the node's token too.
    let (status, _) = curl(
        "POST",
        &format!("{url}/v1/reports"),
        None,
        Some(&report("node-a", 1, "compute", false)),
    );
    assert_eq!(status, 401, "an anonymous report");

    // Item 2: node-a blocks role=compute, then reports the same finding
    // under another label. The gate stays no-go (it said go before).
    let post = |r: &Value| curl("POST", &format!("{url}/v1/reports"), Some(NODE_A), Some(r)).0;
    assert_eq!(post(&report("node-a", 1, "compute", true)), 200);
    assert_eq!(gate(&url, "role=compute"), 1);
    assert_eq!(post(&report("node-a", 2, "comptue", true)), 200);
    assert_eq!(
        gate(&url, "role=compute"),
        1,
        "a blocked node moved itself out of its scope"
    );
    // Healthy, then healthy again: now it may move, and the audit names
    // the credential that moved it.
    assert_eq!(post(&report("node-a", 3, "comptue", false)), 200);
    assert_eq!(post(&report("node-a", 4, "comptue", false)), 200);
    assert_eq!(gate(&url, "role=comptue"), 0);
    let (status, audit) = curl("GET", &format!("{url}/v1/audit"), Some(READER), None);
    assert_eq!(status, 200);
    let entries = audit.as_array().expect("audit list");
    let moved = entries
        .iter()
        .filter(|e| e["action"] == "node.upsert" && e["detail"].to_string().contains("node-a"))
        .map(|e| e["actor"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert!(
        !moved.is_empty() && moved.iter().all(|a| a == "agent:node-token:node-a"),
        "audit actors for node-a: {moved:?} in {audit}"
    );
}

fn report_boot(node: &str, boot: &str, seq: u64, critical: bool) -> Value {
    let mut r = report(node, seq, "compute", critical);
    r["boot_id"] = json!(boot);
    r
}

/// Issue 37 (smaller holes), against the real aggregator: a report of an
/// earlier boot is not accepted again after the node moved to a new boot
/// (it was, and alternating replays forever), and node-a's credential
/// reporting for `NODE-A` does not make a second, healthy node.
#[test]
fn replayed_boots_and_upper_case_names_do_not_make_a_go() {
    let dir = tempfile::tempdir().expect("dir");
    let (_agg, url) = start(dir.path());
    let post = |r: &Value| curl("POST", &format!("{url}/v1/reports"), Some(NODE_A), Some(r));
    // Boot a1 healthy, boot a2 broken.
    assert_eq!(post(&report_boot("node-a", "a1", 1, false)).0, 200);
    assert_eq!(post(&report_boot("node-a", "a1", 2, false)).0, 200);
    assert_eq!(post(&report_boot("node-a", "a2", 1, true)).0, 200);
    assert_eq!(gate(&url, "role=compute"), 1);
    // An attacker replays a1's captured healthy reports (a report of a1
    // numbered past its last, 2, would be a live agent: see fleet/boots.rs).
    for seq in [1, 2] {
        let (status, body) = post(&report_boot("node-a", "a1", seq, false));
        assert_eq!(status, 409, "a1 seq {seq} replayed: {body}");
    }
    assert_eq!(gate(&url, "role=compute"), 1, "still no-go");
    // The same credential, the name in upper case: the same node.
    let (status, body) = post(&report_boot("NODE-A", "a2", 2, false));
    assert!(status == 200 || status == 400, "NODE-A: {status} {body}");
    let (status, nodes) = curl("GET", &format!("{url}/v1/nodes"), Some(READER), None);
    assert_eq!(status, 200);
    let names: Vec<String> = nodes
        .as_array()
        .expect("node list")
        .iter()
        .map(|n| n["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["node-a"], "{nodes}");
}
