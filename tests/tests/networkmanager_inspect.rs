//! `preflight inspect --expect networkmanager:DIR` end to end through the
//! binary on real netlink in a namespace the test made. The host kernel has
//! no bonding, so the bond declared in tests/fixtures/networkmanager/netns
//! does not exist: a declared bond preflight cannot see is no-go, naming the
//! keyfile and line; an address declared on a veth but never brought up is
//! no-go naming the keyfile and line. NetworkManager reads only keyfiles of
//! mode 0600 owned by root, so the fixtures are copied and made so; one
//! left world-readable is reported, not read. Needs root (CI runs as root);
//! never skips.

use std::os::unix::fs::PermissionsExt;

use preflight_tests::stack::StackNs;
use preflight_tests::workspace;

#[test]
fn keyfiles_declare_what_is_missing_with_file_and_line() {
    let ns = StackNs::new("nmk");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for f in ["bond7.nmconnection", "v0.nmconnection"] {
        let to = dir.join(f);
        std::fs::copy(
            workspace()
                .join("tests/fixtures/networkmanager/netns")
                .join(f),
            &to,
        )
        .expect("copy fixture");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // World-readable: NetworkManager ignores it, and so must preflight.
    let loose = dir.join("v1.nmconnection");
    std::fs::write(
        &loose,
        "[connection]\nid=v1\ntype=ethernet\ninterface-name=v1\n[ipv4]\nmethod=manual\naddress1=198.51.100.1/24\n",
    )
    .expect("write");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let v = ns.inspect_json(&format!("networkmanager:{}", dir.display()));
    assert_eq!(v.code, Some(1), "stderr: {}", v.stderr);
    let bond = format!("{}:5", dir.join("bond7.nmconnection").display());
    assert!(
        v.has("EXPECTED_INTERFACE_MISSING", "critical", &bond),
        "{v}"
    );
    let v0 = format!("{}:9", dir.join("v0.nmconnection").display());
    assert!(v.has("EXPECTED_ADDRESS_MISSING", "critical", &v0), "{v}");
    // The address that is there is no finding.
    assert!(!v.has_subject("v0/192.0.2.10"), "{v}");
    // The world-readable keyfile is named, and its address not expected.
    assert!(
        v.has(
            "EXPECTATION_UNCHECKED",
            "warning",
            &loose.display().to_string()
        ),
        "{v}"
    );
    assert!(
        !v.findings().iter().any(|f| f["message"]
            .as_str()
            .is_some_and(|m| m.contains("198.51.100.1"))),
        "{v}"
    );
    // inspect says which stack and files it read.
    let text = ns.inspect_text(&format!("networkmanager:{}", dir.display()));
    assert!(
        text.contains("NetworkManager") && text.contains("bond7.nmconnection"),
        "{text}"
    );
}
