//! What a failed os-net-config run leaves: os-net-config 18.x's
//! `fallback_config` (the project's own sample file) and TripleO Wallaby's
//! safe defaults, judged with the kernel's state and the DHCP probes.

use std::time::{Instant, SystemTime};

use preflight_model::{DhcpProbeResult, FallbackKind, Severity, Verdict};

use super::*;
use crate::{Evaluator, PolicyConfig};

/// eth0..eth3; `down` ones without carrier.
fn node(down: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..4u32 {
        let name = format!("eth{i}");
        let mac = format!("52:54:00:00:00:{i:02x}");
        s.interfaces.insert(
            i + 2,
            nic(i + 2, &name, !down.contains(&name.as_str()), &mac),
        );
    }
    s
}

/// The sample's nicN on eth0..eth3, with the installed version given.
fn sample(version: Option<&str>) -> Expectations {
    let nics = BTreeMap::from([
        ("nic1".to_owned(), "eth0".to_owned()),
        ("nic2".to_owned(), "eth1".to_owned()),
        ("nic3".to_owned(), "eth2".to_owned()),
        ("nic4".to_owned(), "eth3".to_owned()),
    ]);
    let mut e = load("fallback_config.yaml", &nics).expect("sample reads");
    e.nics.osnc.version = version.map(str::to_owned);
    e
}

fn probe(interface: &str, offered: bool) -> DhcpProbeResult {
    DhcpProbeResult {
        interface: interface.into(),
        offered,
        invalid_offer: None,
        server: None,
        address: None,
        rtt_ms: None,
        error: None,
        checked_at: SystemTime::UNIX_EPOCH,
    }
}

fn findings(
    s: &Snapshot,
    e: Expectations,
    dhcp: Vec<DhcpProbeResult>,
) -> Vec<preflight_model::Finding> {
    let mut ev = Evaluator::new(PolicyConfig::default());
    ev.set_expectations(Some(e));
    ev.set_dhcp_probes(dhcp);
    ev.evaluate(s, Instant::now(), SystemTime::now())
}

#[test]
fn the_sample_fallback_keeps_the_node_reachable_through_its_static_address() {
    let e = sample(Some("18.1.0"));
    let f = e.fallback.as_ref().expect("an os-net-config file");
    assert_eq!(f.entries, 1);
    let p = predict_fallback(&node(&[]), &e, &[]).expect("prediction");
    assert_eq!(p.kind, FallbackKind::FallbackConfig);
    assert_eq!(p.reachable, Some(true), "{p:?}");
    let i = &p.interfaces[0];
    assert_eq!(
        (i.name.as_str(), i.written_as.as_deref()),
        ("eth1", Some("nic2"))
    );
    assert_eq!(i.addresses, ["192.168.122.100/24"]);
    assert_eq!(i.gateway.as_deref(), Some("192.168.122.1"));
    assert_eq!(i.link, Some(true));
    assert!(p.why.contains("reachable through eth1"), "{}", p.why);
    assert!(!findings(&node(&[]), e, Vec::new())
        .iter()
        .any(|f| f.code == Code::FallbackStrandsNode));
}

#[test]
fn a_fallback_on_a_nic_without_carrier_strands_the_node() {
    let s = node(&["eth1"]);
    let e = sample(None);
    let p = predict_fallback(&s, &e, &[]).expect("prediction");
    assert_eq!(p.reachable, Some(false), "{p:?}");
    let f = findings(&s, e, Vec::new());
    let x = f
        .iter()
        .find(|f| f.code.as_str() == "FALLBACK_STRANDS_NODE")
        .unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!(
        (x.severity, x.subject.as_str()),
        (Severity::Critical, "fallback")
    );
    assert!(x.message.contains("eth1: no carrier"), "{}", x.message);
    assert_eq!(Verdict::from_findings(&f), Verdict::NoGo);
}

#[test]
fn more_than_two_entries_apply_none_and_a_gateway_off_link_gives_no_way_out() {
    let text = "fallback_config:\n- {type: interface, name: eth0, use_dhcp: true}\n- {type: interface, name: eth1, use_dhcp: true}\n- {type: interface, name: eth2, use_dhcp: true}\nnetwork_config:\n- {type: interface, name: eth0, use_dhcp: true}\n";
    let doc = parse_document("c.yaml", text).expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads");
    let p = predict_fallback(&node(&[]), &e, &[probe("eth0", true)]).expect("prediction");
    assert_eq!(p.reachable, Some(false));
    assert!(p.why.contains("has 3 entries"), "{}", p.why);

    let text = "fallback_config:\n- type: interface\n  name: eth0\n  addresses: [{ip_netmask: 198.51.100.5/24}]\n  routes: [{default: true, next_hop: 192.0.2.1}]\nnetwork_config:\n- {type: interface, name: eth0, use_dhcp: true}\n";
    let doc = parse_document("c.yaml", text).expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads");
    let p = predict_fallback(&node(&[]), &e, &[]).expect("prediction");
    assert_eq!(p.reachable, Some(false), "{p:?}");
    assert!(p.why.contains("gateway 192.0.2.1 is outside"), "{}", p.why);
}

/// Wallaby: DHCP on every NIC with carrier; a probe through a NIC says
/// whether a server answers there (one through the configured bond0 says
/// nothing while no kernel bond0 says which port it left through).
#[test]
fn wallaby_safe_defaults_are_judged_by_the_dhcp_probe() {
    let nics = BTreeMap::from([
        ("nic1".to_owned(), "eth0".to_owned()),
        ("nic2".to_owned(), "eth1".to_owned()),
    ]);
    let doc = parse_document(
        "config.yaml",
        "network_config:\n- type: linux_bond\n  name: bond0\n  addresses: [{ip_netmask: 192.0.2.10/24}]\n  members:\n  - {type: interface, name: nic1}\n  - {type: interface, name: nic2}\n",
    )
    .expect("yaml");
    let mut e = from_os_net_config("config.yaml", &doc, &nics).expect("reads");
    e.nics.osnc.version = Some("14.2.1".into());
    let s = node(&["eth2", "eth3"]);
    let p = predict_fallback(&s, &e, &[]).expect("prediction");
    assert_eq!(p.kind, FallbackKind::SafeDefaults);
    assert_eq!(p.reachable, None, "not probed: cannot tell");
    let names: Vec<(&str, Option<bool>)> = p
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.link))
        .collect();
    assert_eq!(
        names,
        [
            ("eth0", Some(true)),
            ("eth1", Some(true)),
            ("eth2", Some(false)),
            ("eth3", Some(false))
        ]
    );
    let p = predict_fallback(&s, &e, &[probe("bond0", true)]).expect("prediction");
    assert_eq!(p.reachable, None, "{p:?}");
    let p = predict_fallback(&s, &e, &[probe("eth0", true)]).expect("prediction");
    assert_eq!(p.reachable, Some(true), "{p:?}");
    assert!(
        p.why.contains("14.2.0's rules: 14.2.1 is installed"),
        "{}",
        p.why
    );
    let f = findings(
        &s,
        e.clone(),
        vec![probe("eth0", false), probe("eth1", false)],
    );
    let x = f
        .iter()
        .find(|f| f.code == Code::FallbackStrandsNode)
        .unwrap_or_else(|| panic!("{f:?}"));
    assert!(
        x.message.contains("eth0: no DHCP server answered"),
        "{}",
        x.message
    );
    // A probe on a VLAN says nothing of untagged DHCP on the NICs.
    let p = predict_fallback(&s, &e, &[probe("vlan20", true)]).expect("prediction");
    assert_eq!(p.reachable, None);
    // A kernel bond's port has a MAC the bond set: safe defaults skip it.
    let mut s = s;
    for i in s.interfaces.values_mut().filter(|i| i.name == "eth0") {
        i.bond_port = Some(preflight_model::BondPort::default());
    }
    let p = predict_fallback(&s, &e, &[probe("eth1", true)]).expect("prediction");
    assert_eq!(p.reachable, Some(true), "{p:?}");
    assert!(
        p.why
            .starts_with("reachable through eth1; bond ports eth0 left out"),
        "{}",
        p.why
    );
    assert!(!p.interfaces.iter().any(|i| i.name == "eth0"));
}

#[test]
fn without_a_fallback_section_18x_has_none_and_no_finding() {
    let doc = parse_document(
        "c.yaml",
        "network_config:\n- {type: interface, name: eth0, use_dhcp: true}\n",
    )
    .expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads");
    let p = predict_fallback(&node(&["eth0"]), &e, &[]).expect("prediction");
    assert_eq!((p.kind, p.reachable), (FallbackKind::None, None));
    assert!(p.why.contains("no fallback_config"), "{}", p.why);
}

/// `fallback_config` came in os-net-config 18.1.0 (commit c632714): an
/// older 15.x-18.0.x restores nothing after a failed run.
#[test]
fn fallback_config_is_applied_only_from_18_1_0() {
    for v in ["15.0.0", "17.1.3", "18.0.5"] {
        let p = predict_fallback(&node(&[]), &sample(Some(v)), &[]).expect("prediction");
        assert_eq!((p.kind, p.reachable), (FallbackKind::None, None), "{v}");
        assert!(
            p.why.contains(&format!("{v} is installed")) && p.why.contains("18.1.0"),
            "{}",
            p.why
        );
    }
    for v in [Some("18.1.0"), Some("18.1.0-1.el9osp"), Some("19.0"), None] {
        let p = predict_fallback(&node(&[]), &sample(v), &[]).expect("prediction");
        assert_eq!(p.kind, FallbackKind::FallbackConfig, "{v:?}");
    }
}

/// eth0..eth3 with the kernel bond0 over eth0 and eth1, `active` its
/// active port.
fn bonded(active: &str) -> Snapshot {
    let mut s = node(&[]);
    let mut b = nic(10, "bond0", true, "52:54:00:00:00:00");
    b.bond = Some(preflight_model::Bond {
        mode: preflight_model::BondMode::ActiveBackup,
        active_port: s
            .interfaces
            .values()
            .find(|i| i.name == active)
            .map(|i| i.index),
        ..preflight_model::Bond::default()
    });
    s.interfaces.insert(10, b);
    for i in s
        .interfaces
        .values_mut()
        .filter(|i| i.name == "eth0" || i.name == "eth1")
    {
        i.controller = Some(10);
        i.bond_port = Some(preflight_model::BondPort::default());
    }
    s
}

/// A DHCP probe on bond0 leaves through its active port only: it says
/// nothing of DHCP on the backup port.
#[test]
fn a_bond_probe_answers_only_for_the_active_port() {
    let fallback_on = |nic: &str| {
        let text = format!("fallback_config:\n- {{type: interface, name: {nic}, use_dhcp: true}}\nnetwork_config:\n- type: linux_bond\n  name: bond0\n  use_dhcp: true\n  members:\n  - {{type: interface, name: eth0}}\n  - {{type: interface, name: eth1}}\n");
        let doc = parse_document("c.yaml", &text).expect("yaml");
        from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads")
    };
    let p = predict_fallback(
        &bonded("eth0"),
        &fallback_on("eth1"),
        &[probe("bond0", true)],
    )
    .expect("prediction");
    assert_eq!(p.interfaces[0].dhcp_offered, None, "{p:?}");
    assert_eq!(p.reachable, None, "{p:?}");
    let p = predict_fallback(
        &bonded("eth0"),
        &fallback_on("eth0"),
        &[probe("bond0", true)],
    )
    .expect("prediction");
    assert_eq!(p.reachable, Some(true), "{p:?}");
    let p = predict_fallback(
        &bonded("eth1"),
        &fallback_on("eth1"),
        &[probe("bond0", false)],
    )
    .expect("prediction");
    assert_eq!(p.reachable, Some(false), "{p:?}");
    // No kernel bond0 (nothing says which port is active): cannot tell.
    let p = predict_fallback(&node(&[]), &fallback_on("eth0"), &[probe("bond0", true)])
        .expect("prediction");
    assert_eq!(p.reachable, None, "{p:?}");
}

/// A static address with no default route is reachable from its own
/// subnet only, and preflight does not know where SSH comes from.
#[test]
fn a_static_fallback_without_a_default_route_cannot_be_told() {
    let text = "fallback_config:\n- type: interface\n  name: eth0\n  addresses: [{ip_netmask: 198.51.100.5/24}]\nnetwork_config:\n- {type: interface, name: eth0, use_dhcp: true}\n";
    let doc = parse_document("c.yaml", text).expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads");
    let p = predict_fallback(&node(&[]), &e, &[]).expect("prediction");
    assert_eq!(p.reachable, None, "{p:?}");
    assert!(p.why.contains("no default route"), "{}", p.why);
    assert!(!findings(&node(&[]), e, Vec::new())
        .iter()
        .any(|f| f.code == Code::FallbackStrandsNode));
}

/// os-net-config treats a `fallback_config` that is no list as absent.
#[test]
fn a_fallback_config_that_is_no_list_is_absent_with_a_warning() {
    let text = "fallback_config: {type: interface, name: eth0, use_dhcp: true}\nnetwork_config:\n- {type: interface, name: eth0, use_dhcp: true}\n";
    let doc = parse_document("c.yaml", text).expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads despite it");
    let p = predict_fallback(&node(&[]), &e, &[]).expect("prediction");
    assert_eq!((p.kind, p.reachable), (FallbackKind::None, None), "{p:?}");
    assert!(p.why.contains("not a list"), "{}", p.why);
    let f = findings(&node(&[]), e, Vec::new());
    let w = f
        .iter()
        .find(|f| f.code == Code::ExpectationUnchecked && f.subject == "fallback_config")
        .unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!(w.severity, Severity::Warning);
    assert!(w.message.contains("not a list"), "{}", w.message);
}

/// The same os-net-config file as the agent's file and in `[expect]`:
/// one FALLBACK_STRANDS_NODE, not two.
#[test]
fn one_fallback_finding_at_most() {
    let s = node(&["eth1"]);
    let mut ev = Evaluator::new(PolicyConfig::default());
    ev.set_expectations(Some(sample(None)));
    ev.set_configured_expectations(Some(sample(None)));
    let f = ev.evaluate(&s, Instant::now(), SystemTime::now());
    assert_eq!(
        f.iter()
            .filter(|f| f.code == Code::FallbackStrandsNode)
            .count(),
        1,
        "{f:?}"
    );
}

/// A fallback bond picks its active port when it comes up: an answer on
/// one of its NICs says nothing unless every one of them agrees.
#[test]
fn a_fallback_bond_counts_an_answer_only_when_all_its_nics_agree() {
    let text = "fallback_config:\n- type: linux_bond\n  name: fb0\n  use_dhcp: true\n  members:\n  - {type: interface, name: eth0}\n  - {type: interface, name: eth1}\nnetwork_config:\n- {type: interface, name: eth2, use_dhcp: true}\n";
    let doc = parse_document("c.yaml", text).expect("yaml");
    let e = from_os_net_config("c.yaml", &doc, &BTreeMap::new()).expect("reads");
    let s = node(&[]);
    let p = predict_fallback(&s, &e, &[probe("eth0", true)]).expect("prediction");
    assert_eq!(p.reachable, None, "{p:?}");
    let p =
        predict_fallback(&s, &e, &[probe("eth0", true), probe("eth1", false)]).expect("prediction");
    assert_eq!(p.reachable, None, "{p:?}");
    let p =
        predict_fallback(&s, &e, &[probe("eth0", true), probe("eth1", true)]).expect("prediction");
    assert_eq!(p.reachable, Some(true), "{p:?}");
    let p = predict_fallback(&s, &e, &[probe("eth0", false), probe("eth1", false)])
        .expect("prediction");
    assert_eq!(p.reachable, Some(false), "{p:?}");
}
