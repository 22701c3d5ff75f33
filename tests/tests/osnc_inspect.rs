//! `preflight inspect` with an os-net-config file, end to end through the
//! binary on real netlink in a namespace the test made: a bond preflight
//! cannot see is no-go unless policy lowers it with a reason, and the nicN
//! table says which os-net-config version's rules it followed. Needs root
//! (CI runs as root); never skips.

use std::path::{Path, PathBuf};
use std::process::Output;

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, workspace};
use serde_json::Value;

fn sample(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/os-net-config").join(name)
}

/// A node with one NIC-like link up and addressed.
fn node() -> Netns {
    let ns = Netns::new("osnci");
    for l in [
        "link add v0 type veth peer name v1",
        "link set v0 up",
        "link set v1 up",
        "addr add 192.0.2.10/24 dev v0",
    ] {
        ns.ip(l);
    }
    ns
}

fn inspect(ns: &Netns, osnc: &Path, config: Option<&Path>, json: bool) -> Output {
    let mut c = ns.command(preflight_bin());
    c.arg("inspect").arg("--os-net-config").arg(osnc);
    if json {
        c.arg("--json");
    }
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    c.output().expect("preflight runs")
}

fn finding<'a>(v: &'a Value, code: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {v}"))
}

#[test]
fn contrail_dpdk_bond_is_no_go_unless_lowered_with_a_reason() {
    let ns = node();
    let file = sample("contrail_vrouter_dpdk_bond.json");
    let out = inspect(&ns, &file, None, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    let f = finding(&v, "BOND_HEALTH_UNKNOWN");
    assert_eq!(
        (f["severity"].as_str(), f["subject"].as_str()),
        (Some("critical"), Some("vhost0"))
    );
    let msg = f["message"].as_str().expect("message");
    assert!(
        msg.contains("network_config[0]") && msg.contains("em3, em1"),
        "{msg}"
    );

    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("preflight.toml");
    let why = "vrouter bonds are watched by Contrail analytics (OPS-1234)";
    std::fs::write(
        &cfg,
        format!("[policy.severity]\nBOND_HEALTH_UNKNOWN = \"warning\"\n\n[policy.reasons]\nBOND_HEALTH_UNKNOWN = \"{why}\"\n"),
    )
    .expect("config");
    let out = inspect(&ns, &file, Some(&cfg), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("WARNING  BOND_HEALTH_UNKNOWN"), "{text}");
    assert!(
        text.contains(&format!(
            "Policy sets BOND_HEALTH_UNKNOWN to warning: {why}"
        )),
        "{text}"
    );

    std::fs::write(
        &cfg,
        "# lowered\n[policy.severity]\nBOND_HEALTH_UNKNOWN = \"warning\"\n",
    )
    .expect("config");
    let out = inspect(&ns, &file, Some(&cfg), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3: key `policy.severity.BOND_HEALTH_UNKNOWN`",
            cfg.display()
        )) && err.contains("[policy.reasons]"),
        "{err}"
    );
}

#[test]
fn the_nic_table_says_which_os_net_config_rules_it_followed() {
    let ns = node();
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("config.yaml");
    std::fs::write(
        &file,
        "network_config:\n  - type: interface\n    name: nic1\n    use_dhcp: true\n",
    )
    .expect("os-net-config file");
    let out = inspect(&ns, &file, None, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["nic_mapping"].get("nic1").is_some(), "{v}");
    // This host has no os-net-config package: the newest rules, and why.
    let rules = &v["nic_rules"];
    assert_eq!(rules["followed"], "18.1.0", "{v}");
    assert!(rules.get("installed").is_none(), "{rules}");
    assert!(
        rules["why"]
            .as_str()
            .is_some_and(|w| w.contains("could not be read")),
        "{rules}"
    );
    let out = inspect(&ns, &file, None, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("following os-net-config 18.1.0's rules, the newest: the installed version could not be read"),
        "{text}"
    );
}

/// os-net-config's own sample with `fallback_config` on nic2: this node
/// has no NIC for nic2 (veths are not NICs to os-net-config), so a failed
/// run's fallback would configure nothing that exists.
#[test]
fn a_fallback_that_would_strand_the_node_is_shown_and_is_no_go() {
    let ns = node();
    let file = sample("fallback_config.yaml");
    let out = inspect(&ns, &file, None, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    let fb = &v["fallback"];
    assert_eq!(
        (fb["kind"].as_str(), fb["reachable"].as_bool()),
        (Some("fallback_config"), Some(false)),
        "{fb}"
    );
    assert_eq!(fb["interfaces"][0]["name"], "nic2", "{fb}");
    assert_eq!(
        fb["interfaces"][0]["addresses"][0], "192.168.122.100/24",
        "{fb}"
    );
    let f = finding(&v, "FALLBACK_STRANDS_NODE");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("nic2: no such interface")),
        "{f}"
    );
    let out = inspect(&ns, &file, None, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("if os-net-config fails: its fallback_config: STRANDED"),
        "{text}"
    );
    assert!(text.contains("192.168.122.100/24"), "{text}");
}
