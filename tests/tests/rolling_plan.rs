//! A rolling update driven by the `preflight plan` and `preflight
//! maintenance` CLI (issue 36), with real agents, each in its own network
//! namespace, pushing to a real aggregator in a hub namespace over veth +
//! bridge. Traffic stays inside namespaces this test made.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, Proc};
use serde_json::Value;

const AGG: &str = "http://192.0.2.1:9100";
const OPERATOR: &str = "admin-secret";
/// Nodes of the scope.
const N: usize = 4;
/// After a lease ends, a node has this long to be back and go.
const GRACE_SECS: u64 = 4;

struct Fleet {
    hub: Netns,
    nodes: Vec<Netns>,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let hub = Netns::new("hub");
        hub.ip("link add br0 type bridge");
        hub.ip("addr add 192.0.2.1/24 dev br0");
        hub.ip("link set br0 up");
        let dir = tempfile::Builder::new()
            .prefix("preflight-rolling-")
            .tempdir()
            .expect("temp dir");
        let mut nodes = Vec::new();
        let mut inventory = String::new();
        for i in 1..=N {
            let ns = Netns::new(&format!("r{i}"));
            ns.ip(&format!("link add up{i} type veth peer name hp{i}"));
            ns.ip(&format!("link set hp{i} netns {}", hub.name));
            hub.ip(&format!("link set hp{i} master br0"));
            hub.ip(&format!("link set hp{i} up"));
            ns.ip(&format!("addr add 192.0.2.{}/24 dev up{i}", 10 + i));
            ns.ip(&format!("link set up{i} up"));
            // A data link: n2's has no carrier, a warning (go) that its
            // overrun must name as its last finding.
            ns.ip("link add data0 type veth peer name data1");
            ns.ip("link set data0 up");
            if i != 2 {
                ns.ip("link set data1 up");
            }
            std::fs::write(
                dir.path().join(format!("n{i}.toml")),
                format!(
                    "[agent]\nnode = \"n{i}\"\nlabels = {{ role = \"compute\" }}\naggregators = [\"{AGG}\"]\ntoken = \"report-secret\"\nheartbeat = \"1s\"\n\
                     [policy.severity]\nLINK_NO_CARRIER = \"warning\"\n"
                ),
            )
            .expect("agent config");
            inventory.push_str(&format!(
                "[[aggregator.node]]\nname = \"n{i}\"\nlabels = {{ role = \"compute\" }}\n"
            ));
            nodes.push(ns);
        }
        std::fs::write(
            dir.path().join("agg.toml"),
            format!(
                "[aggregator]\nlisten = \"192.0.2.1:9100\"\ninsecure_plaintext = true\nfleet_report_token = true\nreads = \"open\"\ndatabase = \"{}\"\nreport_token = \"report-secret\"\nadmin_token = \"{OPERATOR}\"\n\
                 ttl = \"3s\"\nsettle = \"1s\"\nmaintenance_grace = \"{GRACE_SECS}s\"\nclosed_inventory = true\nscopes = [\"role=compute\"]\n{inventory}",
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.run(&["status", "--server", AGG]).status.code() != Some(2) {
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

    /// Runs the CLI in the hub namespace.
    fn run(&self, args: &[&str]) -> Output {
        self.hub
            .command(preflight_bin())
            .args(args)
            .env("PREFLIGHT_LOG", "error")
            .output()
            .expect("run preflight")
    }

    fn gate(&self) -> (i32, Value) {
        let out = self.run(&["gate", "--server", AGG, "--scope", "role=compute", "--json"]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rolling_update_with_plan_and_leases() {
    let f = Fleet::new();
    let _agg = f.aggregator();
    let mut agents: Vec<Option<Proc>> = (1..=N).map(|i| Some(f.agent(i))).collect();
    f.wait_gate(
        "go with 4 healthy nodes",
        Duration::from_secs(30),
        |c, _| c == 0,
    );

    // The plan without --take leases nothing and names the batch.
    let dry = f.run(&[
        "plan",
        "--server",
        AGG,
        "--scope",
        "role=compute",
        "--max-unavailable",
        "2",
    ]);
    assert_eq!(dry.status.code(), Some(0), "{}", show(&dry));
    assert_eq!(text(&dry.stdout), "n1\nn2\n", "{}", show(&dry));

    // Take the first batch: two nodes, one name per line on stdout, the
    // others held (with why) on stderr.
    let take = f.run(&[
        "plan",
        "--server",
        AGG,
        "--token",
        OPERATOR,
        "--scope",
        "role=compute",
        "--max-unavailable",
        "2",
        "--take",
        "--for",
        "5m",
        "--reason",
        "kernel update",
        "--pipeline",
        "t36",
    ]);
    assert_eq!(take.status.code(), Some(0), "{}", show(&take));
    assert_eq!(text(&take.stdout), "n1\nn2\n", "{}", show(&take));
    let err = text(&take.stderr);
    assert!(
        err.contains("n3") && err.contains("n4") && err.contains("budget_spent"),
        "{}",
        show(&take)
    );

    let list = f.run(&["maintenance", "list", "--server", AGG, "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", show(&list));
    let leases: Value = serde_json::from_slice(&list.stdout).expect("lease list is JSON");
    let leases = leases.as_array().expect("a list");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(names(&leases[0], "nodes"), ["n1", "n2"]);
    assert_eq!(leases[0]["pipeline"], "t36");
    let id = leases[0]["id"].as_i64().expect("lease id").to_string();

    // The batch goes silent (the update reboots it): past the TTL the
    // scope's gate stays go on the two others.
    agents[0] = None;
    agents[1] = None;
    let quiet_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < quiet_until {
        let (code, v) = f.gate();
        assert_eq!(code, 0, "the leased nodes went silent: {v:#}");
        assert_eq!(names(&v, "ready"), ["n3", "n4"], "{v:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Nothing more may start: the budget is spent by the leased nodes.
    let full = f.run(&[
        "plan",
        "--server",
        AGG,
        "--scope",
        "role=compute",
        "--max-unavailable",
        "2",
    ]);
    assert_eq!(full.status.code(), Some(1), "{}", show(&full));
    assert_eq!(text(&full.stdout), "", "{}", show(&full));
    assert!(
        text(&full.stderr).contains("maintenance"),
        "{}",
        show(&full)
    );

    // n1 comes back healthy; n2 stays away. End the lease.
    agents[0] = Some(f.agent(1));
    std::thread::sleep(Duration::from_secs(3));
    let end = f.run(&[
        "maintenance",
        "end",
        &id,
        "--server",
        AGG,
        "--token",
        OPERATOR,
    ]);
    assert_eq!(end.status.code(), Some(0), "{}", show(&end));
    let ended = Instant::now();
    let list = f.run(&["maintenance", "list", "--server", AGG, "--json"]);
    assert_eq!(text(&list.stdout).trim(), "[]", "{}", show(&list));

    // n1 rejoins go within the grace; n2 is still out, not blocking.
    let v = f.wait_gate(
        "go with n1 back",
        Duration::from_secs(GRACE_SECS),
        |c, v| c == 0 && names(v, "ready").contains(&"n1".to_owned()),
    );
    assert_eq!(names(&v, "ready"), ["n1", "n3", "n4"], "{v:#}");

    // n2 stays away past the grace: MAINTENANCE_OVERRUN names it.
    let v = f.wait_gate(
        "MAINTENANCE_OVERRUN naming n2",
        Duration::from_secs(GRACE_SECS + 10),
        |c, v| {
            c == 1
                && v["blockers"].as_array().is_some_and(|b| {
                    b.iter()
                        .any(|b| b["code"] == "MAINTENANCE_OVERRUN" && b["node"] == "n2")
                })
        },
    );
    assert!(
        ended.elapsed() >= Duration::from_secs(GRACE_SECS),
        "overrun before the grace ran out: {v:#}"
    );
    assert_eq!(names(&v, "blocked"), ["n2"], "{v:#}");
    let overrun = v["blockers"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["code"] == "MAINTENANCE_OVERRUN"))
        .expect("the overrun");
    assert!(
        overrun["message"]
            .as_str()
            .is_some_and(|m| m.contains("last findings: LINK_NO_CARRIER data0")),
        "its last findings: {overrun:#}"
    );
    // The human gate names it too, and the plan holds it.
    let human = f.run(&["gate", "--server", AGG, "--scope", "role=compute"]);
    assert_eq!(human.status.code(), Some(1), "{}", show(&human));
    assert!(
        text(&human.stdout).contains("n2") && text(&human.stdout).contains("MAINTENANCE_OVERRUN"),
        "{}",
        show(&human)
    );
    drop(agents);
}
