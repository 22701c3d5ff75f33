//! os-net-config parsing on the project's own sample files (copied from
//! os-net-config, Apache-2.0, see tests/fixtures/os-net-config/NOTICE) and
//! the expected-state rules on plain snapshots.

use std::collections::BTreeMap;

use preflight_model::{Address, Bond, BondMode, Interface, OperState, Route, Snapshot};

use super::*;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/os-net-config"
);

/// The expected interface `name`; panics naming it when absent.
fn iface<'a>(e: &'a Expectations, name: &str) -> &'a Expected {
    e.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in the expectations"))
}

fn load(name: &str, nics: &BTreeMap<String, String>) -> Result<Expectations, ExpectError> {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).expect("fixture");
    let doc = parse_document(name, &text)?;
    from_os_net_config(name, &doc, nics)
}

#[test]
fn every_sample_file_is_read_without_error() {
    let mut read = 0;
    for entry in std::fs::read_dir(DIR).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let doc = parse_document(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        if doc.get("network_config").is_none() {
            // mapping files and the like: not expectations, still parsed
            assert!(doc.is_object() || doc.is_null(), "{name}");
            read += 1;
            continue;
        }
        let e = from_os_net_config(&name, &doc, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !e.interfaces.is_empty() || !e.unsupported.is_empty(),
            "{name}: nothing read"
        );
        read += 1;
    }
    assert!(read >= 50, "read {read} files");
}

#[test]
fn unsupported_entry_types_are_reported() {
    let e = load("ib_interface.yaml", &BTreeMap::new()).expect("reads");
    assert!(
        e.unsupported.iter().any(|u| u.starts_with("ib_interface")),
        "{:?}",
        e.unsupported
    );
    let f = rules(&Snapshot::default(), &e);
    assert!(
        f.iter().any(|r| r.code == Code::ExpectationUnchecked
            && r.subject.starts_with("ib_interface")
            && r.message.contains("does not check")),
        "{f:?}"
    );
    assert!(f.iter().any(|r| r.code.as_str() == "EXPECTATION_UNCHECKED"));
}

#[test]
fn linux_bond_with_members_and_options() {
    let e = load("linux_bond.yaml", &BTreeMap::new()).expect("reads");
    let bond = iface(&e, "bond1");
    assert_eq!(bond.kind, Kind::LinuxBond);
    assert_eq!(bond.members, ["em1", "em2"]);
    assert_eq!(bond.bond_mode, Some(BondMode::ActiveBackup));
    assert!(bond.dhcp);
}

#[test]
fn ovs_bridge_with_ovs_bond_members() {
    let e = load("bond.yaml", &BTreeMap::new()).expect("reads");
    let b = iface(&e, "bond1");
    assert_eq!(b.kind, Kind::OvsBond);
    assert_eq!(b.members, ["em1", "em2"]);
    let br = iface(&e, "br-ctlplane");
    assert_eq!(br.members, ["bond1"]);
}

#[test]
fn static_interface_addresses_routes_and_vlan_names() {
    let e = load("interface.yaml", &BTreeMap::new()).expect("reads");
    let em1 = iface(&e, "em1");
    assert!(!em1.dhcp);
    assert_eq!(em1.addresses, [("192.0.2.1".parse().expect("ip"), 24)]);
    assert_eq!(
        em1.default_route,
        Some(Some("192.0.2.254".parse().expect("ip")))
    );
    let v = load("bridge_vlan.yaml", &BTreeMap::new()).expect("reads");
    assert!(
        v.interfaces
            .iter()
            .any(|i| i.name == "vlan16" && i.kind == Kind::Vlan),
        "{:?}",
        v.interfaces
    );
}

fn nic(index: u32, name: &str, carrier: bool, mac: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier,
        oper_state: if carrier {
            OperState::Up
        } else {
            OperState::Down
        },
        mtu: 1500,
        mac: Some(mac.into()),
        ..Interface::default()
    }
}

#[test]
fn nic_mapping_by_rule_and_by_file() {
    let mut s = Snapshot::default();
    for (i, (n, c)) in [
        ("ens3", true),
        ("em2", true),
        ("em1", true),
        ("eno1", false),
        ("ens10", true),
    ]
    .iter()
    .enumerate()
    {
        let idx = u32::try_from(i + 2).expect("small");
        s.interfaces
            .insert(idx, nic(idx, n, *c, &format!("52:54:00:00:00:0{i}")));
    }
    let m = nic_mapping(&s, None);
    // Embedded first, natural order, active only (eno1 has no carrier).
    assert_eq!(m.get("nic1").map(String::as_str), Some("em1"));
    assert_eq!(m.get("nic2").map(String::as_str), Some("em2"));
    assert_eq!(m.get("nic3").map(String::as_str), Some("ens3"));
    assert_eq!(m.get("nic4").map(String::as_str), Some("ens10"));
    assert_eq!(m.len(), 4);
    let text = std::fs::read_to_string(format!("{DIR}/mapping.yaml")).expect("mapping");
    let doc = parse_document("mapping.yaml", &text).expect("parses");
    let m = nic_mapping(&s, Some(&doc));
    // os-net-config's own sample: em3 and both MACs are on no NIC here, so
    // only nic2: em1 pins; the active NICs keep their positions (em2 would
    // be nic2, taken: unmapped) and nic1 maps nothing.
    let want: BTreeMap<String, String> = [("nic2", "em1"), ("nic3", "ens3"), ("nic4", "ens10")]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(m, want);
}

#[test]
fn bad_files_name_the_path_and_reason() {
    let cases = [
        ("network_config: 3\n", "network_config", "must be a list"),
        ("network_config:\n  - name: eth0\n", "network_config[0].type", "missing"),
        ("network_config:\n  - type: interface\n    name: eth0\n    addresses:\n      - ip_netmask: 10.0.0.300/24\n", "network_config[0].addresses[0].ip_netmask", "not an address"),
        ("network_config:\n  - type: interface\n    name: eth0\n    mtu: 9\n", "network_config[0].mtu", "not an MTU"),
        ("foo: [\n", "line", "not valid YAML"),
    ];
    for (text, path, reason) in cases {
        let r = parse_document("t.yaml", text)
            .and_then(|d| from_os_net_config("t.yaml", &d, &BTreeMap::new()));
        let e = r.expect_err(text);
        assert!(e.path.starts_with(path), "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
}

/// The seed failure's second half: bond0 over eth0/eth1 with a static address
/// and default route, replaced by DHCP on every interface.
#[test]
fn dhcp_fallback_is_unexpected_dhcp_and_missing_address_and_route() {
    let cfg = "network_config:\n  - type: linux_bond\n    name: bond0\n    use_dhcp: false\n    bonding_options: \"mode=active-backup miimon=100\"\n    mtu: 9000\n    addresses:\n      - ip_netmask: 192.0.2.10/24\n    routes:\n      - default: true\n        next_hop: 192.0.2.1\n    members:\n      - type: interface\n        name: nic1\n      - type: interface\n        name: nic2\n";
    let mut s = Snapshot::default();
    s.interfaces
        .insert(2, nic(2, "eth0", true, "52:54:00:00:00:01"));
    s.interfaces
        .insert(3, nic(3, "eth1", true, "52:54:00:00:00:02"));
    let nics = nic_mapping(&s, None);
    let doc = parse_document("config.yaml", cfg).expect("yaml");
    let e = from_os_net_config("config.yaml", &doc, &nics).expect("reads");
    assert_eq!(
        e.interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .and_then(|i| i.written_as.as_deref()),
        Some("nic1")
    );
    // Healthy: the bond is there with its address and route.
    let mut healthy = s.clone();
    healthy.interfaces.insert(
        4,
        Interface {
            kind: Some("bond".into()),
            mtu: 9000,
            bond: Some(Bond {
                mode: BondMode::ActiveBackup,
                miimon_ms: 100,
                ..Bond::default()
            }),
            ..nic(4, "bond0", true, "52:54:00:00:00:01")
        },
    );
    healthy.addresses.push(Address {
        ifindex: 4,
        address: "192.0.2.10".parse().expect("ip"),
        prefix_len: 24,
        permanent: true,
        scope: "global".into(),
    });
    healthy.routes.push(Route {
        destination: None,
        prefix_len: 0,
        gateway: Some("192.0.2.1".parse().expect("ip")),
        oif: Some(4),
        protocol: "static".into(),
        metric: None,
        ipv6: false,
    });
    assert_eq!(
        rules(&healthy, &e),
        vec![],
        "healthy node matches its configuration"
    );
    // Fallback: no bond, eth0 has a DHCP lease and a DHCP default route.
    let mut fallback = s;
    fallback.addresses.push(Address {
        ifindex: 2,
        address: "10.0.2.15".parse().expect("ip"),
        prefix_len: 24,
        permanent: false,
        scope: "global".into(),
    });
    let codes: Vec<String> = rules(&fallback, &e)
        .into_iter()
        .map(|r| format!("{} {}", r.code, r.subject))
        .collect();
    assert!(
        codes.contains(&"EXPECTED_INTERFACE_MISSING bond0".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"DEFAULT_ROUTE_MISSING bond0".to_string())
            || codes.contains(&"EXPECTED_INTERFACE_MISSING bond0".to_string())
    );
    // With the bond present but on DHCP.
    let mut bond_dhcp = healthy.clone();
    bond_dhcp.addresses.clear();
    bond_dhcp.routes.clear();
    bond_dhcp.addresses.push(Address {
        ifindex: 4,
        address: "10.0.2.15".parse().expect("ip"),
        prefix_len: 24,
        permanent: false,
        scope: "global".into(),
    });
    let mut codes: Vec<String> = rules(&bond_dhcp, &e)
        .into_iter()
        .map(|r| format!("{} {}", r.code, r.subject))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "DEFAULT_ROUTE_MISSING bond0",
            "EXPECTED_ADDRESS_MISSING bond0/192.0.2.10",
            "UNEXPECTED_DHCP bond0"
        ]
    );
    // Mode, miimon and MTU drift; a member without carrier.
    let mut drift = healthy;
    let b = drift.interfaces.get_mut(&4).expect("bond");
    b.mtu = 1500;
    b.bond.as_mut().expect("bond").mode = BondMode::BalanceRr;
    drift.interfaces.get_mut(&3).expect("eth1").carrier = false;
    let mut codes: Vec<String> = rules(&drift, &e)
        .into_iter()
        .map(|r| format!("{} {}", r.code, r.subject))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "BOND_MEMBER_MISSING bond0/eth1",
            "BOND_MODE_MISMATCH bond0",
            "MTU_MISMATCH bond0"
        ]
    );
}

mod bond_health;
mod fallback;
mod hostile;
mod mapping;
mod nics;
mod ovs_and_team;
