//! The os-net-config oracle: preflight's predicted nicN mapping against the
//! real os-net-config (pinned release from PyPI, every dependency it
//! declares, nothing stubbed) in the Debian 12 systemd VM with 8 NICs, over
//! many states: cables pulled in different positions, a bond port,
//! admin-down NICs, NICs unbound from the kernel and listed in
//! dpdk_mapping.yaml, an SR-IOV PF in sriov_config.yaml, and mapping files
//! (partial, complete, by MAC and by name, an upper-case MAC, a MAC and a
//! name on no NIC). `os-net-config -i [-m FILE]` and `preflight inspect`'s
//! next run must agree on every nicN, NIC_RENUMBERED must name exactly the
//! names os-net-config moved, MAPPING_ENTRY_UNMATCHED exactly the entries it
//! logged as not found. The work is tests/vm/osnc-oracle.sh (one boot);
//! this test runs it so that the workspace's nextest run includes it.

use std::process::Command;

#[test]
fn preflight_agrees_with_the_real_os_net_config() {
    preflight_tests::require_root("the os-net-config oracle (qemu, the VM image)");
    let root = preflight_tests::workspace();
    let out = Command::new("bash")
        .arg(root.join("tests/vm/osnc-oracle.sh"))
        .arg(preflight_tests::preflight_bin())
        .current_dir(&root)
        .output()
        .expect("runs bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "os-net-config and preflight disagree, or the oracle could not run (it never skips):\n{text}"
    );
    assert!(text.contains("0 disagreeing"), "{text}");
}
