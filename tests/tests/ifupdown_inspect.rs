//! `preflight inspect --expect ifupdown:FILE` end to end through the binary
//! on real netlink in a namespace the test made. The host kernel has no
//! bonding, so the bond declared in tests/fixtures/ifupdown/netns/interfaces
//! does not exist: a declared bond preflight cannot see is no-go, naming
//! the `iface` line; an address declared (in a file included by a relative
//! `source` glob) on a veth but never brought up is no-go naming its
//! `address` line; the address that is there is no finding. Needs root (CI
//! runs as root); never skips.

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, workspace};
use serde_json::Value;

#[test]
fn ifupdown_files_declare_what_is_missing_with_file_and_line() {
    let ns = Netns::new("ifud");
    for l in [
        "link add v0 type veth peer name v1",
        "link set v0 up",
        "link set v1 up",
        "addr add 192.0.2.10/24 dev v0",
    ] {
        ns.ip(l);
    }
    let dir = workspace().join("tests/fixtures/ifupdown/netns");
    let file = dir.join("interfaces");
    let out = ns
        .command(preflight_bin())
        .arg("inspect")
        .arg("--json")
        .arg("--expect")
        .arg(format!("ifupdown:{}", file.display()))
        .output()
        .expect("preflight runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = v["findings"].as_array().expect("findings");
    let has = |code: &str, text: &str| {
        findings.iter().any(|f| {
            f["code"] == code
                && f["severity"] == "critical"
                && f["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    let bond = format!("{}:9", file.display());
    assert!(has("EXPECTED_INTERFACE_MISSING", &bond), "{v}");
    let addr = format!("{}:4", dir.join("interfaces.d/v0").display());
    assert!(has("EXPECTED_ADDRESS_MISSING", &addr), "{v}");
    assert!(
        !findings.iter().any(|f| f["subject"] == "v0/192.0.2.10"),
        "{v}"
    );
    // inspect says which stack and files it read.
    let out = ns
        .command(preflight_bin())
        .arg("inspect")
        .arg("--expect")
        .arg(format!("ifupdown:{}", file.display()))
        .output()
        .expect("preflight runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ifupdown") && text.contains("interfaces.d/v0"),
        "{text}"
    );
}
