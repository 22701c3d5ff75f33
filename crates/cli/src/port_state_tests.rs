//! Issue 32: one definition of a bond port being up. A port whose carrier
//! is gone while the bonding driver still says MII up (`miimon 0`, or the
//! moment before the next miimon check) is down for the findings, the gate,
//! the metrics, the `inspect` table, its JSON and the page's data alike.
//! Before, the table and `preflight_bond_ports_up` counted MII only and
//! said "2/2 ports up" above BOND_PORT_DOWN.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use preflight_model::report::{Report, ReportBody};
use preflight_model::{
    Bond, BondMode, BondPort, Interface, MiiStatus, NodeState, OperState, PortState, Snapshot,
    Verdict,
};

fn iface(index: u32, name: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        admin_up: true,
        carrier: true,
        oper_state: OperState::Up,
        mtu: 1500,
        speed_mbps: Some(10_000),
        duplex: Some("full".into()),
        ..Interface::default()
    }
}

/// bond0 (active-backup, miimon 0 as in the VM) over m0 (active)
/// and m1, whose carrier is off while its MII status still says up.
fn carrier_lost_mii_up() -> Snapshot {
    let member = |index, name: &str, state, carrier| Interface {
        controller: Some(3),
        carrier,
        bond_port: Some(BondPort {
            mii_status: MiiStatus::Up,
            state,
            ..BondPort::default()
        }),
        ..iface(index, name)
    };
    let bond = Interface {
        kind: Some("bond".into()),
        bond: Some(Bond {
            mode: BondMode::ActiveBackup,
            miimon_ms: 0,
            arp_interval_ms: 0,
            active_port: Some(1),
            ..Bond::default()
        }),
        ..iface(3, "bond0")
    };
    Snapshot {
        interfaces: [
            member(1, "m0", PortState::Active, true),
            member(2, "m1", PortState::Backup, false),
            bond,
        ]
        .into_iter()
        .map(|i| (i.index, i))
        .collect(),
        ..Snapshot::default()
    }
}

#[test]
fn table_json_metrics_and_gate_agree_on_a_port_with_carrier_off_and_mii_up() {
    let snap = carrier_lost_mii_up();
    let mut eval = preflight_policy::Evaluator::new(preflight_policy::PolicyConfig::default());
    let findings = eval.evaluate(&snap, Instant::now(), SystemTime::now());
    let state = Arc::new(NodeState::new("n1".into(), &snap, findings));

    // Findings: m1 is down.
    assert!(
        state
            .findings
            .iter()
            .any(|f| f.code.as_str() == "BOND_PORT_DOWN" && f.subject == "bond0/m1"),
        "{:?}",
        state.findings
    );

    // The inspect table: 1/2 ports up, m1 NO.
    let table = crate::output::table(&state, None);
    assert!(table.contains("1/2 ports up"), "{table}");
    let m1 = table
        .lines()
        .find(|l| l.starts_with("  m1 "))
        .expect("m1's row");
    assert!(m1.split_whitespace().nth(1) == Some("NO"), "{m1}");

    // JSON (what `inspect --json`, the report and the page read).
    let json = serde_json::to_value(&*state).expect("json");
    let ports = json["bonds"][0]["ports"].as_array().expect("ports");
    let up: BTreeMap<&str, bool> = ports
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name"),
                p["up"].as_bool().expect("up"),
            )
        })
        .collect();
    assert_eq!(up, BTreeMap::from([("m0", true), ("m1", false)]));
    // Read back (the aggregator reading a report), `up` is recomputed, not
    // taken from the sender.
    let mut forged = json.clone();
    forged["bonds"][0]["ports"][1]["up"] = serde_json::json!(true);
    let back: NodeState = serde_json::from_value(forged).expect("reads");
    assert_eq!(back.bonds[0].ports_up(), 1);

    // Metrics.
    let m = preflight_agent::metrics::AgentMetrics::new();
    m.update(&state);
    let text = m.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("preflight_bond_ports_up{") && l.ends_with(" 1")),
        "{text}"
    );

    // The gate: the node blocks.
    let mut fleet = preflight_aggregator::fleet::Fleet::new(
        preflight_aggregator::fleet::FleetConfig {
            settle: Duration::ZERO,
            ..preflight_aggregator::fleet::FleetConfig::default()
        },
        SystemTime::now(),
    );
    let report = Report {
        node: "n1".into(),
        boot_id: "b".into(),
        seq: 1,
        body: ReportBody::Full {
            labels: BTreeMap::new(),
            state: Box::new((*state).clone()),
        },
    };
    let now = tokio::time::Instant::now();
    fleet
        .apply_report(&report, now, SystemTime::now())
        .expect("applied");
    let answer = fleet
        .gate(
            &preflight_aggregator::fleet::Selector::parse("").expect("all"),
            now,
            SystemTime::now(),
        )
        .expect("gate");
    assert_eq!(answer.verdict, Verdict::NoGo);
    assert_eq!(answer.blocked, ["n1"]);
}
