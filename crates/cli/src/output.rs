//! Human output of `preflight inspect`: compact tables and findings, worst
//! first. JSON output is the serde form of [`NodeState`].

use std::fmt::Write as _;

use preflight_model::{lacp, BondKind, BondView, MiiStatus, NodeState, PortState, Severity};

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn lacp_state(s: Option<u8>) -> String {
    let Some(s) = s else { return "-".into() };
    let mut out = String::new();
    for (bit, c) in [
        (lacp::ACTIVITY, 'A'),
        (lacp::TIMEOUT, 'T'),
        (lacp::AGGREGATION, 'G'),
        (lacp::SYNCHRONIZATION, 'S'),
        (lacp::COLLECTING, 'C'),
        (lacp::DISTRIBUTING, 'D'),
        (lacp::DEFAULTED, 'F'),
        (lacp::EXPIRED, 'E'),
    ] {
        out.push(if s & bit != 0 { c } else { '.' });
    }
    out
}

/// Renders the table view.
pub fn table(state: &NodeState, source_note: Option<&str>) -> String {
    let mut o = String::new();
    let crit = state
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .count();
    let warn = state.findings.len() - crit;
    let _ = writeln!(
        o,
        "node {}: {} ({crit} critical, {warn} warning)",
        state.node,
        state.verdict.as_str().to_uppercase()
    );
    if let Some(n) = source_note {
        let _ = writeln!(o, "{n}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<16} {:<8} {:<5} {:<14} {:<7} {:>6} {:<14} CONTROLLER",
        "INTERFACE", "KIND", "ADMIN", "OPER", "CARRIER", "MTU", "SPEED"
    );
    for i in &state.interfaces {
        let ctrl = i
            .controller
            .and_then(|c| state.interfaces.iter().find(|x| x.index == c))
            .map_or("-", |x| x.name.as_str());
        let speed = match (i.speed_mbps, &i.duplex) {
            (Some(s), Some(d)) => format!("{s}Mb/s {d}"),
            (Some(s), None) => format!("{s}Mb/s"),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<16} {:<8} {:<5} {:<14} {:<7} {:>6} {:<14} {}",
            i.name,
            i.kind.as_deref().unwrap_or("-"),
            if i.admin_up { "up" } else { "down" },
            i.oper_state.as_str(),
            yn(i.carrier),
            i.mtu,
            speed,
            ctrl
        );
    }
    for b in &state.bonds {
        let _ = writeln!(o);
        match b.kind {
            BondKind::Kernel => kernel_bond(&mut o, b),
            BondKind::Ovs => ovs_bond(&mut o, b),
        }
    }
    if !state.nic_mapping.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "os-net-config nicN names (in force = built on; next run = what os-net-config would map now)"
        );
        let _ = writeln!(o, "  {:<8} {:<14} {:<14}", "NAME", "IN FORCE", "NEXT RUN");
        for (nic, m) in &state.nic_mapping {
            let _ = writeln!(
                o,
                "  {:<8} {:<14} {:<14} {}",
                nic,
                m.in_force.as_deref().unwrap_or("-"),
                m.next_run.as_deref().unwrap_or("-"),
                m.reason
                    .as_deref()
                    .map_or(String::new(), |r| format!("SHIFTED: {r}"))
            );
        }
    }
    let _ = writeln!(o);
    if state.findings.is_empty() {
        let _ = writeln!(o, "no findings");
    } else {
        let _ = writeln!(o, "FINDINGS (worst first)");
        for f in &state.findings {
            let _ = writeln!(
                o,
                "{:<8} {:<22} {:<16} since {}\n         {}",
                f.severity.as_str().to_uppercase(),
                f.code,
                f.subject,
                preflight_model::time::format(f.since),
                f.message
            );
        }
    }
    o
}

fn ports_up(b: &BondView) -> usize {
    b.ports
        .iter()
        .filter(|p| p.port.mii_status == MiiStatus::Up)
        .count()
}

fn kernel_bond(o: &mut String, b: &BondView) {
    let _ = writeln!(
        o,
        "bond {}: mode {}, miimon {} ms, arp_interval {} ms, active {}, {}/{} ports up{}",
        b.name,
        b.mode,
        b.miimon_ms,
        b.arp_interval_ms,
        b.active_port.as_deref().unwrap_or("-"),
        ports_up(b),
        b.ports.len(),
        b.ad_info.as_ref().map_or(String::new(), |ad| format!(
            ", aggregator {} ({} ports), partner {}",
            ad.aggregator_id, ad.num_ports, ad.partner_mac
        ))
    );
    let _ = writeln!(
        o,
        "  {:<14} {:<10} {:<7} {:<7} {:>8} {:>4} {:<9} {:<9}",
        "PORT", "MII", "STATE", "CARRIER", "FAILURES", "AGG", "ACTOR", "PARTNER"
    );
    for p in &b.ports {
        let _ = writeln!(
            o,
            "  {:<14} {:<10} {:<7} {:<7} {:>8} {:>4} {:<9} {:<9}",
            p.name,
            match p.port.mii_status {
                MiiStatus::Up => "up",
                MiiStatus::Down => "DOWN",
                MiiStatus::GoingDown => "going-down",
                MiiStatus::GoingBack => "going-back",
            },
            if p.port.state == PortState::Active {
                "active"
            } else {
                "backup"
            },
            yn(p.carrier),
            p.port.link_failure_count,
            p.port
                .ad_aggregator_id
                .map_or("-".into(), |a| a.to_string()),
            lacp_state(p.port.ad_actor_state),
            lacp_state(p.port.ad_partner_state),
        );
    }
}

/// An Open vSwitch bond, with the columns `ovs-vsctl list Interface` shows.
fn ovs_bond(o: &mut String, b: &BondView) {
    let _ = writeln!(
        o,
        "ovs bond {} (bridge {}): mode {}, lacp {}, active {}, {}/{} members up",
        b.name,
        b.bridge.as_deref().unwrap_or("-"),
        b.mode,
        b.lacp.as_deref().unwrap_or("off"),
        b.active_port.as_deref().unwrap_or("-"),
        ports_up(b),
        b.ports.len(),
    );
    let _ = writeln!(
        o,
        "  {:<14} {:<6} {:<7} {:<7} {:>6} {:<12} {:<7} ERROR",
        "MEMBER", "TYPE", "STATE", "LINK", "RESETS", "LACP CURRENT", "SPEED"
    );
    for p in &b.ports {
        let _ = writeln!(
            o,
            "  {:<14} {:<6} {:<7} {:<7} {:>6} {:<12} {:<7} {}",
            p.name,
            p.ovs_type
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("system"),
            if p.port.state == PortState::Active {
                "active"
            } else {
                "backup"
            },
            if p.port.mii_status == MiiStatus::Up {
                "up"
            } else {
                "DOWN"
            },
            p.port.link_failure_count,
            p.lacp_current.map_or("-", |c| if c { "yes" } else { "NO" }),
            p.speed_mbps.map_or("-".into(), |s| format!("{s}M")),
            p.error.as_deref().map_or(String::new(), escape),
        );
    }
}

/// Text from outside (OVSDB, an aggregator) with its control characters
/// escaped, so it cannot move the cursor or repaint a terminal.
#[must_use]
pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod escape_tests {
    #[test]
    fn control_characters_are_escaped_and_text_kept() {
        assert_eq!(super::escape("eth1 \u{1b}[2J GO"), "eth1 \\u{1b}[2J GO");
        assert_eq!(super::escape("ok: No such device"), "ok: No such device");
    }
}
