//! netplan's files as `netplan generate` merges them, on plain values
//! (finding the files is the agent's; the merge fixtures are read here in
//! the order the agent's shadowing gives).

use super::*;
use crate::expect::{Expected, Kind};
use preflight_model::BondMode;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/netplan/");

fn file(rel: &str) -> NetplanFile {
    let path = format!("{FIX}{rel}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    NetplanFile {
        path: rel.to_owned(),
        text,
    }
}

fn text(path: &str, text: &str) -> NetplanFile {
    NetplanFile {
        path: path.to_owned(),
        text: text.to_owned(),
    }
}

fn snap() -> Snapshot {
    let mut s = Snapshot::default();
    let i = preflight_model::Interface {
        index: 4,
        name: "ens4".into(),
        mac: Some("52:54:00:aa:bb:02".into()),
        ..Default::default()
    };
    s.interfaces.insert(i.index, i);
    s
}

fn read(files: &[NetplanFile]) -> Expectations {
    from_netplan("netplan", files, &snap()).unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a>(e: &'a Expectations, name: &str) -> &'a Expected {
    e.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} in {:?}", e.interfaces))
}

/// Later files add to and override earlier ones; lists are appended.
#[test]
fn files_merge_in_order_with_positions() {
    let e = read(&[
        file("merge/lib/05-early.yaml"),
        file("merge/etc/10-base.yaml"),
        file("merge/run/20-extra.yaml"),
    ]);
    let bond = get(&e, "bond0");
    assert_eq!(bond.kind, Kind::LinuxBond);
    assert_eq!(bond.members, ["eth1", "eth2"]);
    assert_eq!(bond.bond_mode, Some(BondMode::ActiveBackup));
    assert_eq!(bond.bond_miimon, Some(100));
    assert_eq!(bond.declared_at[""], "merge/etc/10-base.yaml:8");
    assert_eq!(bond.declared_at["member:eth1"], "merge/etc/10-base.yaml:9");
    assert_eq!(
        bond.declared_at["member:eth2"],
        "merge/run/20-extra.yaml:11"
    );
    assert_eq!(bond.declared_at["miimon"], "merge/run/20-extra.yaml:13");
    assert_eq!(
        bond.default_route,
        Some(Some("192.0.2.1".parse().expect("ip")))
    );
    assert_eq!(bond.declared_at["route"], "merge/run/20-extra.yaml:16");
    let eth1 = get(&e, "eth1");
    // 9000 from the later file overrides 1500; the address stays.
    assert_eq!(eth1.mtu, Some(9000));
    assert_eq!(eth1.declared_at["mtu"], "merge/etc/10-base.yaml:6");
    assert_eq!(eth1.addresses, [("192.0.2.5".parse().expect("ip"), 24)]);
    assert_eq!(
        eth1.declared_at["address:192.0.2.5/24"],
        "merge/lib/05-early.yaml:5"
    );
    // eth2 matched by MAC and renamed: the rename is named, not checked.
    assert!(e.interfaces.iter().any(|i| i.name == "eth2"));
    let at = |what: &str| {
        e.unchecked
            .iter()
            .find(|u| u.what.contains(what))
            .map(|u| u.at.clone())
            .unwrap_or_else(|| panic!("{what} in {:?}", e.unchecked))
    };
    assert_eq!(at("set-name"), "merge/run/20-extra.yaml:7");
    assert_eq!(at("wakeonlan"), "merge/run/20-extra.yaml:8");
    assert_eq!(at("primary"), "merge/run/20-extra.yaml:14");
    assert_eq!(e.files.len(), 3);
}

/// A MAC match without set-name is the NIC with that MAC.
#[test]
fn match_by_mac_names_the_nic() {
    let e = read(&[text(
        "a.yaml",
        "network:\n  version: 2\n  ethernets:\n    lan:\n      match: {macaddress: \"52:54:00:AA:BB:02\"}\n      dhcp4: true\n    wan:\n      match: {name: \"en*\"}\n",
    )]);
    let x = get(&e, "ens4");
    assert!(x.dhcp);
    assert_eq!(x.written_as.as_deref(), Some("lan"));
    assert!(!e.interfaces.iter().any(|i| i.name == "wan"));
    assert!(e
        .unchecked
        .iter()
        .any(|u| u.at == "a.yaml:8" && u.what.contains("glob")));
}

/// Bad input names the file, the line and the key path.
#[test]
fn bad_input_names_file_line_and_key() {
    let err =
        |t: &str| from_netplan("netplan", &[text("bad.yaml", t)], &snap()).expect_err("refused");
    let e = err("network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.1]\n");
    assert_eq!(e.file, "bad.yaml:5");
    assert_eq!(e.path, "network.ethernets.eth0.addresses[0]");
    let e = err("network:\n  version: 1\n");
    assert_eq!(e.file, "bad.yaml:2");
    let e = err("network:\n  bonds:\n    b0:\n      parameters: {mode: fastest}\n");
    assert_eq!(e.file, "bad.yaml:4");
    assert!(e.reason.contains("bonding mode"), "{e}");
    let e = err("network: [\n");
    assert!(e.file.starts_with("bad.yaml:"), "{e}");
    let e = err("- a\n");
    assert_eq!(e.file, "bad.yaml");
}

/// Bounds: an alias bomb, too many files, a file too large.
#[test]
fn bounds_refuse_with_the_file_named() {
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 0..8 {
        bomb.push_str(&format!(
            "b{i}: &b{i} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n",
            p = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            }
        ));
    }
    let e = from_netplan("netplan", &[text("bomb.yaml", &bomb)], &snap()).expect_err("bomb");
    assert!(
        e.file.starts_with("bomb.yaml:") && e.reason.contains("alias"),
        "{e}"
    );
    let many: Vec<NetplanFile> = (0..=MAX_NETPLAN_FILES)
        .map(|i| text(&format!("{i}.yaml"), ""))
        .collect();
    assert!(from_netplan("netplan", &many, &snap()).is_err());
    let big = "#".repeat(MAX_NETPLAN_FILE_BYTES + 1);
    let e = from_netplan("netplan", &[text("big.yaml", &big)], &snap()).expect_err("big");
    assert_eq!(e.file, "big.yaml");
    // Many files each just under the per-file bound are refused together.
    let mut one = String::from("network:\n  ethernets:\n");
    for i in 0..9000 {
        one.push_str(&format!("    e{i}: {{}}\n"));
    }
    let files: Vec<NetplanFile> = (0..12).map(|i| text(&format!("{i}.yaml"), &one)).collect();
    let e = from_netplan("netplan", &files, &snap()).expect_err("together");
    assert!(e.reason.contains("together"), "{e}");
}
