//! `preflight inspect --expect netplan:DIR` end to end through the binary
//! on real netlink in a namespace the test made. The host kernel has no
//! bonding, so the bond declared in tests/fixtures/netplan/netns does not
//! exist: a declared bond preflight cannot see is no-go, naming the YAML
//! file and line; an address declared on a veth but never brought up is
//! no-go naming the file and line; the address that is there is no
//! finding. Needs root (CI runs as root); never skips.

use preflight_tests::stack::StackNs;
use preflight_tests::workspace;

#[test]
fn netplan_files_declare_what_is_missing_with_file_and_line() {
    let ns = StackNs::new("npl");
    let dir = workspace().join("tests/fixtures/netplan/netns");
    let v = ns.inspect_json(&format!("netplan:{}", dir.display()));
    assert_eq!(v.code, Some(1), "stderr: {}", v.stderr);
    let bond = format!("{}:8", dir.join("01-bond.yaml").display());
    assert!(
        v.has("EXPECTED_INTERFACE_MISSING", "critical", &bond),
        "{v}"
    );
    let v0 = format!("{}:7", dir.join("02-v0.yaml").display());
    assert!(v.has("EXPECTED_ADDRESS_MISSING", "critical", &v0), "{v}");
    assert!(
        v.has("EXPECTED_ADDRESS_MISSING", "critical", "198.51.100.7"),
        "{v}"
    );
    assert!(!v.has_subject("v0/192.0.2.10"), "{v}");
    // inspect says which stack and files it read.
    let text = ns.inspect_text(&format!("netplan:{}", dir.display()));
    assert!(
        text.contains("netplan") && text.contains("01-bond.yaml"),
        "{text}"
    );
}
