//! A bond os-net-config configures but preflight cannot see the health of
//! (`contrail_vrouter_dpdk` with members and `bond_mode`, `vpp_bond`): no-go
//! unless policy lowers it with a stated reason.

use std::time::{Instant, SystemTime};

use preflight_model::{Finding, Severity, Verdict};

use super::*;
use crate::{Evaluator, RawPolicyConfig};

fn evaluate(policy: &str, file: &str) -> Vec<Finding> {
    let raw: RawPolicyConfig = toml::from_str(policy).expect("policy TOML");
    let config = raw.validate("policy").expect("valid policy");
    let mut ev = Evaluator::new(config);
    ev.set_expectations(Some(load(file, &BTreeMap::new()).expect("sample reads")));
    ev.evaluate(&Snapshot::default(), Instant::now(), SystemTime::now())
}

#[test]
fn contrail_dpdk_bond_sample_is_no_go() {
    let f = evaluate("", "contrail_vrouter_dpdk_bond.json");
    assert_eq!(Verdict::from_findings(&f), Verdict::NoGo, "{f:?}");
    let b = f
        .iter()
        .find(|f| f.code.as_str() == "BOND_HEALTH_UNKNOWN")
        .unwrap_or_else(|| panic!("no BOND_HEALTH_UNKNOWN in {f:?}"));
    assert_eq!(b.severity, Severity::Critical);
    assert_eq!(b.subject, "vhost0");
    for part in [
        "contrail_vrouter_dpdk_bond.json",
        "network_config[0]",
        "em3, em1",
        "bond_mode 2",
        "vrouter",
    ] {
        assert!(b.message.contains(part), "{part}: {}", b.message);
    }
    // Said once, as what it is: not also as an unchecked entry.
    assert!(
        !f.iter()
            .any(|f| f.code == Code::ExpectationUnchecked && f.subject.contains("vhost0")),
        "{f:?}"
    );
}

#[test]
fn vpp_bond_sample_is_no_go_and_a_single_member_vrouter_is_no_bond() {
    let f = evaluate("", "vpp_bond.json");
    let b = f
        .iter()
        .find(|f| f.code == Code::BondHealthUnknown)
        .unwrap_or_else(|| panic!("no BOND_HEALTH_UNKNOWN in {f:?}"));
    assert_eq!(b.subject, "net_bonding0");
    assert!(
        b.message.contains("eth1, eth2")
            && b.message.contains("bonding_options mode=2,xmit_policy=l34")
            && b.message.contains("VPP"),
        "{}",
        b.message
    );
    assert_eq!(Verdict::from_findings(&f), Verdict::NoGo);
    // os-net-config writes no BOND_MODE for one member without bond_mode.
    let f = evaluate("", "contrail_vrouter_dpdk.json");
    assert!(
        !f.iter().any(|f| f.code == Code::BondHealthUnknown),
        "{f:?}"
    );
    assert!(f.iter().any(|f| f.code == Code::ExpectationUnchecked));
}

#[test]
fn policy_lowers_it_only_with_a_reason_shown_in_the_finding() {
    let why = "vrouter bonds are watched by Contrail analytics (TICKET-12)";
    let f = evaluate(
        &format!("[severity]\nBOND_HEALTH_UNKNOWN = \"warning\"\n[reasons]\nBOND_HEALTH_UNKNOWN = \"{why}\"\n"),
        "contrail_vrouter_dpdk_bond.json",
    );
    assert_eq!(Verdict::from_findings(&f), Verdict::Go, "{f:?}");
    let b = f
        .iter()
        .find(|f| f.code == Code::BondHealthUnknown)
        .expect("still reported");
    assert_eq!(b.severity, Severity::Warning);
    assert!(
        b.message.ends_with(&format!(
            "Policy sets BOND_HEALTH_UNKNOWN to warning: {why}"
        )),
        "{}",
        b.message
    );
}

#[test]
fn lowering_without_a_reason_or_turning_it_off_is_a_config_error() {
    let parse = |src: &str| {
        toml::from_str::<RawPolicyConfig>(src)
            .expect("TOML")
            .validate("policy")
    };
    let e = parse("[severity]\nBOND_HEALTH_UNKNOWN = \"warning\"\n").expect_err("no reason");
    assert_eq!(e.key, "policy.severity.BOND_HEALTH_UNKNOWN");
    assert!(
        e.reason.contains("needs the reason under [policy.reasons]"),
        "{}",
        e.reason
    );
    assert!(e.span.is_some());
    let e = parse(
        "[severity]\nBOND_HEALTH_UNKNOWN = \"off\"\n[reasons]\nBOND_HEALTH_UNKNOWN = \"x\"\n",
    )
    .expect_err("off");
    assert!(e.reason.contains("never turned off"), "{}", e.reason);
    let e = parse(
        "[severity]\nBOND_HEALTH_UNKNOWN = \"warning\"\n[reasons]\nBOND_HEALTH_UNKNOWN = \" \"\n",
    )
    .expect_err("blank reason");
    assert_eq!(e.key, "policy.reasons.BOND_HEALTH_UNKNOWN");
    let e = parse("[reasons]\nLINK_FLAPPING = \"noisy lab\"\n").expect_err("reason alone");
    assert_eq!(e.key, "policy.reasons.LINK_FLAPPING");
    assert!(e.reason.contains("has none there"), "{}", e.reason);
    // Critical stays allowed without a reason; other codes need none.
    parse("[severity]\nBOND_HEALTH_UNKNOWN = \"critical\"\nLINK_NO_CARRIER = \"off\"\n")
        .expect("valid");
}
