//! os-net-config's mapping rules (`objects.mapped_nics`, `utils._ordered_nics`
//! of os-net-config 18.1.0 and 14.2.0): a mapping file that pins some names,
//! MAC case, a MAC on no NIC, NICs bound to DPDK listed in
//! `dpdk_mapping.yaml`. Each expected answer here is what `os-net-config -i`
//! printed for the same state (the VM oracle, tests/tests/osnc_oracle.rs,
//! checks the same rules against the real tool).

use std::collections::BTreeMap;

use preflight_model::{Interface, OperState, Snapshot};

use crate::expect::{
    from_os_net_config, in_force_mapping, nic_table, parse_document, Expectations, OsncState,
};

/// nic1..nic6, each an interface of its own.
const CONFIG: &str = "network_config:
  - {type: interface, name: nic1}
  - {type: interface, name: nic2}
  - {type: interface, name: nic3}
  - {type: interface, name: nic4}
  - {type: interface, name: nic5}
  - {type: interface, name: nic6}
";

fn nic(index: u32, name: &str, up: bool) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: up,
        oper_state: if up {
            OperState::Up
        } else {
            OperState::LowerLayerDown
        },
        mtu: 1500,
        mac: Some(format!("52:54:00:00:00:{index:02x}")),
        ..Interface::default()
    }
}

/// eth0..eth5 (MACs 52:54:00:00:00:02..07), `down` without carrier.
fn six(down: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..6u32 {
        let name = format!("eth{i}");
        let up = !down.contains(&name.as_str());
        s.interfaces.insert(i + 2, nic(i + 2, &name, up));
    }
    s
}

fn plan(s: &Snapshot, mapping: Option<&serde_json::Value>) -> Expectations {
    let doc = parse_document("config.yaml", CONFIG).expect("yaml");
    let st = OsncState::with_mapping("mapping.yaml", mapping);
    let nics = in_force_mapping(s, &doc, &st);
    let mut e = from_os_net_config("config.yaml", &doc, &nics).expect("reads");
    e.nics.osnc = st;
    e
}

/// nicN → the NIC os-net-config's next run maps it to (names without one left out).
fn next_run(s: &Snapshot, e: &Expectations) -> BTreeMap<String, String> {
    nic_table(s, e)
        .into_iter()
        .filter_map(|(n, m)| m.next_run.map(|d| (n, d)))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect()
}

/// Case 1: `nic1: eth3` pins one name; the others are numbered by their
/// position among the active NICs, and an alias the file took is skipped
/// ("no mapping for interface eth0 because nic1 is mapped to eth3").
#[test]
fn a_partial_mapping_numbers_the_rest_by_position() {
    let m = serde_json::json!({"interface_mapping": {"nic1": "eth3"}});
    let s = six(&[]);
    let e = plan(&s, Some(&m));
    assert_eq!(
        next_run(&s, &e),
        map(&[
            ("nic1", "eth3"),
            ("nic2", "eth1"),
            ("nic3", "eth2"),
            ("nic5", "eth4"),
            ("nic6", "eth5"),
        ])
    );
    // eth1 pulled: the unpinned names after it shift, nic1 stays.
    let s = six(&["eth1"]);
    let e = plan(&s, Some(&m));
    assert_eq!(
        next_run(&s, &e),
        map(&[
            ("nic1", "eth3"),
            ("nic2", "eth2"),
            ("nic4", "eth4"),
            ("nic5", "eth5"),
        ])
    );
    let shifted: Vec<String> = nic_table(&s, &e)
        .into_iter()
        .filter(|(_, m)| m.reason.is_some())
        .map(|(n, _)| n)
        .collect();
    // nic4 had no NIC (the file took eth3, its position) and would get eth4.
    assert_eq!(shifted, ["nic2", "nic3", "nic4", "nic5", "nic6"]);
}

/// Case 2: an upper-case MAC matches no NIC (os-net-config compares the
/// strings); that name falls back to its position.
#[test]
fn an_upper_case_mac_matches_nothing_and_falls_back_to_position() {
    // eth5 has 52:54:00:00:00:07; eth4 52:54:00:00:00:06; written upper-case
    // for nic2 it is ignored.
    let mut s = six(&[]);
    if let Some(i) = s.interfaces.get_mut(&6) {
        i.mac = Some("52:54:00:00:00:0a".into());
    }
    let m = serde_json::json!({"interface_mapping": {
        "nic1": "52:54:00:00:00:07", "nic2": "52:54:00:00:00:0A"}});
    let e = plan(&s, Some(&m));
    assert_eq!(
        next_run(&s, &e),
        map(&[
            ("nic1", "eth5"),
            ("nic2", "eth1"),
            ("nic3", "eth2"),
            ("nic4", "eth3"),
            ("nic5", "eth4"),
        ])
    );
}

/// Case 3: a MAC on no NIC (a replaced card) falls back to position.
#[test]
fn a_mac_on_no_nic_falls_back_to_position() {
    let s = six(&[]);
    let m = serde_json::json!({"interface_mapping": {
        "nic1": "52:54:00:00:00:03", "nic2": "52:54:00:99:99:99"}});
    let e = plan(&s, Some(&m));
    assert_eq!(
        next_run(&s, &e),
        map(&[
            ("nic1", "eth1"),
            ("nic3", "eth2"),
            ("nic4", "eth3"),
            ("nic5", "eth4"),
            ("nic6", "eth5"),
        ])
    );
}

fn dpdk(name: &str, pci: &str, mac: &str) -> crate::expect::DpdkBound {
    crate::expect::DpdkBound {
        name: name.into(),
        pci_address: pci.into(),
        mac_address: Some(mac.into()),
        vf: false,
    }
}

/// Case 4: eth2 bound to DPDK (gone from the kernel) and listed in
/// dpdk_mapping.yaml still counts, whatever its link; a VF there does not.
#[test]
fn a_dpdk_bound_nic_in_the_dpdk_mapping_still_counts() {
    let mut s = six(&[]);
    s.interfaces.remove(&4); // eth2
    let mut e = plan(&s, None);
    assert_eq!(
        e.nics.in_force.get("nic3").map(String::as_str),
        Some("eth3"),
        "without the DPDK mapping os-net-config itself would not count eth2"
    );
    e.nics.osnc.dpdk = vec![dpdk("eth2", "0000:00:05.0", "52:54:00:00:00:04")];
    assert_eq!(
        next_run(&s, &e),
        map(&[
            ("nic1", "eth0"),
            ("nic2", "eth1"),
            ("nic3", "eth2"),
            ("nic4", "eth3"),
            ("nic5", "eth4"),
            ("nic6", "eth5"),
        ])
    );
    // Built with the DPDK mapping: in force agrees, nothing shifts.
    let st = e.nics.osnc.clone();
    let doc = parse_document("config.yaml", CONFIG).expect("yaml");
    let nics = in_force_mapping(&s, &doc, &st);
    assert_eq!(nics.get("nic3").map(String::as_str), Some("eth2"));
    let mut e = from_os_net_config("config.yaml", &doc, &nics).expect("reads");
    e.nics.osnc = st.clone();
    assert!(nic_table(&s, &e).values().all(|m| m.reason.is_none()));
    // A MAC in the mapping file finds the bound NIC through the DPDK mapping.
    let mut st2 = OsncState::with_mapping(
        "mapping.yaml",
        Some(&serde_json::json!({"interface_mapping": {"nic6": "52:54:00:00:00:04"}})),
    );
    st2.dpdk = st.dpdk.clone();
    assert_eq!(
        crate::expect::next_run(&s, &st2)
            .map
            .get("nic6")
            .map(String::as_str),
        Some("eth2")
    );
    // A VF in the DPDK mapping is skipped.
    let mut st3 = st.clone();
    st3.dpdk[0].vf = true;
    assert_eq!(
        crate::expect::next_run(&s, &st3)
            .map
            .get("nic3")
            .map(String::as_str),
        Some("eth3")
    );
}

/// A bond port is matched by its permanent MAC (sysfs
/// `bonding_slave/perm_hwaddr`), not the bond's MAC it carries now.
#[test]
fn a_bond_port_is_matched_by_its_permanent_mac() {
    let mut s = six(&[]);
    for idx in [3, 4] {
        if let Some(i) = s.interfaces.get_mut(&idx) {
            i.bond_port = Some(preflight_model::BondPort {
                perm_mac: i.mac.clone(),
                ..preflight_model::BondPort::default()
            });
            i.mac = Some("52:54:00:00:00:03".into()); // the bond's (eth1's)
        }
    }
    let st = OsncState::with_mapping(
        "mapping.yaml",
        Some(&serde_json::json!({"interface_mapping": {"nic1": "52:54:00:00:00:04"}})),
    );
    assert_eq!(
        crate::expect::next_run(&s, &st)
            .map
            .get("nic1")
            .map(String::as_str),
        Some("eth2")
    );
}

/// os-net-config stops (InvalidConfigException) on a NIC mapped twice and on
/// an alias that is an active NIC's name: every name is then "no NIC".
#[test]
fn a_mapping_os_net_config_refuses_is_said_so() {
    let s = six(&[]);
    for m in [
        serde_json::json!({"interface_mapping": {"nic1": "eth1", "nic2": "52:54:00:00:00:03"}}),
        serde_json::json!({"interface_mapping": {"eth0": "eth1"}}),
    ] {
        let st = OsncState::with_mapping("mapping.yaml", Some(&m));
        let n = crate::expect::next_run(&s, &st);
        assert!(n.refused.is_some(), "{m}");
        assert!(n.map.is_empty());
        let e = plan(&s, Some(&m));
        let t = nic_table(&s, &e);
        assert_eq!(t.len(), 6);
        assert!(
            t.values().all(|r| r
                .reason
                .as_deref()
                .is_some_and(|w| w.contains("would stop at the mapping file"))),
            "{t:?}"
        );
    }
    // The name of an inactive NIC may be an alias.
    let s = six(&["eth0"]);
    let st = OsncState::with_mapping(
        "mapping.yaml",
        Some(&serde_json::json!({"interface_mapping": {"eth0": "eth1"}})),
    );
    let n = crate::expect::next_run(&s, &st);
    assert_eq!(n.refused, None);
    assert_eq!(n.map.get("eth0").map(String::as_str), Some("eth1"));
}

/// netaddr's forms of a MAC; os-net-config compares them as written, so only
/// the kernel's own form ever matches.
#[test]
fn valid_mac_follows_netaddr() {
    for m in [
        "52:54:00:00:00:03",
        "52:54:00:00:00:0A",
        "52-54-00-00-00-03",
        "5254.0000.0003",
        "525400000003",
        "2:54:0:0:0:3",
    ] {
        assert!(crate::expect::valid_mac(m), "{m}");
    }
    for m in ["eth0", "nic1", "52:54:00:00:00", "52:54:00:00:00:0g", ""] {
        assert!(!crate::expect::valid_mac(m), "{m}");
    }
    let s = six(&[]);
    let st = OsncState::with_mapping(
        "mapping.yaml",
        Some(&serde_json::json!({"interface_mapping": {"nic1": "52-54-00-00-00-03"}})),
    );
    let n = crate::expect::next_run(&s, &st);
    assert_eq!(n.unmatched.len(), 1);
    assert!(n.unmatched[0].why.contains("eth1"), "{:?}", n.unmatched);
}

/// Python's `_natural_sort_key`: numbers by value, `eth` before `eth0`.
#[test]
fn natural_order_is_pythons() {
    let names = vec!["eth10", "eth2", "eth", "eth0", "ens3f1", "ens3f0", "ens10"];
    assert_eq!(
        crate::expect::nics::in_order(names),
        ["eth", "eth0", "eth2", "eth10", "ens3f0", "ens3f1", "ens10"]
    );
}

/// SR-IOV PFs of sriov_config.yaml count whatever their link in 18.x, not
/// in 14.2.0 (Wallaby): the installed version decides, unknown is 18.x.
#[test]
fn sriov_pfs_count_by_the_installed_version() {
    let s = six(&["eth5"]);
    let mut st = OsncState {
        sriov_pfs: vec!["eth5".into()],
        ..OsncState::default()
    };
    let nic6 = |st: &OsncState| crate::expect::next_run(&s, st).map.get("nic6").cloned();
    assert_eq!(nic6(&st).as_deref(), Some("eth5"), "unknown version: 18.x");
    st.version = Some("18.1.0".into());
    assert_eq!(nic6(&st).as_deref(), Some("eth5"));
    st.version = Some("14.2.1".into());
    assert_eq!(nic6(&st), None);
    assert!(st.rules_followed().contains("14.2.0"));
}

/// What `inspect` says of the rules it followed: the installed version and
/// the rules that go with it, or the newest when none could be read.
#[test]
fn the_rules_followed_name_the_installed_version() {
    let mut st = OsncState::default();
    let r = st.rules();
    assert_eq!((r.installed, r.followed.as_str()), (None, "18.1.0"));
    assert!(
        r.why
            .contains("the newest: the installed version could not be read"),
        "{}",
        r.why
    );
    st.version = Some("14.2.1".into());
    let r = st.rules();
    assert_eq!(
        (r.installed.as_deref(), r.followed.as_str()),
        (Some("14.2.1"), "14.2.0")
    );
    assert_eq!(r.why, "os-net-config 14.2.0's rules: 14.2.1 is installed");
    st.version = Some("18.2.0".into());
    assert_eq!(st.rules().followed, "18.1.0");
}

/// An SR-IOV VF in the kernel is never numbered (os-net-config reads its
/// sysfs `physfn`), up or not.
#[test]
fn a_kernel_vf_is_not_numbered() {
    let s = six(&[]);
    let st = OsncState {
        kernel_vfs: vec!["eth1".into()],
        ..OsncState::default()
    };
    let n = crate::expect::next_run(&s, &st);
    assert_eq!(n.map.get("nic2").map(String::as_str), Some("eth2"));
    assert_eq!(n.map.len(), 5);
}
