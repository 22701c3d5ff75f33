//! The fleet gate end to end: real agents, each in its own network namespace,
//! push to a real aggregator in a hub namespace over veth + bridge; the
//! `preflight gate` CLI asks. Traffic stays inside namespaces this test made.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, Proc};
use serde_json::Value;

const AGG: &str = "http://192.0.2.1:9100";
const ADMIN: &str = "admin-secret";

struct Fleet {
    hub: Netns,
    nodes: Vec<Netns>,
    /// Configs and the database; removed when the fleet is dropped.
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new(n: usize) -> Self {
        let hub = Netns::new("hub");
        hub.ip("link add br0 type bridge");
        hub.ip("addr add 192.0.2.1/24 dev br0");
        hub.ip("link set br0 up");
        let dir = tempfile::Builder::new()
            .prefix("preflight-fleet-")
            .tempdir()
            .expect("temp dir");
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = Netns::new(&format!("n{i}"));
            // Uplink: veth from the node namespace to the hub's bridge.
            ns.ip(&format!("link add up{i} type veth peer name hp{i}"));
            ns.ip(&format!("link set hp{i} netns {}", hub.name));
            hub.ip(&format!("link set hp{i} master br0"));
            hub.ip(&format!("link set hp{i} up"));
            ns.ip(&format!("addr add 192.0.2.{}/24 dev up{i}", 10 + i));
            ns.ip(&format!("link set up{i} up"));
            // A data link the test can break.
            ns.ip("link add data0 type veth peer name data1");
            ns.ip("link set data0 up");
            ns.ip("link set data1 up");
            std::fs::write(
                dir.path().join(format!("n{i}.toml")),
                format!(
                    "[agent]\nnode = \"n{i}\"\nlabels = {{ role = \"compute\" }}\naggregators = [\"{AGG}\"]\ntoken = \"report-secret\"\nheartbeat = \"1s\"\n\
                     [policy.severity]\nLINK_NO_CARRIER = \"critical\"\n"
                ),
            )
            .expect("agent config");
            nodes.push(ns);
        }
        let mut inventory = String::new();
        for i in 1..=n {
            inventory.push_str(&format!(
                "[[aggregator.node]]\nname = \"n{i}\"\nlabels = {{ role = \"compute\" }}\n"
            ));
        }
        std::fs::write(
            dir.path().join("agg.toml"),
            format!(
                "[aggregator]\nlisten = \"192.0.2.1:9100\"\ninsecure_plaintext = true\nfleet_report_token = true\nreads = \"open\"\ndatabase = \"{}\"\nreport_token = \"report-secret\"\nadmin_token = \"{ADMIN}\"\n\
                 ttl = \"3s\"\nsettle = \"2s\"\nmin_waiver = \"1s\"\nclosed_inventory = true\nscopes = [\"role=compute\"]\n{inventory}",
                dir.path().join("preflight.db").display()
            ),
        )
        .expect("aggregator config");
        Self { hub, nodes, dir }
    }

    fn aggregator(&self) -> Proc {
        let p = Proc(
            self.hub
                .command(preflight_bin())
                .args(["aggregator", "--config"])
                .arg(self.dir.path().join("agg.toml"))
                .env("PREFLIGHT_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn aggregator"),
        );
        // Ready when it answers (any answer).
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.preflight(&["status", "--server", AGG]).1.is_some() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("aggregator did not come up");
    }

    fn agent(&self, i: usize) -> Proc {
        Proc(
            self.nodes[i - 1]
                .command(preflight_bin())
                .args(["agent", "--config"])
                .arg(self.dir.path().join(format!("n{i}.toml")))
                .env("PREFLIGHT_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn agent"),
        )
    }

    /// Runs the CLI in the hub namespace: (exit code, stdout if it ran).
    fn preflight(&self, args: &[&str]) -> (i32, Option<String>) {
        let out = self
            .hub
            .command(preflight_bin())
            .args(args)
            .env("PREFLIGHT_LOG", "error")
            .output()
            .expect("run preflight");
        let code = out.status.code().unwrap_or(-1);
        (
            code,
            if code == 2 {
                None
            } else {
                Some(String::from_utf8_lossy(&out.stdout).into_owned())
            },
        )
    }

    fn gate(&self) -> (i32, Value) {
        let (code, out) =
            self.preflight(&["gate", "--server", AGG, "--scope", "role=compute", "--json"]);
        let v = out
            .and_then(|o| serde_json::from_str(&o).ok())
            .unwrap_or(Value::Null);
        (code, v)
    }

    fn wait_gate(&self, what: &str, limit: Duration, pred: impl Fn(i32, &Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (code, v) = self.gate();
            if pred(code, &v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "gate never reached: {what} within {limit:?}; last (exit {code}): {v:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn blockers(v: &Value) -> Vec<String> {
    v["blockers"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| {
                    format!(
                        "{} {} {}",
                        b["node"].as_str().unwrap_or(""),
                        b["code"].as_str().unwrap_or(""),
                        b["subject"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.0.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig}");
}

/// Each thread of process `pid`: its name and nice value
/// (`/proc/PID/task/TID/stat`).
fn thread_nices(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the aggregator's threads") {
        let Ok(stat) = std::fs::read_to_string(t.expect("task").path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (head, rest) = stat.rsplit_once(") ").expect("comm");
        let name = head.split_once(" (").expect("comm").1.to_string();
        let nice = rest.split(' ').nth(16).expect("nice field");
        out.push((name, nice.parse().expect("nice")));
    }
    out
}

/// The aggregator's priorities as operations.md describes them: the report
/// connection threads and the report writer at nice +10; the report
/// applier (it holds the fleet's write lock) and the threads that answer
/// gate questions at the process's own.
fn assert_priorities(pid: u32) {
    let threads = thread_nices(pid);
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    let own = nice_of("preflight")[0];
    let lowered = (own + 10).min(19);
    for (name, want) in [
        ("report-apply", own),
        ("report-writer", lowered),
        // Thread names are cut to 15 bytes.
        ("preflight-repor", lowered),
        ("tokio-rt-worker", own),
    ] {
        let got = nice_of(name);
        assert!(
            !got.is_empty() && got.iter().all(|n| *n == want),
            "{name}: nice {got:?}, expected {want} (all threads: {threads:?})"
        );
    }
}

#[test]
fn fleet_gate_end_to_end() {
    let f = Fleet::new(3);
    let mut agg = f.aggregator();
    let (code, v) = f.gate();
    assert_eq!(code, 1, "no node has reported yet: {v}");
    assert!(
        blockers(&v).iter().all(|b| b.contains("NODE_SILENT")),
        "{v:#}"
    );
    let mut agents: Vec<Proc> = (1..=3).map(|i| f.agent(i)).collect();

    // All healthy: go.
    let v = f.wait_gate(
        "go with 3 healthy nodes",
        Duration::from_secs(30),
        |c, _| c == 0,
    );
    assert_eq!(v["ready"], serde_json::json!(["n1", "n2", "n3"]));
    assert_priorities(agg.0.id());

    // One link down in n2: no-go naming it; the others are ready.
    f.nodes[1].ip("link set data1 down");
    let v = f.wait_gate("no-go naming n2", Duration::from_secs(20), |c, v| {
        c == 1 && blockers(v).contains(&"n2 LINK_NO_CARRIER data0".to_string())
    });
    assert_eq!(v["ready"], serde_json::json!(["n1", "n3"]));
    assert_eq!(v["blocked"], serde_json::json!(["n2"]));

    // A waiver for exactly that blocker turns the answer into go, and expires.
    let (code, _) = f.preflight(&[
        "waive",
        "add",
        "--server",
        AGG,
        "--token",
        ADMIN,
        "--node",
        "n2",
        "--code",
        "LINK_NO_CARRIER",
        "--subject",
        "data0",
        "--reason",
        "test waiver",
        "--for",
        "4s",
        "--author",
        "fleet-test",
    ]);
    assert_eq!(code, 0);
    let v = f.wait_gate("go through the waiver", Duration::from_secs(10), |c, _| {
        c == 0
    });
    assert_eq!(v["waived"][0]["node"], "n2");
    f.wait_gate(
        "no-go after the waiver expires",
        Duration::from_secs(15),
        |c, v| c == 1 && blockers(v).contains(&"n2 LINK_NO_CARRIER data0".to_string()),
    );
    f.nodes[1].ip("link set data1 up");
    f.wait_gate(
        "go after the link is back",
        Duration::from_secs(20),
        |c, _| c == 0,
    );

    // Kill one agent: NODE_STALE within the TTL (3 s).
    drop(agents.remove(2));
    let v = f.wait_gate("NODE_STALE for n3", Duration::from_secs(15), |c, v| {
        c == 1 && blockers(v).contains(&"n3 NODE_STALE n3".to_string())
    });
    assert_eq!(v["ready"], serde_json::json!(["n1", "n2"]));
    agents.push(f.agent(3));
    f.wait_gate(
        "go after n3's agent is back",
        Duration::from_secs(20),
        |c, _| c == 0,
    );

    // A long waiver, then kill -9 the aggregator with the agents paused.
    let (code, _) = f.preflight(&[
        "waive",
        "add",
        "--server",
        AGG,
        "--token",
        ADMIN,
        "--node",
        "n1",
        "--code",
        "BOND_PORT_DOWN",
        "--reason",
        "persist me",
        "--for",
        "1h",
        "--author",
        "fleet-test",
    ]);
    assert_eq!(code, 0);
    for a in &agents {
        signal(a, "STOP");
    }
    signal(&agg, "KILL");
    let _ = agg.0.wait();
    agg = f.aggregator();
    let (code, v) = f.gate();
    assert_eq!(
        code, 1,
        "after a restart the gate is no-go until the nodes report: {v:#}"
    );
    assert_eq!(blockers(&v).len(), 3, "{v:#}");
    assert!(
        blockers(&v).iter().all(|b| b.contains("NODE_SILENT")),
        "{v:#}"
    );
    let (_, out) = f.preflight(&["waive", "list", "--server", AGG, "--json"]);
    let ws: Value = serde_json::from_str(&out.expect("list ran")).expect("json");
    assert!(
        ws.as_array()
            .expect("array")
            .iter()
            .any(|w| w["reason"] == "persist me"),
        "waiver survived kill -9: {ws:#}"
    );
    for a in &agents {
        signal(a, "CONT");
    }
    f.wait_gate(
        "go once every node reported again",
        Duration::from_secs(30),
        |c, _| c == 0,
    );
    drop(agg);
}
