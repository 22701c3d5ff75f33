//! systemd-networkd files read into expectations: fixture directories, the
//! rules' findings naming file:line, bad input and bounds.

use preflight_model::{Address, Bond, BondMode, Interface, OperState, Snapshot};

use super::*;
use crate::expect::rules;
use crate::Code;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/networkd");

/// The files of one fixture directory in lexical order, as the agent hands
/// them over after precedence (one directory: nothing to resolve).
fn dir(name: &str) -> Vec<NetworkdFile> {
    let mut paths: Vec<_> = std::fs::read_dir(format!("{DIR}/{name}"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| NetworkdFile {
            path: p.file_name().expect("name").to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p).expect("read"),
            dropins: Vec::new(),
        })
        .collect()
}

fn file(path: &str, text: &str) -> NetworkdFile {
    NetworkdFile {
        path: path.into(),
        text: text.into(),
        dropins: Vec::new(),
    }
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

fn get<'a>(e: &'a Expectations, name: &str) -> &'a Expected {
    e.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not expected in {:?}", e.interfaces))
}

#[test]
fn a_bond_with_members_vlan_and_address_reads_with_positions() {
    let s = snap(vec![
        nic(2, "eth0", "52:54:00:00:00:02"),
        nic(3, "ens4", "52:54:00:00:00:03"),
        nic(4, "lo", "00:00:00:00:00:00"),
    ]);
    let e = from_networkd("networkd", &dir("bond"), &s).expect("reads");
    let b = get(&e, "bond0");
    assert_eq!(b.kind, Kind::LinuxBond);
    assert_eq!(b.members, ["ens4", "eth0"]);
    assert_eq!(b.bond_mode, Some(BondMode::Ieee8023ad));
    assert_eq!(b.bond_miimon, Some(100));
    assert_eq!(b.mtu, Some(9000));
    assert_eq!(b.declared_at[""], "10-bond0.netdev:2");
    assert_eq!(b.declared_at["member:eth0"], "30-members.network:6");
    assert_eq!(b.declared_at["address:192.0.2.10/24"], "40-bond0.network:6");
    assert_eq!(
        b.default_route,
        Some(Some("192.0.2.1".parse().expect("ip")))
    );
    let v = get(&e, "bond0.20");
    assert_eq!(v.kind, Kind::Vlan);
    assert_eq!(v.addresses.len(), 1);
    assert!(e.interfaces.iter().all(|i| i.name != "lo"));
    // Keys not modelled are listed with their line, never dropped.
    let at: Vec<&str> = e.unchecked.iter().map(|u| u.at.as_str()).collect();
    assert!(at.contains(&"20-vlan20.netdev:6"), "{at:?}"); // [VLAN] Id=
    assert!(at.contains(&"50-vlan.network:6"), "{at:?}"); // LLMNR=
}

/// The operator's problem: a bond that came up with fewer members than
/// declared, a bond missing entirely, an address never brought up. Each
/// finding names the file and line of the declaration.
#[test]
fn findings_name_the_declaring_file_and_line() {
    let mut bond = nic(5, "bond0", "52:54:00:00:00:02");
    bond.kind = Some("bond".into());
    bond.bond = Some(Bond {
        mode: BondMode::ActiveBackup,
        miimon_ms: 100,
        ..Bond::default()
    });
    let mut s = snap(vec![nic(2, "eth0", "52:54:00:00:00:02"), bond]);
    s.addresses.push(Address {
        ifindex: 5,
        address: "192.0.2.10".parse().expect("ip"),
        prefix_len: 24,
        permanent: true,
        scope: "global".into(),
    });
    let files = vec![
        file(
            "/etc/systemd/network/10-bond0.netdev",
            "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=802.3ad\n",
        ),
        file(
            "/etc/systemd/network/30-members.network",
            "[Match]\nName=eth0 eth1\n[Network]\nBond=bond0\n",
        ),
        file(
            "/etc/systemd/network/40-bond0.network",
            "[Match]\nName=bond0\n[Network]\nAddress=192.0.2.10/24\nAddress=192.0.2.11/24\n",
        ),
    ];
    let e = from_networkd("systemd-networkd", &files, &s).expect("reads");
    let found = rules(&s, &e);
    let msg = |code: Code| -> Vec<String> {
        found
            .iter()
            .filter(|r| r.code == code)
            .map(|r| r.message.clone())
            .collect()
    };
    let member = msg(Code::BondMemberMissing);
    assert_eq!(member.len(), 1, "{found:?}");
    assert!(
        member[0].contains("eth1")
            && member[0].contains("/etc/systemd/network/30-members.network:4"),
        "{member:?}"
    );
    let mode = msg(Code::BondModeMismatch);
    assert!(
        mode.iter().any(|m| m.contains("10-bond0.netdev:5")),
        "{mode:?}"
    );
    let addr = msg(Code::ExpectedAddressMissing);
    assert_eq!(addr.len(), 1, "{found:?}");
    assert!(
        addr[0].contains("192.0.2.11/24") && addr[0].contains("40-bond0.network:5"),
        "{addr:?}"
    );
    // Without the bond device at all: fail closed, naming the .netdev.
    let s = snap(vec![nic(2, "eth0", "52:54:00:00:00:02")]);
    let found = rules(&s, &from_networkd("n", &files, &s).expect("reads"));
    assert!(
        found
            .iter()
            .any(|r| r.code == Code::ExpectedInterfaceMissing
                && r.message.contains("/etc/systemd/network/10-bond0.netdev:2")),
        "{found:?}"
    );
}

/// networkd gives each link the first matching `.network` in file order:
/// a later file that also matches configures nothing on it. Globs,
/// negation and `MACAddress=` match as networkd matches them.
#[test]
fn first_match_wins_with_globs_negation_and_mac() {
    let s = snap(vec![
        nic(2, "eth0", "52:54:00:00:00:02"),
        nic(3, "eth1", "52:54:00:00:00:03"),
        nic(4, "enp3s0", "52:54:00:AA:00:04"),
    ]);
    let files = vec![
        file(
            "10-mac.network",
            "[Match]\nMACAddress=52:54:00:aa:00:04\n[Network]\nAddress=10.0.4.1/24\n",
        ),
        file(
            "20-eth.network",
            "[Match]\nName=!eth1 enp*\n[Network]\nAddress=10.0.0.1/24\n",
        ),
        file("30-all.network", "[Match]\nName=e*\n[Network]\nDHCP=yes\n"),
    ];
    let e = from_networkd("n", &files, &s).expect("reads");
    assert_eq!(get(&e, "enp3s0").addresses.len(), 1);
    assert!(
        !get(&e, "enp3s0").dhcp,
        "30-all must not apply after 10-mac"
    );
    // `!` negates the whole list: eth0 is neither eth1 nor enp*.
    assert_eq!(get(&e, "eth0").addresses.len(), 1);
    assert_eq!(get(&e, "eth0").declared_at[""], "20-eth.network:2");
    assert!(get(&e, "eth1").dhcp && get(&e, "eth1").addresses.is_empty());
}

/// A drop-in adds to its main file, and a `[Match]` preflight cannot
/// evaluate is listed for each link it may apply to, not guessed.
#[test]
fn dropins_add_and_unsupported_matches_are_listed() {
    let s = snap(vec![nic(2, "eth0", "52:54:00:00:00:02")]);
    let mut f = file(
        "10-eth0.network",
        "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.1/24\n",
    );
    f.dropins.push((
        "10-eth0.network.d/mtu.conf".into(),
        "[Link]\nMTUBytes=9000\n[Network]\nAddress=10.0.1.1/24\n".into(),
    ));
    let e = from_networkd("n", &[f], &s).expect("reads");
    let x = get(&e, "eth0");
    assert_eq!(x.mtu, Some(9000));
    assert_eq!(x.declared_at["mtu"], "10-eth0.network.d/mtu.conf:2");
    assert_eq!(x.addresses.len(), 2);
    let files = vec![
        file(
            "05-path.network",
            "[Match]\nName=eth*\nPath=pci-0000:00:03.0\n[Network]\nDHCP=yes\n",
        ),
        file("06-other.network", "[Match]\nName=wlan*\nType=wlan\n"),
        file("07-nomatch.network", "[Network]\nDHCP=yes\n"),
    ];
    let e = from_networkd("n", &files, &s).expect("reads");
    assert!(e.interfaces.is_empty(), "{:?}", e.interfaces);
    let at: Vec<&str> = e.unchecked.iter().map(|u| u.at.as_str()).collect();
    // 06 matches no link by name, so its Type= decides nothing.
    assert_eq!(
        at,
        ["07-nomatch.network:1", "05-path.network:3"],
        "{:?}",
        e.unchecked
    );
    let found = rules(&s, &e);
    assert!(
        found.iter().all(|r| r.code == Code::ExpectationUnchecked),
        "{found:?}"
    );
    assert_eq!(found.len(), 2);
}

/// Bad input is an error naming file:line and what is wrong; bounds hold.
#[test]
fn bad_input_names_file_and_line() {
    let s = Snapshot::default();
    let cases = [
        (
            "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.1\n",
            "a.network:4",
            "prefix length",
        ),
        (
            "[Match]\nName=eth0\n[Network\n",
            "a.network:3",
            "section header",
        ),
        ("[Match]\nName=eth0\njunk\n", "a.network:3", "Key=Value"),
        ("Name=eth0\n", "a.network:1", "before any [Section]"),
        ("[Match]\nMACAddress=zz:00\n", "a.network:2", "MAC"),
        (
            "[Match]\nName=eth0\n[Network]\nBond=a-name-far-too-long\n",
            "a.network:4",
            "interface name",
        ),
        (
            "[Match]\nName=eth0\n[Link]\nMTUBytes=12\n",
            "a.network:4",
            "MTU",
        ),
        (
            &format!("[Match]\nName={}\n", "x".repeat(5000)),
            "a.network:2",
            "bytes",
        ),
    ];
    for (text, at, why) in cases {
        let e = from_networkd("n", &[file("a.network", text)], &s).expect_err(at);
        assert_eq!(e.file, at, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let netdev = [
        (
            "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMode=fastest\n",
            "b.netdev:5",
            "bonding mode",
        ),
        (
            "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMIIMonitorSec=soon\n",
            "b.netdev:5",
            "time span",
        ),
        ("[NetDev]\nKind=bond\n", "b.netdev", "Name"),
    ];
    for (text, at, why) in netdev {
        let e = from_networkd("n", &[file("b.netdev", text)], &s).expect_err(at);
        assert_eq!(e.file, at, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let big = file("c.network", &"#".repeat(MAX_NETWORKD_FILE_BYTES + 1));
    assert!(from_networkd("n", &[big], &s)
        .expect_err("big")
        .to_string()
        .contains("bytes"));
    let many: Vec<NetworkdFile> = (0..=MAX_NETWORKD_FILES)
        .map(|i| file(&format!("{i}.network"), "[Match]\nName=x\n"))
        .collect();
    assert!(from_networkd("n", &many, &s)
        .expect_err("many")
        .to_string()
        .contains("files"));
    // Time spans as systemd writes them.
    let ok = "[NetDev]\nName=bond0\nKind=bond\n[Bond]\nMIIMonitorSec=1s 500ms\n";
    let e = from_networkd("n", &[file("b.netdev", ok)], &s).expect("reads");
    assert_eq!(get(&e, "bond0").bond_miimon, Some(1500));
}

/// A long key or value reaches messages only as an excerpt (control
/// characters are escaped where messages are rendered, as for every
/// finding).
#[test]
fn long_values_from_files_are_excerpted() {
    let s = Snapshot::default();
    let text = format!("[NetDev]\nName=b0\nKind=bond\nEvil={}\n", "v".repeat(3000));
    let e = from_networkd("n", &[file("a.netdev", &text)], &s).expect("reads");
    let what = &e.unchecked[0].what;
    assert!(what.len() < 200 && what.contains("3000 bytes"), "{what}");
}
