//! Tests of loading and reloading the expected state.

use super::*;

/// A path that never ends (a device, a FIFO fed forever, a file that
/// grows) is read only up to the document bound: a clear error, not
/// an agent that reads until the kernel kills it.
#[test]
fn an_endless_file_is_read_up_to_the_bound() {
    let src = Source::new(PathBuf::from("/dev/zero"), None);
    let e = src.load(&Snapshot::default()).expect_err("refused");
    assert_eq!(e.file, "/dev/zero");
    assert!(
        e.reason.contains(&expect::MAX_DOCUMENT_BYTES.to_string()),
        "{e}"
    );
}

/// A file over the bound names the bound; one within it reads.
#[test]
fn an_oversized_file_is_refused_and_a_normal_one_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let mut text = String::from("network_config:\n  - type: interface\n    name: eth0\n");
    std::fs::write(&path, &text).expect("write");
    let src = Source::new(path.clone(), None);
    let e = src.load(&Snapshot::default()).expect("reads");
    assert_eq!(e.interfaces.len(), 1);
    text.push_str(&format!("# {}\n", "z".repeat(expect::MAX_DOCUMENT_BYTES)));
    std::fs::write(&path, &text).expect("write");
    let e = src.load(&Snapshot::default()).expect_err("too large");
    assert!(e.to_string().len() < 300, "{e}");
}

fn physical(index: u32, name: &str) -> preflight_model::Interface {
    preflight_model::Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: true,
        oper_state: preflight_model::OperState::Up,
        mtu: 1500,
        mac: Some(format!("52:54:00:00:00:{index:02x}")),
        ..preflight_model::Interface::default()
    }
}

/// os-net-config's own files under a node root: the default mapping
/// file, dpdk_mapping.yaml (a NIC gone from the kernel still counts, a
/// VF does not), sriov_config.yaml, and the installed version.
#[test]
fn os_net_configs_own_files_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let w = |p: &str, text: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w(
        "etc/os-net-config/config.yaml",
        "network_config:\n  - {type: interface, name: nic1}\n  - {type: interface, name: nic2}\n  - {type: interface, name: nic3}\n",
    );
    w(
        "var/lib/os-net-config/dpdk_mapping.yaml",
        "- name: eth1\n  pci_address: '0000:00:04.0'\n  mac_address: '52:54:00:00:00:09'\n  driver: vfio-pci\n- name: eth7\n  pci_address: '0000:00:05.0'\n  mac_address: '52:54:00:00:00:10'\n  driver: vfio-pci\n",
    );
    std::fs::create_dir_all(root.join("sys/bus/pci/devices/0000:00:05.0/physfn")).expect("vf");
    std::fs::create_dir_all(root.join("sys/class/net/eth9/device/physfn")).expect("vf");
    std::fs::create_dir_all(root.join("sys/class/net/eth0/device")).expect("pf");
    w(
        "usr/lib/python3.9/site-packages/os_net_config-14.2.1-py3.9.egg-info/PKG-INFO",
        "",
    );
    let mut snap = Snapshot::default();
    snap.interfaces.insert(2, physical(2, "eth0"));
    snap.interfaces.insert(4, physical(4, "eth2"));
    let src =
        Source::new(root.join("etc/os-net-config/config.yaml"), None).with_root(root.to_path_buf());
    let e = src.load(&snap).expect("loads");
    assert_eq!(e.nics.osnc.version.as_deref(), Some("14.2.1"));
    assert_eq!(e.nics.osnc.kernel_vfs, ["eth9"]);
    assert_eq!(e.nics.osnc.dpdk.len(), 2);
    assert!(!e.nics.osnc.dpdk[0].vf && e.nics.osnc.dpdk[1].vf);
    let t = expect::nic_table(&snap, &e);
    let next: Vec<_> = t.values().map(|m| m.next_run.as_deref()).collect();
    assert_eq!(next, [Some("eth0"), Some("eth1"), Some("eth2")]);
    // The default mapping file, when it exists, is os-net-config's.
    w(
        "etc/os-net-config/mapping.yaml",
        "interface_mapping:\n  nic1: '52:54:00:00:00:04'\n",
    );
    let e = src.load(&snap).expect("loads");
    assert_eq!(
        e.nics.in_force.get("nic1").map(String::as_str),
        Some("eth2")
    );
    // Unquoted, os-net-config's YAML 1.1 reader makes that MAC a number
    // (sexagesimal) that matches no NIC: nic1 stays eth0, by position.
    w(
        "etc/os-net-config/mapping.yaml",
        "interface_mapping:\n  nic1: 52:54:00:00:00:04\n",
    );
    let e = src.load(&snap).expect("loads");
    assert_eq!(
        e.nics.in_force.get("nic1").map(String::as_str),
        Some("eth0")
    );
    // A DPDK mapping os-net-config would fail on is an error, not ignored.
    w("var/lib/os-net-config/dpdk_mapping.yaml", "- name: eth1\n");
    let err = src.load(&snap).expect_err("refused");
    assert!(err.to_string().contains("pci_address"), "{err}");
    // So is one past the bound.
    w(
        "var/lib/os-net-config/dpdk_mapping.yaml",
        &format!("# {}\n", "z".repeat(expect::MAX_DOCUMENT_BYTES)),
    );
    let err = src.load(&snap).expect_err("too large");
    assert!(err.to_string().contains("dpdk_mapping.yaml"), "{err}");
    // An empty one is no NIC.
    w("var/lib/os-net-config/dpdk_mapping.yaml", "");
    assert!(src.load(&snap).expect("loads").nics.osnc.dpdk.is_empty());
}
