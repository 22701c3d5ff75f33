//! `preflight inspect --expect ifupdown:FILE` end to end through the binary
//! on real netlink in a namespace the test made. The host kernel has no
//! bonding, so the bond declared in tests/fixtures/ifupdown/netns/interfaces
//! does not exist: a declared bond preflight cannot see is no-go, naming
//! the `iface` line; an address declared (in a file included by a relative
//! `source` glob) on a veth but never brought up is no-go naming its
//! `address` line; the address that is there is no finding. Needs root (CI
//! runs as root); never skips.

use preflight_tests::stack::StackNs;
use preflight_tests::workspace;

#[test]
fn ifupdown_files_declare_what_is_missing_with_file_and_line() {
    let ns = StackNs::new("ifud");
    let dir = workspace().join("tests/fixtures/ifupdown/netns");
    let file = dir.join("interfaces");
    let v = ns.inspect_json(&format!("ifupdown:{}", file.display()));
    assert_eq!(v.code, Some(1), "stderr: {}", v.stderr);
    let bond = format!("{}:9", file.display());
    assert!(
        v.has("EXPECTED_INTERFACE_MISSING", "critical", &bond),
        "{v}"
    );
    let addr = format!("{}:4", dir.join("interfaces.d/v0").display());
    assert!(v.has("EXPECTED_ADDRESS_MISSING", "critical", &addr), "{v}");
    assert!(!v.has_subject("v0/192.0.2.10"), "{v}");
    // inspect says which stack and files it read.
    let text = ns.inspect_text(&format!("ifupdown:{}", file.display()));
    assert!(
        text.contains("ifupdown") && text.contains("interfaces.d/v0"),
        "{text}"
    );
}
