//! NetworkManager keyfiles read into expectations: a fixture directory, the
//! rules' findings naming file:line, UUID shadowing, automatic DHCP with
//! and without `no-auto-default`, bad input and bounds.

use preflight_model::{BondMode, Interface, OperState, Snapshot};

use super::*;
use crate::expect::rules;
use crate::Code;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/networkmanager"
);

fn dir(name: &str) -> Vec<NmKeyfile> {
    let mut paths: Vec<_> = std::fs::read_dir(format!("{DIR}/{name}"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| NmKeyfile {
            path: p.file_name().expect("name").to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p).expect("read"),
        })
        .collect()
}

fn nic(index: u32, name: &str, mac: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: true,
        oper_state: OperState::Up,
        mtu: 1500,
        mac: Some(mac.into()),
        ..Interface::default()
    }
}

fn snap(ifaces: Vec<Interface>) -> Snapshot {
    let mut s = Snapshot::default();
    for i in ifaces {
        s.interfaces.insert(i.index, i);
    }
    s
}

fn nics3() -> Snapshot {
    snap(vec![
        nic(2, "eth0", "52:54:00:00:00:01"),
        nic(3, "eth1", "52:54:00:00:00:02"),
        nic(4, "eth2", "52:54:00:00:00:03"),
    ])
}

fn load(s: &Snapshot, conf: &[(String, String)]) -> Expectations {
    from_networkmanager("nm", &dir("bond"), conf, "NetworkManager.conf", s).expect("reads")
}

/// A bond, a port by interface name and one by MAC with its controller
/// named by UUID, a VLAN on the bond: each key with its file:line; keys
/// not modelled are unchecked, not dropped.
#[test]
fn bond_with_ports_and_vlan_reads_with_lines() {
    let e = load(&nics3(), &[]);
    let bond = e
        .interfaces
        .iter()
        .find(|x| x.name == "bond0")
        .expect("bond0");
    assert_eq!(bond.kind, Kind::LinuxBond);
    assert_eq!(bond.members, ["eth0", "eth1"]);
    assert_eq!(bond.bond_mode, Some(BondMode::Ieee8023ad));
    assert_eq!(bond.bond_miimon, Some(100));
    assert_eq!(bond.mtu, Some(9000));
    assert_eq!(bond.declared_at["mode"], "bond0.nmconnection:8");
    assert_eq!(
        bond.declared_at["member:eth1"],
        "bond0-port-eth1.nmconnection:5"
    );
    assert_eq!(
        bond.declared_at["address:192.0.2.10/24"],
        "bond0.nmconnection:17"
    );
    assert_eq!(
        bond.default_route,
        Some(Some("192.0.2.1".parse().expect("ip")))
    );
    let vlan = e
        .interfaces
        .iter()
        .find(|x| x.name == "bond0.20")
        .expect("vlan");
    assert_eq!(vlan.kind, Kind::Vlan);
    assert_eq!(vlan.parent.as_deref(), Some("bond0"));
    let at: Vec<&str> = e.unchecked.iter().map(|u| u.at.as_str()).collect();
    assert!(at.contains(&"bond0.nmconnection:10"), "{at:?}");
    assert!(at.contains(&"vlan20.nmconnection:8"), "{at:?}");
}

/// The running state against the files: a bond that does not exist and a
/// port whose MAC no NIC has are no-go naming file:line.
#[test]
fn missing_bond_and_port_name_file_and_line() {
    let s = snap(vec![nic(2, "eth0", "52:54:00:00:00:01")]);
    let e = load(&s, &[("c".into(), "[main]\nno-auto-default=*\n".into())]);
    let raw = rules(&s, &e);
    let has = |c: Code, text: &str| raw.iter().any(|r| r.code == c && r.message.contains(text));
    assert!(
        has(Code::ExpectedInterfaceMissing, "bond0.nmconnection:5"),
        "{raw:?}"
    );
    assert!(
        has(Code::BondMemberMissing, "bond0-port-eth1.nmconnection:5"),
        "{raw:?}"
    );
}

/// A physical NIC no profile applies to gets NetworkManager's automatic
/// DHCP unless no-auto-default covers it.
#[test]
fn dhcp_exposure_without_no_auto_default_and_none_with_it() {
    let s = nics3();
    let e = load(&s, &[]);
    let names: Vec<&str> = e.dhcp_exposure.iter().map(|d| d.nic.as_str()).collect();
    assert_eq!(names, ["eth2"], "eth0 and eth1 have port profiles");
    let raw = rules(&s, &e);
    assert!(
        raw.iter()
            .any(|r| r.code == Code::UnexpectedDhcpExposure && r.subject == "eth2"),
        "{raw:?}"
    );
    assert_eq!(
        Code::UnexpectedDhcpExposure.as_str(),
        "UNEXPECTED_DHCP_EXPOSURE"
    );
    let conf = |t: &str| vec![("NetworkManager.conf".to_owned(), t.to_owned())];
    assert!(load(&s, &conf("[main]\nno-auto-default=*\n"))
        .dhcp_exposure
        .is_empty());
    assert!(
        load(&s, &conf("[main]\nno-auto-default=52:54:00:00:00:03\n"))
            .dhcp_exposure
            .is_empty()
    );
    assert!(
        load(&s, &conf("[main]\nno-auto-default=interface-name:eth*\n"))
            .dhcp_exposure
            .is_empty()
    );
    // Listing another NIC does not cover eth2; the line that decided is named.
    let e = load(
        &s,
        &[
            (
                "NetworkManager.conf".into(),
                "[main]\nno-auto-default=*\n".into(),
            ),
            (
                "conf.d/10.conf".into(),
                "[main]\nplugins=keyfile\nno-auto-default=mac:52:54:00:00:00:09\n".into(),
            ),
        ],
    );
    assert_eq!(e.dhcp_exposure.len(), 1);
    assert_eq!(e.dhcp_exposure[0].at, "conf.d/10.conf:3");
    // A spec preflight cannot evaluate excludes nothing and is listed.
    let e = load(&s, &conf("[main]\nno-auto-default=driver:e1000\n"));
    assert_eq!(e.dhcp_exposure.len(), 1);
    assert!(e.unchecked.iter().any(|u| u.what.contains("driver:e1000")));
}

/// A second profile with a UUID already loaded is shadowed: unchecked,
/// not read.
#[test]
fn same_uuid_is_shadowed_by_the_earlier_file() {
    let mut files = dir("bond");
    files.insert(
        0,
        NmKeyfile {
            path: "run/bond0.nmconnection".into(),
            text: "[connection]\nid=bond0\nuuid=6b0b3c5e-3c1e-4d7a-9a56-0b7e3f6a0001\ntype=bond\ninterface-name=bond0\n[bond]\nmode=active-backup\n".into(),
        },
    );
    let e = from_networkmanager("nm", &files, &[], "c", &nics3()).expect("reads");
    let bond = e
        .interfaces
        .iter()
        .find(|x| x.name == "bond0")
        .expect("bond0");
    assert_eq!(bond.bond_mode, Some(BondMode::ActiveBackup));
    assert!(e
        .unchecked
        .iter()
        .any(|u| u.at == "bond0.nmconnection:1" && u.what.contains("shadows")));
}

/// Bad input names file:line; bounds are refused.
#[test]
fn bad_input_and_bounds_name_the_file() {
    let one = |t: &str| {
        vec![NmKeyfile {
            path: "x.nmconnection".into(),
            text: t.into(),
        }]
    };
    let s = nics3();
    let e = from_networkmanager("nm", &one("[connection\n"), &[], "c", &s).expect_err("header");
    assert_eq!(e.file, "x.nmconnection:1");
    let e = from_networkmanager(
        "nm",
        &one("[connection]\ntype=bond\ninterface-name=b\n[bond]\nmode=fastest\n"),
        &[],
        "c",
        &s,
    )
    .expect_err("mode");
    assert_eq!(e.file, "x.nmconnection:5");
    let e = from_networkmanager(
        "nm",
        &one("[connection]\ntype=ethernet\ninterface-name=eth0\n[ipv4]\naddress1=10.0.0.1\n"),
        &[],
        "c",
        &s,
    )
    .expect_err("prefix");
    assert_eq!(e.file, "x.nmconnection:5");
    let big = "#".repeat(MAX_NM_FILE_BYTES + 1);
    assert!(from_networkmanager("nm", &one(&big), &[], "c", &s).is_err());
    let many = vec![
        NmKeyfile {
            path: "y".into(),
            text: String::new()
        };
        MAX_NM_FILES + 1
    ];
    assert!(from_networkmanager("nm", &many, &[], "c", &s).is_err());
}
