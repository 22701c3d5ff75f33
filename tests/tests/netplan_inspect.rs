//! `preflight inspect --expect netplan:DIR` end to end through the binary
//! on real netlink in a namespace the test made. The host kernel has no
//! bonding, so the bond declared in tests/fixtures/netplan/netns does not
//! exist: a declared bond preflight cannot see is no-go, naming the YAML
//! file and line; an address declared on a veth but never brought up is
//! no-go naming the file and line; the address that is there is no
//! finding. Needs root (CI runs as root); never skips.

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, workspace};
use serde_json::Value;

#[test]
fn netplan_files_declare_what_is_missing_with_file_and_line() {
    let ns = Netns::new("npl");
    for l in [
        "link add v0 type veth peer name v1",
        "link set v0 up",
        "link set v1 up",
        "addr add 192.0.2.10/24 dev v0",
    ] {
        ns.ip(l);
    }
    let dir = workspace().join("tests/fixtures/netplan/netns");
    let out = ns
        .command(preflight_bin())
        .arg("inspect")
        .arg("--json")
        .arg("--expect")
        .arg(format!("netplan:{}", dir.display()))
        .output()
        .expect("preflight runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = v["findings"].as_array().expect("findings");
    let has = |code: &str, sev: &str, text: &str| {
        findings.iter().any(|f| {
            f["code"] == code
                && f["severity"] == sev
                && f["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    let bond = format!("{}:8", dir.join("01-bond.yaml").display());
    assert!(has("EXPECTED_INTERFACE_MISSING", "critical", &bond), "{v}");
    let v0 = format!("{}:7", dir.join("02-v0.yaml").display());
    assert!(has("EXPECTED_ADDRESS_MISSING", "critical", &v0), "{v}");
    assert!(
        has("EXPECTED_ADDRESS_MISSING", "critical", "198.51.100.7"),
        "{v}"
    );
    assert!(
        !findings.iter().any(|f| f["subject"] == "v0/192.0.2.10"),
        "{v}"
    );
    // inspect says which stack and files it read.
    let out = ns
        .command(preflight_bin())
        .arg("inspect")
        .arg("--expect")
        .arg(format!("netplan:{}", dir.display()))
        .output()
        .expect("preflight runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("netplan") && text.contains("01-bond.yaml"),
        "{text}"
    );
}
