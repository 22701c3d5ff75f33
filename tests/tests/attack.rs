//! The attack suite for transport and identity, against a real aggregator
//! process serving HTTPS with client certificates and node tokens. The
//! certificates are made here by the `openssl` command (a CA, another CA, an
//! expired node certificate); reports go through `preflight_client`, the
//! client the agent pushes with, and the gate is asked by `preflight gate`.
//! Each forgery must fail: 403 and audited, or refused at the handshake, and
//! the gate's answer must not move.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_client::{AggregatorClient, BaseUrl, ClientError, TlsOptions};
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Code, Finding, NodeState, Severity, Snapshot};
use preflight_tests::certs::{ca, leaf};
use preflight_tests::{preflight_bin, Proc};

const ADMIN: &str = "admin-secret-attack";
const READER: &str = "reader-secret-attack";
const N1_TOKEN: &str = "n1-token-attack";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn digest(token: &str) -> String {
    preflight_aggregator::auth::hex(&preflight_aggregator::auth::token_digest(token))
}

fn report(node: &str, seq: u64, critical: bool) -> Report {
    let findings = if critical {
        vec![Finding {
            code: Code::BondPortDown,
            severity: Severity::Critical,
            subject: "bond0/eth1".into(),
            message: "bond0 port eth1 is down".into(),
            since: std::time::SystemTime::now(),
        }]
    } else {
        vec![]
    };
    Report {
        node: node.into(),
        boot_id: format!("boot-{node}"),
        seq,
        body: ReportBody::Full {
            labels: BTreeMap::from([("role".into(), "compute".into())]),
            state: Box::new(NodeState::new(node.into(), &Snapshot::default(), findings)),
        },
    }
}

struct Setup {
    dir: tempfile::TempDir,
    url: String,
}

impl Setup {
    fn p(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn client(&self, url: &str, ca: &str, cert: Option<&str>) -> AggregatorClient {
        AggregatorClient::new(
            vec![BaseUrl::parse(url).expect("url")],
            Duration::from_secs(3),
        )
        .with_tls(&TlsOptions {
            ca: Some(self.p(&format!("{ca}.pem"))),
            cert: cert.map(|c| self.p(&format!("{c}.pem"))),
            key: cert.map(|c| self.p(&format!("{c}.key"))),
        })
        .expect("client TLS files")
    }

    fn gate(&self, cert: &str) -> i32 {
        let out = Command::new(preflight_bin())
            .args([
                "gate",
                "--server",
                &self.url,
                "--scope",
                "role=compute",
                "--timeout",
                "0s",
            ])
            .arg("--ca")
            .arg(self.p("ca.pem"))
            .arg("--cert")
            .arg(self.p(&format!("{cert}.pem")))
            .arg("--key")
            .arg(self.p(&format!("{cert}.key")))
            .env("PREFLIGHT_LOG", "error")
            .stdout(Stdio::null())
            .output()
            .expect("run preflight gate");
        out.status.code().unwrap_or(-1)
    }
}

fn setup() -> (Setup, Proc) {
    let dir = tempfile::Builder::new()
        .prefix("preflight-attack-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    ca(d, "ca");
    ca(d, "other");
    leaf(d, "ca", "server", "IP:127.0.0.1,DNS:localhost", None);
    leaf(d, "ca", "n1", "DNS:n1", None);
    leaf(d, "ca", "n2", "DNS:n2", None);
    leaf(
        d,
        "ca",
        "n1old",
        "DNS:n1",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    leaf(d, "other", "n1rogue", "DNS:n1", None);
    std::fs::write(d.join("node-tokens"), format!("n1 {}\n", digest(N1_TOKEN))).expect("tokens");
    let port = free_port();
    std::fs::write(
        d.join("agg.toml"),
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nadmin_token = \"{ADMIN}\"\n\
             node_tokens_file = \"{tokens}\"\nreads = \"authenticated\"\nsettle = \"0s\"\nclosed_inventory = true\n\
             [aggregator.tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.pem\"\n\
             [[aggregator.identity]]\nname = \"dashboard\"\ntoken_sha256 = \"{reader}\"\nroles = [\"reader\"]\n\
             [[aggregator.node]]\nname = \"n1\"\nlabels = {{ role = \"compute\" }}\n\
             [[aggregator.node]]\nname = \"n2\"\nlabels = {{ role = \"compute\" }}\n",
            db = d.join("preflight.db").display(),
            tokens = d.join("node-tokens").display(),
            d = d.display(),
            reader = digest(READER),
        ),
    )
    .expect("config");
    let proc = Proc(
        Command::new(preflight_bin())
            .args(["aggregator", "--config"])
            .arg(d.join("agg.toml"))
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    let s = Setup {
        dir,
        url: format!("https://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = s.client(&s.url, "ca", None);
    let rt = rt();
    while rt
        .block_on(probe.nodes())
        .err()
        .is_some_and(|e| e.status().is_none())
    {
        assert!(Instant::now() < deadline, "aggregator did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (s, proc)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn refused_status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Option<u16> {
    r.expect_err("must be refused").status()
}

#[test]
fn transport_and_identity_forgeries_fail() {
    let (s, _agg) = setup();
    let rt = rt();
    let n1 = s.client(&s.url, "ca", Some("n1"));
    let n2 = s.client(&s.url, "ca", Some("n2"));

    // Plain HTTP to the TLS port gets no answer.
    let plain = AggregatorClient::new(
        vec![BaseUrl::parse(&s.url.replace("https", "http")).expect("url")],
        Duration::from_secs(3),
    );
    assert_eq!(
        refused_status(rt.block_on(plain.nodes())),
        None,
        "plain HTTP answered"
    );

    // Both nodes healthy over mTLS: the gate (the CLI, with n1's cert) is go.
    rt.block_on(n1.post_report(&report("n1", 1, false)))
        .expect("n1 reports for itself");
    rt.block_on(n2.post_report(&report("n2", 1, true)))
        .expect("n2 reports for itself");
    assert_eq!(s.gate("n1"), 1, "n2 is critical: no-go");

    // n1's certificate cannot report for n2, and the attempt is audited.
    let forged = rt.block_on(n1.post_report(&report("n2", 2, false)));
    assert_eq!(refused_status(forged), Some(403));
    assert_eq!(s.gate("n1"), 1, "the forgery moved the gate");
    // n1's token neither.
    let tok = AggregatorClient::new(
        vec![BaseUrl::parse(&s.url).expect("url")],
        Duration::from_secs(3),
    )
    .with_tls(&TlsOptions {
        ca: Some(s.p("ca.pem")),
        ..TlsOptions::default()
    })
    .expect("tls")
    .with_token(Some(N1_TOKEN.into()));
    assert_eq!(
        refused_status(rt.block_on(tok.post_report(&report("n2", 3, false)))),
        Some(403)
    );
    rt.block_on(tok.post_report(&report("n1", 2, false)))
        .expect("the token reports for n1");
    assert_eq!(s.gate("n1"), 1, "the token forgery moved the gate");
    let admin = s.client(&s.url, "ca", None).with_token(Some(ADMIN.into()));
    let audit: serde_json::Value = {
        let (code, body) = rt
            .block_on(
                preflight_client::HttpClient::with_tls(
                    Duration::from_secs(3),
                    &TlsOptions {
                        ca: Some(s.p("ca.pem")),
                        ..TlsOptions::default()
                    },
                )
                .expect("tls")
                .request(
                    hyper_method_get(),
                    format!("{}/v1/audit", s.url).parse().expect("uri"),
                    Some(ADMIN),
                    None,
                ),
            )
            .expect("audit");
        assert_eq!(code.as_u16(), 200);
        serde_json::from_slice(&body).expect("json")
    };
    let forbidden: Vec<(String, String)> = audit
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["action"] == "report.forbidden")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["detail"]["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        forbidden.contains(&("cert:n1".into(), "n2".into())),
        "{audit}"
    );
    assert!(
        forbidden.contains(&("node-token:n1".into(), "n2".into())),
        "{audit}"
    );

    // Expired and wrong-CA certificates are refused at the handshake.
    let old = s.client(&s.url, "ca", Some("n1old"));
    assert_eq!(
        refused_status(rt.block_on(old.post_report(&report("n1", 3, false)))),
        None
    );
    let rogue = s.client(&s.url, "ca", Some("n1rogue"));
    assert_eq!(
        refused_status(rt.block_on(rogue.post_report(&report("n1", 3, false)))),
        None
    );

    // A reader cannot waive; the operator can.
    let reader = s.client(&s.url, "ca", None).with_token(Some(READER.into()));
    let w = preflight_model::api::WaiverRequest {
        node: "n2".into(),
        code: None,
        subject: None,
        reason: "attack".into(),
        author: "test".into(),
        expires_at: None,
        duration: Some("1h".into()),
    };
    assert_eq!(
        refused_status(rt.block_on(reader.add_waiver(&w))),
        Some(403)
    );
    assert_eq!(
        refused_status(rt.block_on(n1.add_waiver(&w))),
        Some(403),
        "a node cannot waive"
    );
    assert_eq!(s.gate("n1"), 1);
    rt.block_on(n2.post_report(&report("n2", 2, false)))
        .expect("n2 recovers");
    assert_eq!(s.gate("n1"), 0, "both healthy: go");
    drop(admin);

    // `preflight waive list` off loopback: reads need a credential here
    // (`reads = "authenticated"`); the reader's token lists, none is 401 (64).
    let list = |token: Option<&str>| {
        let mut c = Command::new(preflight_bin());
        c.args(["waive", "list", "--server", &s.url, "--json"])
            .arg("--ca")
            .arg(s.p("ca.pem"))
            .env("PREFLIGHT_LOG", "error")
            .env_remove("PREFLIGHT_TOKEN");
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        let out = c.output().expect("run preflight waive list");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = list(Some(READER));
    assert_eq!(code, 0, "a reader lists waivers: {out}");
    assert_eq!(out.trim(), "[]", "no waiver was created");
    assert_eq!(
        list(None).0,
        64,
        "no credential: refused (401), a usage error"
    );

    // Rotation: the server certificate is replaced by one from another CA;
    // a client trusting only that CA is served without a restart.
    let other = s
        .client(&s.url, "other", None)
        .with_token(Some(READER.into()));
    assert_eq!(
        refused_status(rt.block_on(other.nodes())),
        None,
        "other CA before rotation"
    );
    leaf(s.dir.path(), "other", "server2", "IP:127.0.0.1", None);
    for ext in ["key", "pem"] {
        std::fs::rename(
            s.p(&format!("server2.{ext}")),
            s.p(&format!("server.{ext}")),
        )
        .expect("rotate");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(other.nodes()).is_err() {
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served within 10 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hyper_method_get() -> preflight_client::Method {
    preflight_client::Method::GET
}
