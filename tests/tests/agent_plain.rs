//! An agent that pushes over plain http must not need a CA bundle: the VM
//! test found one refusing to start on a host without ca-certificates
//! ("no CA certificate in the system trust store") although nothing it
//! talks to uses TLS.

use std::process::Stdio;
use std::time::Duration;

use preflight_tests::{preflight_bin, Proc};

#[test]
fn a_plain_http_agent_starts_without_any_system_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("no-certs");
    std::fs::create_dir(&empty).expect("mkdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[agent]\nnode = \"plain\"\nlisten = \"127.0.0.1:0\"\naggregators = [\"http://127.0.0.1:9\"]\nprobe_gateways = false\novsdb = \"off\"\n",
    )
    .expect("config");
    let mut p = Proc(
        std::process::Command::new(preflight_bin())
            .args(["agent", "--config"])
            .arg(&cfg)
            // rustls-native-certs reads these first: point them at nothing.
            .env("SSL_CERT_FILE", dir.path().join("missing.pem"))
            .env("SSL_CERT_DIR", &empty)
            .env("PREFLIGHT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let status = p.0.try_wait().expect("try_wait");
    assert!(
        status.is_none(),
        "the agent exited ({status:?}) although it needs no TLS"
    );
}
