//! ifupdown's interfaces(5) files read into expectations: a fixture file,
//! the rules' findings naming file:line, bad input and bounds.

use preflight_model::{Bond, BondMode, Interface, OperState, Snapshot};

use super::*;
use crate::expect::rules;
use crate::Code;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/ifupdown");

fn fixture(name: &str) -> Vec<IfupdownFile> {
    vec![IfupdownFile {
        path: "interfaces".into(),
        text: std::fs::read_to_string(format!("{DIR}/{name}/interfaces")).expect("fixture"),
    }]
}

fn file(path: &str, text: &str) -> IfupdownFile {
    IfupdownFile {
        path: path.into(),
        text: text.into(),
    }
}

fn nic(index: u32, name: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: true,
        oper_state: OperState::Up,
        mtu: 1500,
        mac: Some(format!("52:54:00:00:00:{index:02x}")),
        ..Interface::default()
    }
}

fn get<'a>(e: &'a Expectations, name: &str) -> &'a Expected {
    e.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not expected in {:?}", e.interfaces))
}

#[test]
fn a_bond_with_members_vlans_and_addresses_reads_with_positions() {
    let e = from_ifupdown("ifupdown", &fixture("bond"), &Snapshot::default()).expect("reads");
    let b = get(&e, "bond0");
    assert_eq!(b.kind, Kind::LinuxBond);
    assert_eq!(b.members, ["eth0", "ens4"]);
    assert_eq!(b.bond_mode, Some(BondMode::Ieee8023ad));
    assert_eq!(b.bond_miimon, Some(100));
    assert_eq!(b.mtu, Some(9000));
    assert_eq!(b.declared_at[""], "interfaces:10");
    assert_eq!(b.declared_at["member:ens4"], "interfaces:11");
    assert_eq!(b.declared_at["mode"], "interfaces:12");
    let v = get(&e, "bond0.20");
    assert_eq!(v.kind, Kind::Vlan);
    assert_eq!(v.addresses, [("10.20.0.5".parse().expect("ip"), 24)]);
    assert_eq!(v.declared_at["address:10.20.0.5/24"], "interfaces:19");
    assert_eq!(
        v.default_route,
        Some(Some("10.20.0.1".parse().expect("ip")))
    );
    let v30 = get(&e, "vlan30");
    assert_eq!(v30.kind, Kind::Vlan);
    assert_eq!(v30.declared_at["address:10.30.0.5/24"], "interfaces:27");
    // Members come up with their bond; lo is not checked; `spare` (no
    // auto) is not brought up and says so.
    let names: Vec<&str> = e.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["bond0", "bond0.20", "ens4", "eth0", "vlan30"]);
    assert_eq!(get(&e, "ens4").declared_at[""], "interfaces:7");
    let un: Vec<&str> = e.unchecked.iter().map(|u| u.at.as_str()).collect();
    for at in [
        "interfaces:14",
        "interfaces:22",
        "interfaces:26",
        "interfaces:29",
    ] {
        assert!(un.contains(&at), "{at} not in {:?}", e.unchecked);
    }
}

/// A bond up with one of its two declared members is no-go naming the
/// member's declaration; a bond that does not exist names its iface line.
#[test]
fn findings_name_the_declaring_line() {
    let mut s = Snapshot::default();
    let mut bond = nic(5, "bond0");
    bond.kind = Some("bond".into());
    bond.mtu = 9000;
    bond.bond = Some(Bond {
        mode: BondMode::Ieee8023ad,
        miimon_ms: 100,
        ..Bond::default()
    });
    for (i, n) in [(2, "eth0"), (5, "bond0")] {
        let x = if n == "bond0" {
            bond.clone()
        } else {
            nic(i, n)
        };
        s.interfaces.insert(i, x);
    }
    s.interfaces.entry(2).and_modify(|i| i.controller = Some(5));
    let e = from_ifupdown("ifupdown", &fixture("bond"), &s).expect("reads");
    let f = rules(&s, &e);
    let msg = |c: Code| {
        f.iter()
            .filter(|r| r.code == c)
            .map(|r| r.message.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        msg(Code::BondMemberMissing).contains("interfaces:11"),
        "{f:?}"
    );
    assert!(
        msg(Code::ExpectedInterfaceMissing).contains("interfaces:18"),
        "{f:?}"
    );
}

#[test]
fn bond_master_members_bare_stanzas_and_dhcp() {
    let text = "auto eth0\niface eth0 inet manual\n  bond-master bond1\nauto bond1\niface bond1\n  bond-mode 1\nallow-hotplug eth2\niface eth2 inet dhcp\n";
    let e = from_ifupdown("x", &[file("i", text)], &Snapshot::default()).expect("reads");
    let b = get(&e, "bond1");
    assert_eq!(b.members, ["eth0"]);
    assert_eq!(b.declared_at["member:eth0"], "i:3");
    assert_eq!(b.bond_mode, Some(BondMode::ActiveBackup));
    assert!(get(&e, "eth2").dhcp);
}

#[test]
fn bad_input_names_file_and_line() {
    let cases = [
        ("  address 10.0.0.1/24\n", "i:1", "outside"),
        (
            "iface e inet static\n address 10.0.0.1/33\n",
            "i:2",
            "not an IP",
        ),
        (
            "iface e inet static\n address fe80::1/64\n",
            "i:2",
            "inet stanza",
        ),
        (
            "iface e inet manual\n bond-mode fastest\n",
            "i:2",
            "bonding mode",
        ),
        (
            "iface e inet static\n netmask 255.0.255.0\n",
            "i:2",
            "netmask",
        ),
        ("iface e inet manual\n mtu 10\n", "i:2", "number"),
        ("auto a/b\n", "i:1", "interface name"),
        ("iface\n", "i:1", "names no interface"),
    ];
    for (text, at, why) in cases {
        let e = from_ifupdown("x", &[file("i", text)], &Snapshot::default()).expect_err(text);
        assert_eq!(e.file, at, "{text}: {e}");
        assert!(e.to_string().contains(why), "{text}: {e}");
    }
}

#[test]
fn bounds_continuations_and_includes() {
    let long = format!(
        "# ok\niface e inet manual\n up {}\n",
        "x".repeat(MAX_IFUPDOWN_LINE_BYTES)
    );
    let e = from_ifupdown("x", &[file("i", &long)], &Snapshot::default()).expect_err("line");
    assert_eq!(e.file, "i:3");
    let big = "#\n".repeat(MAX_IFUPDOWN_FILE_BYTES);
    assert!(from_ifupdown("x", &[file("i", &big)], &Snapshot::default()).is_err());
    let many: Vec<IfupdownFile> = (0..=MAX_IFUPDOWN_FILES)
        .map(|i| file(&i.to_string(), ""))
        .collect();
    assert!(from_ifupdown("x", &many, &Snapshot::default()).is_err());
    // A continued line counts from where it starts.
    let text = "auto e\niface e inet static\n address \\\n  10.0.0.1/24\n";
    let e = from_ifupdown("x", &[file("i", text)], &Snapshot::default()).expect("reads");
    assert_eq!(get(&e, "e").declared_at["address:10.0.0.1/24"], "i:3");
    let inc =
        ifupdown_includes("f", "source a/*\n# source no\nsource-directory /d\n").expect("reads");
    assert_eq!(inc.len(), 2);
    assert!(!inc[0].directory && inc[1].directory);
    assert_eq!(
        (inc[0].pattern.as_str(), inc[1].at.as_str()),
        ("a/*", "f:3")
    );
    assert!(ifupdown_glob("*", "v0") && !ifupdown_glob("*", ".hidden"));
    assert!(ifupdown_glob("eth[0-3]", "eth2") && !ifupdown_glob("eth[!0-3]", "eth2"));
    assert!(ifupdown_dir_entry("bond-0_x") && !ifupdown_dir_entry("x.bak"));
}
