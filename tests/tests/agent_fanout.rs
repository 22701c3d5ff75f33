//! One aggregator name, two replicas: a real `preflight agent` configured
//! with `http://replicas.test:P` pushes every report to both `preflight
//! aggregator` processes behind that name (127.0.0.1:P and 127.0.0.2:P),
//! like agents behind a Kubernetes headless Service. The name exists only
//! for the agent: it runs in a private mount namespace whose `/etc/hosts`
//! is a file of this test bind-mounted over the host's, which stays
//! untouched. Needs root (mount namespace); it does not skip.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::{preflight_bin, require_root, Proc};
use serde_json::Value;

fn free_port() -> u16 {
    // A port free on 127.0.0.1 is in practice free on 127.0.0.2 too; the
    // aggregator would fail to start (and the test say so) otherwise.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn nodes(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-s", "-f", "-m", "5", &format!("{url}/v1/nodes")])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).ok()
}

fn aggregator(dir: &std::path::Path, ip: &str, port: u16) -> Proc {
    let cfg = dir.join(format!("agg-{ip}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nlisten = \"{ip}:{port}\"\ndatabase = \"{}\"\nauth = \"none\"\nsettle = \"0s\"\nttl = \"60s\"\n",
            dir.join(format!("{ip}.db")).display()
        ),
    )
    .expect("aggregator config");
    let p = Proc(
        Command::new(preflight_bin())
            .args(["aggregator", "--config"])
            .arg(&cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    let t = Instant::now();
    while nodes(&format!("http://{ip}:{port}")).is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "aggregator on {ip}:{port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// Whether `node` has reported to the aggregator at `url`.
fn reported(url: &str, node: &str) -> bool {
    nodes(url).is_some_and(|v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["node"] == node && n["status"].as_str().is_some_and(|s| s != "silent"))
        })
    })
}

#[test]
fn an_agent_pushes_to_every_address_of_an_aggregator_name() {
    require_root("the agent fan-out test (mount namespace for /etc/hosts)");
    let dir = tempfile::Builder::new()
        .prefix("preflight-fanout-")
        .tempdir()
        .expect("temp dir");
    let port = free_port();
    let _a = aggregator(dir.path(), "127.0.0.1", port);
    let _b = aggregator(dir.path(), "127.0.0.2", port);

    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 replicas.test\n127.0.0.2 replicas.test\n",
    )
    .expect("hosts");
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "[agent]\nnode = \"fan1\"\naggregators = [\"http://replicas.test:{port}\"]\nheartbeat = \"1s\"\nlisten = \"127.0.0.1:{}\"\novsdb = \"off\"\n",
            free_port()
        ),
    )
    .expect("agent config");
    let _agent = Proc(
        Command::new("unshare")
            .args([
                "--mount",
                "sh",
                "-c",
                "mount --bind \"$1\" /etc/hosts && exec \"$2\" agent --config \"$3\"",
                "sh",
            ])
            .arg(&hosts)
            .arg(preflight_bin())
            .arg(&agent_cfg)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent in a mount namespace"),
    );

    let t = Instant::now();
    let (a, b) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.2:{port}"),
    );
    loop {
        let (on_a, on_b) = (reported(&a, "fan1"), reported(&b, "fan1"));
        if on_a && on_b {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent's reports reached {a}: {on_a}, {b}: {on_b} (want both)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The host's own /etc/hosts never learnt the name.
    let host_view = Command::new("getent")
        .args(["hosts", "replicas.test"])
        .output()
        .expect("getent");
    assert!(
        !host_view.status.success(),
        "replicas.test leaked into the host's resolver"
    );
}
