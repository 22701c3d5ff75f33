//! `preflight inspect --expect networkd:DIR` end to end through the binary
//! on real netlink in a namespace the test made. The host kernel has no
//! bonding, so the bond declared in tests/fixtures/networkd/netns does not
//! exist: a declared bond preflight cannot see is no-go, naming the
//! `.netdev` and line; an address declared on a veth but never brought up
//! is no-go naming the `.network` and line. Needs root (CI runs as root);
//! never skips.

use preflight_tests::stack::StackNs;
use preflight_tests::workspace;

#[test]
fn networkd_files_declare_what_is_missing_with_file_and_line() {
    let ns = StackNs::new("nwd");
    let dir = workspace().join("tests/fixtures/networkd/netns");
    let v = ns.inspect_json(&format!("networkd:{}", dir.display()));
    assert_eq!(v.code, Some(1), "stderr: {}", v.stderr);
    let netdev = format!("{}:2", dir.join("10-bond7.netdev").display());
    assert!(
        v.has("EXPECTED_INTERFACE_MISSING", "critical", &netdev),
        "{v}"
    );
    let network = format!("{}:6", dir.join("20-v0.network").display());
    assert!(
        v.has("EXPECTED_ADDRESS_MISSING", "critical", &network),
        "{v}"
    );
    // The address that is there is no finding.
    assert!(!v.has_subject("v0/192.0.2.10"), "{v}");
    // inspect says which stack and files it read.
    let text = ns.inspect_text(&format!("networkd:{}", dir.display()));
    assert!(
        text.contains("systemd-networkd") && text.contains("10-bond7.netdev"),
        "{text}"
    );
}
