//! Hostile os-net-config files (issue 37): an alias bomb, deep nesting, an
//! oversized file and an oversized value. Each must end in a short error
//! naming the file and the bound, quickly and in little memory, never in an
//! exhausted node or a message that quotes megabytes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::super::*;

/// A YAML alias bomb: `levels` anchors, each a list of ten aliases of the
/// one before, so the last expands to 10^`levels` strings; the file stays a
/// few hundred bytes. Its last anchor is quoted as an `mtu`, the value an
/// error message would quote.
fn alias_bomb(levels: u8) -> String {
    let mut text = String::from("l0: &l0 \"xxxxxxxx\"\n");
    for l in 1..=levels {
        let prev = format!("*l{}", l - 1);
        let list = [prev.as_str(); 10].join(",");
        text.push_str(&format!("l{l}: &l{l} [{list}]\n"));
    }
    text.push_str(&format!(
        "network_config:\n  - type: interface\n    name: eth0\n    mtu: *l{levels}\n"
    ));
    text
}

fn load(text: &str) -> Result<Expectations, ExpectError> {
    let doc = parse_document("/etc/os-net-config/config.yaml", text)?;
    from_os_net_config("/etc/os-net-config/config.yaml", &doc, &BTreeMap::new())
}

/// The audit's file: 10^9 expansions in about 600 bytes. Before the bound
/// it ran `inspect` into a 4 GiB allocation failure.
#[test]
fn an_alias_bomb_of_a_billion_nodes_is_refused_at_once() {
    let text = alias_bomb(9);
    assert!(text.len() < 700, "{} bytes", text.len());
    let started = Instant::now();
    let e = load(&text).expect_err("an alias bomb is refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.file, "/etc/os-net-config/config.yaml");
    assert!(
        e.reason.contains("100000") && e.reason.contains("alias"),
        "{e}"
    );
    assert!(e.to_string().len() < 400, "{e}");
}

/// A million expansions fit in memory, so the old loader accepted them and
/// quoted the whole expansion (megabytes) in the MTU error: refused too.
#[test]
fn an_alias_bomb_of_a_million_nodes_is_refused() {
    let e = load(&alias_bomb(6)).expect_err("a million nodes are refused");
    assert!(e.reason.contains("alias"), "{}", e.to_string().len());
    assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
}

/// A bomb in YAML's flow style starts with `{` like JSON: the refusal
/// names the bound, not the JSON syntax error.
#[test]
fn a_json_looking_alias_bomb_names_the_bound() {
    let mut text = String::from("{l0: &l0 x");
    for l in 1..=9 {
        let list = [format!("*l{}", l - 1).as_str(); 10].join(",");
        text.push_str(&format!(", l{l}: &l{l} [{list}]"));
    }
    text.push_str(", last: *l9}");
    let e = parse_document("t.json", &text).expect_err("refused");
    assert!(e.reason.contains("alias"), "{e}");
}

/// Anchors and aliases as people use them (one block reused a few times)
/// still read as before.
#[test]
fn ordinary_aliases_still_read() {
    let text = "base: &nic {type: interface, use_dhcp: false, mtu: 9000}\nnetwork_config:\n  - type: linux_bond\n    name: bond0\n    members:\n      - <<: *nic\n        name: eth0\n      - *nic\n";
    let doc = parse_document("t.yaml", text).expect("reads");
    assert_eq!(doc["base"]["mtu"], 9000);
    assert_eq!(doc["network_config"][0]["members"][1]["type"], "interface");
}

/// A scalar anchored once and aliased many times: few nodes, many bytes.
#[test]
fn an_alias_bomb_of_bytes_is_refused() {
    let big = "y".repeat(64 * 1024);
    let mut text = format!("s: &s \"{big}\"\nl: [");
    text.push_str(&vec!["*s"; 2000].join(","));
    text.push_str("]\nnetwork_config: []\n");
    let e = parse_document("t.yaml", &text).expect_err("128 MB of expansion is refused");
    assert!(e.reason.contains("bytes"), "{e}");
    assert!(e.to_string().len() < 400, "{e}");
}

/// Nesting deep enough to overflow a recursive walk is refused while read
/// (yaml-rust2's own limit; kept by this loader).
#[test]
fn deep_nesting_is_refused() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = parse_document("t.yaml", &text).expect_err("too deep");
    assert!(e.reason.contains("recursion limit"), "{e}");
}

/// A file larger than any os-net-config file is refused before parsing.
#[test]
fn an_oversized_document_is_refused() {
    let text = format!("network_config: []\n# {}\n", "z".repeat(1024 * 1024));
    let e = parse_document("t.yaml", &text).expect_err("too large");
    assert!(e.reason.contains("1048576"), "{e}");
}

/// The audit's 2 MB `mtu` string: as a file it is over the size bound; as
/// a document (a value of any size reaching the rules) the error quotes a
/// short excerpt and the value's length, not the value.
#[test]
fn a_two_megabyte_mtu_gives_a_short_message() {
    let mtu = "9".repeat(2 * 1024 * 1024);
    let text =
        format!("network_config:\n  - type: interface\n    name: eth0\n    mtu: \"{mtu}\"\n");
    let msg = load(&text).expect_err("over the size bound").to_string();
    assert!(
        msg.len() < 300 && msg.contains("1048576"),
        "{} bytes",
        msg.len()
    );
    let doc =
        serde_json::json!({"network_config": [{"type": "interface", "name": "eth0", "mtu": mtu}]});
    let msg = from_os_net_config("config.json", &doc, &BTreeMap::new())
        .expect_err("not an MTU")
        .to_string();
    assert!(
        msg.len() < 300,
        "{} bytes: {}",
        msg.len(),
        &msg[..300.min(msg.len())]
    );
    assert!(
        msg.contains("(2097152 bytes)") && msg.contains("not an MTU"),
        "{msg}"
    );
    let list = serde_json::json!({"network_config": [{"type": "interface", "name": "eth0", "mtu": vec![1; 500_000]}]});
    let msg = from_os_net_config("config.json", &list, &BTreeMap::new())
        .expect_err("not an MTU")
        .to_string();
    assert!(msg.len() < 300 && msg.contains("(1000001 bytes)"), "{msg}");
}

/// Every value a file puts into a message is an excerpt: addresses,
/// next hops, unmodelled entry types and names.
#[test]
fn oversized_values_are_quoted_as_excerpts() {
    let long = "q".repeat(512 * 1024);
    let cases = [
        format!("network_config:\n  - type: interface\n    name: eth0\n    addresses:\n      - ip_netmask: \"{long}\"\n"),
        format!("network_config:\n  - type: linux_bond\n    name: \"{long}\"\n"),
        format!("network_config:\n  - type: interface\n    name: eth0\n    routes:\n      - default: true\n        next_hop: \"{long}\"\n"),
    ];
    for text in cases {
        let msg = load(&text).expect_err("bad value").to_string();
        assert!(
            msg.len() < 300 && msg.contains("(524288 bytes)"),
            "{}",
            &msg[..300.min(msg.len())]
        );
    }
    let text = format!(
        "network_config:\n  - type: \"{long}\"\n    name: \"{}\"\n",
        &long[..300_000]
    );
    let e = load(&text).expect("an unmodelled type is no error");
    let snap = preflight_model::Snapshot::default();
    for r in rules(&snap, &e) {
        assert!(
            r.message.len() < 600,
            "{:?}: {} bytes",
            r.code,
            r.message.len()
        );
        assert!(
            r.subject.len() < 300,
            "{:?}: {} bytes",
            r.code,
            r.subject.len()
        );
    }
}
