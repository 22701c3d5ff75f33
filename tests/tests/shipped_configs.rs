//! The shipped example configurations, run as they are by the real
//! `preflight` binary (the parsing and validation `preflight aggregator
//! --config` does, then the server): the Kubernetes ConfigMap's
//! `aggregator.toml` and `agent.toml` (deploy/kubernetes/config.yaml) and the
//! Debian package's `preflight.toml`. Only file paths, ports and the
//! aggregator's host name are moved into a temp dir; the rest is the shipped
//! text. Issue 16's "not done unless": no plain HTTP, no fleet token, no open
//! reads in what we ship; plain HTTP to the port fails; a node's certificate
//! reports for its node and is refused (403) for another; reads need a
//! credential. The Ansible templates are rendered by Ansible and run the same
//! way in tests/ansible.sh.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::certs::{ca, leaf};
use preflight_tests::{preflight_bin, workspace, Proc};
use serde_json::{json, Value};

const ADMIN: &str = "admin-shipped-configs";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The block scalar `key: |` of a ConfigMap's `data`, dedented.
fn configmap_file(yaml: &str, key: &str) -> String {
    let head = format!("  {key}: |");
    let mut lines = yaml.lines().skip_while(|l| l.trim_end() != head);
    assert!(lines.next().is_some(), "no `{key}: |` in the ConfigMap");
    let mut out = String::new();
    for l in lines {
        if !l.is_empty() && !l.starts_with("    ") {
            break;
        }
        out.push_str(l.strip_prefix("    ").unwrap_or(""));
        out.push('\n');
    }
    out
}

/// `from` replaced by `to`; the shipped text must contain `from` (else the
/// test would silently stop moving it).
fn moved(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in:\n{text}");
    text.replace(from, to)
}

/// Nothing in this section opens what issue 16 closed.
fn assert_no_opt_ins(section: &toml::Table, what: &str) {
    let on = |k: &str| section.get(k).and_then(toml::Value::as_bool) == Some(true);
    assert!(!on("insecure_plaintext"), "{what}: insecure_plaintext");
    assert!(!on("fleet_report_token"), "{what}: fleet_report_token");
    assert!(
        section.get("reads").and_then(toml::Value::as_str) != Some("open"),
        "{what}: reads = \"open\""
    );
    assert!(
        !section.contains_key("report_token") && !section.contains_key("report_token_file"),
        "{what}: a fleet report token"
    );
}

/// `curl` over HTTPS against `ca.pem` in `certs`, presenting `client` (a
/// leaf there) and/or a bearer token: (status, body).
fn curl(
    certs: &Path,
    method: &str,
    url: &str,
    client: Option<&str>,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut args = vec!["--cacert".into(), certs.join("ca.pem").into()];
    if let Some(n) = client {
        args.extend([
            "--cert".into(),
            certs.join(format!("{n}.pem")).into(),
            "--key".into(),
            certs.join(format!("{n}.key")).into(),
        ]);
    }
    preflight_tests::curl_with(&args, method, url, token, body)
}

fn report(node: &str) -> Value {
    json!({"node": node, "boot_id": "forged", "seq": 1, "kind": "full", "labels": {"role": "worker"},
           "state": {"node": node, "verdict": "go", "findings": [], "interfaces": [], "bonds": [], "addresses": [], "routes": []}})
}

fn spawn(args: &[&str], cfg: &Path, env: &[(&str, &str)]) -> Proc {
    let mut c = Command::new(preflight_bin());
    c.args(args)
        .arg("--config")
        .arg(cfg)
        .env("PREFLIGHT_LOG", "warn")
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    Proc(c.spawn().expect("spawn preflight"))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

#[test]
fn kubernetes_configmap_runs_with_tls_and_node_identity() {
    let yaml = std::fs::read_to_string(workspace().join("deploy/kubernetes/config.yaml"))
        .expect("config.yaml");
    let agg_text = configmap_file(&yaml, "aggregator.toml");
    let agent_text = configmap_file(&yaml, "agent.toml");
    let agg: toml::Table = toml::from_str(&agg_text).expect("aggregator.toml is TOML");
    let agent: toml::Table = toml::from_str(&agent_text).expect("agent.toml is TOML");
    let a = agg["aggregator"].as_table().expect("[aggregator]");
    assert_no_opt_ins(a, "aggregator.toml");
    let tls = a["tls"].as_table().expect("[aggregator.tls]");
    assert!(tls.contains_key("client_ca"), "node certificates verified");
    let g = agent["agent"].as_table().expect("[agent]");
    assert!(
        g["aggregators"]
            .as_array()
            .expect("aggregators")
            .iter()
            .all(|u| u.as_str().is_some_and(|u| u.starts_with("https://"))),
        "agents push over HTTPS"
    );
    assert!(!g.contains_key("token") && !g.contains_key("token_file"));
    let t = g["tls"].as_table().expect("[agent.tls]");
    assert!(t.contains_key("ca") && t.contains_key("cert") && t.contains_key("key"));

    // Certificates as cert-manager would issue them (tls/certificates.yaml),
    // with the server named localhost here.
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    ca(&certs, "ca");
    leaf(&certs, "ca", "server", "DNS:localhost", None);
    for n in ["node-a", "node-b", "preflight-pipeline"] {
        leaf(&certs, "ca", n, &format!("DNS:{n}"), None);
    }
    let (agg_etc, node_etc) = (d.join("agg-etc"), d.join("node-etc"));
    for (etc, leaf_name) in [(&agg_etc, "server"), (&node_etc, "node-a")] {
        copy(&certs.join("ca.pem"), &etc.join("tls/ca.crt"));
        copy(
            &certs.join(format!("{leaf_name}.pem")),
            &etc.join("tls/tls.crt"),
        );
        copy(
            &certs.join(format!("{leaf_name}.key")),
            &etc.join("tls/tls.key"),
        );
    }
    std::fs::create_dir_all(agg_etc.join("tokens")).expect("mkdir");
    std::fs::write(agg_etc.join("tokens/admin"), format!("{ADMIN}\n")).expect("token");
    std::fs::create_dir_all(d.join("var")).expect("mkdir");

    let port = free_port();
    let agg_cfg = d.join("aggregator.toml");
    let text = moved(
        &agg_text,
        "/etc/preflight/",
        &format!("{}/", agg_etc.display()),
    );
    let text = moved(
        &text,
        "/var/lib/preflight/",
        &format!("{}/", d.join("var").display()),
    );
    // Not loopback: the shipped listen address keeps its checks.
    let text = moved(&text, "0.0.0.0:9100", &format!("0.0.0.0:{port}"));
    std::fs::write(&agg_cfg, text).expect("write");
    let _agg = spawn(&["aggregator"], &agg_cfg, &[]);
    let base = format!("https://localhost:{port}");
    wait_for(
        "the aggregator answers over HTTPS",
        Duration::from_secs(20),
        || curl(&certs, "GET", &format!("{base}/healthz"), None, None, None).0 == 200,
    );

    // Nothing in clear: plain HTTP to that port gets no HTTP answer.
    let plain = preflight_tests::curl(
        "GET",
        &format!("http://127.0.0.1:{port}/v1/gate"),
        None,
        None,
    );
    assert_eq!(plain.0, 0, "plain HTTP answered: {plain:?}");

    let agent_cfg = d.join("agent.toml");
    let text = moved(
        &agent_text,
        "/etc/preflight/",
        &format!("{}/", node_etc.display()),
    );
    let text = moved(
        &text,
        "https://preflight-aggregator.preflight.svc:9100",
        &base,
    );
    let text = moved(&text, "0.0.0.0:9101", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&agent_cfg, text).expect("write");
    let _agent = spawn(&["agent"], &agent_cfg, &[("PREFLIGHT_NODE", "node-a")]);
    let node_a = format!("{base}/v1/nodes/node-a");
    wait_for(
        "node-a's agent reports over mTLS",
        Duration::from_secs(30),
        || {
            curl(
                &certs,
                "GET",
                &node_a,
                Some("preflight-pipeline"),
                None,
                None,
            )
            .0 == 200
        },
    );

    // Reads need a credential; the pipeline's certificate reads, a node's too.
    let gate = format!("{base}/v1/gate?scope=role%3Dworker");
    assert_eq!(curl(&certs, "GET", &gate, None, None, None).0, 401);
    for who in ["preflight-pipeline", "node-b"] {
        let s = curl(&certs, "GET", &gate, Some(who), None, None).0;
        assert!(s == 200 || s == 503, "{who} reads the gate: {s}");
    }

    // One node's credential cannot change another node's answer.
    let reports = format!("{base}/v1/reports");
    // `who`'s certificate (or none) posts a report about `node`.
    let post_report = |who: Option<&str>, node: &str| {
        curl(&certs, "POST", &reports, who, None, Some(&report(node)))
    };
    let (s, body) = post_report(Some("node-b"), "node-a");
    assert_eq!(s, 403, "node-b reported for node-a: {body}");
    let (s, _) = post_report(None, "node-a");
    assert_eq!(s, 401, "a report without a credential");
    let (s, _) = post_report(Some("preflight-pipeline"), "node-a");
    assert_eq!(s, 403, "the reader certificate reported");
    let (_, after) = curl(
        &certs,
        "GET",
        &node_a,
        Some("preflight-pipeline"),
        None,
        None,
    );
    assert!(!after.to_string().contains("forged"), "{after}");
    // ... while node-b's certificate reports for node-b (the positive control).
    let (s, body) = post_report(Some("node-b"), "node-b");
    assert!((200..300).contains(&s), "node-b for itself: {s} {body}");
    // Writes are the operator's: a node certificate cannot add a waiver.
    let waiver = json!({"node": "node-a", "reason": "forged", "author": "node-b", "for": "1h"});
    let waivers = format!("{base}/v1/waivers");
    assert_eq!(
        curl(
            &certs,
            "POST",
            &waivers,
            Some("node-b"),
            None,
            Some(&waiver)
        )
        .0,
        403
    );
    assert_eq!(
        curl(&certs, "GET", &waivers, None, Some(ADMIN), None).0,
        200
    );
}

#[test]
fn debian_preflight_toml_runs_on_loopback() {
    let src = std::fs::read_to_string(workspace().join("deploy/debian/preflight.toml"))
        .expect("preflight.toml");
    let t: toml::Table = toml::from_str(&src).expect("TOML");
    let a = t["aggregator"].as_table().expect("[aggregator]");
    assert_no_opt_ins(a, "deploy/debian/preflight.toml");
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let text = moved(&src, "127.0.0.1:9100", &format!("127.0.0.1:{port}"));
    let text = moved(
        &text,
        "/var/lib/preflight/",
        &format!("{}/", dir.path().display()),
    );
    let cfg = dir.path().join("preflight.toml");
    std::fs::write(&cfg, text).expect("write");
    let _agg = spawn(&["aggregator"], &cfg, &[]);
    wait_for(
        "the packaged aggregator starts",
        Duration::from_secs(20),
        || {
            preflight_tests::curl(
                "GET",
                &format!("http://127.0.0.1:{port}/healthz"),
                None,
                None,
            )
            .0 == 200
        },
    );
}
