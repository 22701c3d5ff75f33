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
        escape(&state.node),
        state.verdict.as_str().to_uppercase()
    );
    if let Some(n) = source_note {
        let _ = writeln!(o, "{}", escape(n));
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
            .map_or("-".into(), |x| escape(&x.name));
        let speed = match (i.speed_mbps, &i.duplex) {
            (Some(s), Some(d)) => format!("{s}Mb/s {}", escape(d)),
            (Some(s), None) => format!("{s}Mb/s"),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<16} {:<8} {:<5} {:<14} {:<7} {:>6} {:<14} {}",
            escape(&i.name),
            i.kind.as_deref().map_or("-".into(), escape),
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
            BondKind::Kernel => kernel_bond(&mut o, b, &state.member_paths, &state.lldp),
            BondKind::Ovs => ovs_bond(&mut o, b, &state.lldp),
        }
    }
    if !state.nic_mapping.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "os-net-config nicN names (in force = built on; next run = what os-net-config would map now)"
        );
        if let Some(r) = &state.nic_rules {
            let _ = writeln!(o, "  following {}", escape(&r.why));
        }
        let _ = writeln!(o, "  {:<8} {:<14} {:<14}", "NAME", "IN FORCE", "NEXT RUN");
        for (nic, m) in &state.nic_mapping {
            let _ = writeln!(
                o,
                "  {:<8} {:<14} {:<14} {}",
                escape(nic),
                m.in_force.as_deref().map_or("-".into(), escape),
                m.next_run.as_deref().map_or("-".into(), escape),
                m.reason
                    .as_deref()
                    .map_or(String::new(), |r| format!("SHIFTED: {}", escape(r)))
            );
        }
    }
    if let Some(f) = &state.fallback {
        fallback(&mut o, f);
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
                escape(&f.subject),
                preflight_model::time::format(f.since),
                escape(&f.message)
            );
        }
    }
    o
}

/// Ports up as the findings count them (`BondPort::is_up`).
fn ports_up(b: &BondView) -> usize {
    b.ports_up()
}

fn kernel_bond(
    o: &mut String,
    b: &BondView,
    paths: &[preflight_model::MemberPathStatus],
    lldp: &[preflight_model::LldpNeighbor],
) {
    let _ = writeln!(
        o,
        "bond {}: mode {}, miimon {} ms, arp_interval {} ms, active {}, {}/{} ports up{}",
        escape(&b.name),
        b.mode,
        b.miimon_ms,
        b.arp_interval_ms,
        b.active_port.as_deref().map_or("-".into(), escape),
        ports_up(b),
        b.ports.len(),
        b.ad_info.as_ref().map_or(String::new(), |ad| format!(
            ", aggregator {} ({} ports), partner {}",
            ad.aggregator_id,
            ad.num_ports,
            escape(&ad.partner_mac)
        ))
    );
    let _ = writeln!(
        o,
        "  {:<14} {:<4} {:<10} {:<7} {:<7} {:>8} {:>4} {:<9} {:<9} {:<8} SWITCH",
        "PORT", "UP", "MII", "STATE", "CARRIER", "FAILURES", "AGG", "ACTOR", "PARTNER", "PATHS"
    );
    for p in &b.ports {
        let _ = writeln!(
            o,
            "  {:<14} {:<4} {:<10} {:<7} {:<7} {:>8} {:>4} {:<9} {:<9} {:<8} {}",
            escape(&p.name),
            if p.up { "yes" } else { "NO" },
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
            crate::paths_view::cell(paths, &b.name, &p.name),
            crate::lldp::cell(lldp, &p.name),
        );
    }
    crate::paths_view::misses(o, paths, &b.name);
}

/// An Open vSwitch bond, with the columns `ovs-vsctl list Interface` shows.
fn ovs_bond(o: &mut String, b: &BondView, lldp: &[preflight_model::LldpNeighbor]) {
    let _ = writeln!(
        o,
        "ovs bond {} (bridge {}): mode {}, lacp {}, active {}, {}/{} members up",
        escape(&b.name),
        b.bridge.as_deref().map_or("-".into(), escape),
        b.mode,
        b.lacp.as_deref().map_or("off".into(), escape),
        b.active_port.as_deref().map_or("-".into(), escape),
        ports_up(b),
        b.ports.len(),
    );
    let _ = writeln!(
        o,
        "  {:<14} {:<6} {:<7} {:<7} {:>6} {:<12} {:<7} {:<24} ERROR",
        "MEMBER", "TYPE", "STATE", "LINK", "RESETS", "LACP CURRENT", "SPEED", "SWITCH"
    );
    for p in &b.ports {
        let _ = writeln!(
            o,
            "  {:<14} {:<6} {:<7} {:<7} {:>6} {:<12} {:<7} {:<24} {}",
            escape(&p.name),
            p.ovs_type
                .as_deref()
                .filter(|t| !t.is_empty())
                .map_or("system".into(), escape),
            if p.port.state == PortState::Active {
                "active"
            } else {
                "backup"
            },
            if p.up { "up" } else { "DOWN" },
            p.port.link_failure_count,
            p.lacp_current.map_or("-", |c| if c { "yes" } else { "NO" }),
            p.speed_mbps.map_or("-".into(), |s| format!("{s}M")),
            crate::lldp::cell(lldp, &p.name),
            p.error.as_deref().map_or(String::new(), escape),
        );
    }
}

/// Text from outside (the kernel, OVSDB, an aggregator, a file) as it is,
/// not as it renders: control characters are escaped so they cannot move
/// the cursor or repaint a terminal, and bidi, zero-width and other
/// invisible format characters so they cannot reorder or hide what is read
/// (`bond0/\u{202e}eth1`, not `bond0/1hte`). The form is Rust's
/// `\u{...}` (`\n`, `\t`, `\r` for those); the on-call page shows the same.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || preflight_model::excerpt::invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a failed os-net-config run would leave: the fallback, its
/// interfaces and whether the node stays reachable.
fn fallback(o: &mut String, f: &preflight_model::FallbackPrediction) {
    use preflight_model::FallbackKind;
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "?",
    };
    let kind = match f.kind {
        FallbackKind::FallbackConfig => "its fallback_config",
        FallbackKind::SafeDefaults => "TripleO's safe defaults (DHCP on every NIC with carrier)",
        FallbackKind::None => "no fallback",
    };
    let verdict = match f.reachable {
        Some(true) => "reachable",
        Some(false) => "STRANDED",
        None => "cannot tell",
    };
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "if os-net-config fails: {kind}: {verdict}: {}",
        escape(&f.why)
    );
    if f.interfaces.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  {:<14} {:<5} {:<22} {:<16} {:<5} NOTE",
        "INTERFACE", "LINK", "ADDRESS", "GATEWAY", "DHCP"
    );
    for i in &f.interfaces {
        let name = match &i.written_as {
            Some(w) => format!("{} ({})", escape(&i.name), escape(w)),
            None => escape(&i.name),
        };
        let dhcp = if i.addresses.iter().any(|a| a == "dhcp") {
            yn(i.dhcp_offered)
        } else {
            "-"
        };
        let _ = writeln!(
            o,
            "  {:<14} {:<5} {:<22} {:<16} {:<5} {}",
            name,
            yn(i.link),
            escape(&i.addresses.join(",")),
            i.gateway.as_deref().map_or("-".into(), escape),
            dhcp,
            i.note.as_deref().map_or(String::new(), escape)
        );
    }
}

#[cfg(test)]
pub(crate) mod escape_tests {
    #[test]
    fn control_characters_are_escaped_and_text_kept() {
        assert_eq!(super::escape("eth1 \u{1b}[2J GO"), "eth1 \\u{1b}[2J GO");
        assert_eq!(super::escape("ok: No such device"), "ok: No such device");
    }

    /// Every class of character that can reorder or hide what a reader
    /// sees, with the form the escaper must print for it.
    const HIDDEN: &[(char, &str)] = &[
        // C0, DEL and C1 controls (CSI 0x9b repaints a terminal).
        ('\u{0}', "\\u{0}"),
        ('\u{1b}', "\\u{1b}"),
        ('\u{7f}', "\\u{7f}"),
        ('\u{85}', "\\u{85}"),
        ('\u{9b}', "\\u{9b}"),
        // Bidi embeddings and overrides.
        ('\u{202a}', "\\u{202a}"),
        ('\u{202b}', "\\u{202b}"),
        ('\u{202c}', "\\u{202c}"),
        ('\u{202d}', "\\u{202d}"),
        ('\u{202e}', "\\u{202e}"),
        // Bidi isolates.
        ('\u{2066}', "\\u{2066}"),
        ('\u{2067}', "\\u{2067}"),
        ('\u{2068}', "\\u{2068}"),
        ('\u{2069}', "\\u{2069}"),
        // Bidi marks.
        ('\u{200e}', "\\u{200e}"),
        ('\u{200f}', "\\u{200f}"),
        ('\u{61c}', "\\u{61c}"),
        // Zero-width characters.
        ('\u{200b}', "\\u{200b}"),
        ('\u{200c}', "\\u{200c}"),
        ('\u{200d}', "\\u{200d}"),
        ('\u{2060}', "\\u{2060}"),
        ('\u{feff}', "\\u{feff}"),
        // Other invisible format characters: soft hyphen, tags, line and
        // paragraph separators.
        ('\u{ad}', "\\u{ad}"),
        ('\u{e0041}', "\\u{e0041}"),
        ('\u{2028}', "\\u{2028}"),
        ('\u{2029}', "\\u{2029}"),
    ];

    #[test]
    fn bidi_zero_width_and_format_characters_are_escaped() {
        for (c, shown) in HIDDEN {
            assert_eq!(
                super::escape(&format!("bond0/{c}eth1")),
                format!("bond0/{shown}eth1"),
                "U+{:04X}",
                u32::from(*c)
            );
        }
        // Letters of any script, and visible symbols, are kept as they are.
        for kept in ["eth1 ü é 网卡 ß → ✓", "a\u{301}", "bond0:1"] {
            assert_eq!(super::escape(kept), kept);
        }
    }

    /// No character of [`HIDDEN`] (nor any other control but the newline)
    /// in `out`.
    pub(crate) fn assert_shown_as_is(out: &str) {
        for c in out.chars() {
            assert!(
                c == '\n' || !(c.is_control() || HIDDEN.iter().any(|(h, _)| *h == c)),
                "U+{:04X} printed raw in:\n{out}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn the_inspect_table_escapes_every_name_and_message() {
        use preflight_model::{Finding, Interface, NodeState, Severity, Verdict};
        let evil = "eth\u{202e}1\u{1b}[2J\u{200b}";
        let bond: preflight_model::BondView = serde_json::from_value(serde_json::json!({
            "name": format!("bond{evil}"), "mode": "active-backup", "carrier": true,
            "oper_state": "up", "miimon_ms": 100, "arp_interval_ms": 0, "min_links": 0,
            "active_port": evil, "ad_info": null,
            "ports": [{ "name": evil, "carrier": false, "speed_mbps": null, "duplex": null,
                "mii_status": "down", "state": "backup", "link_failure_count": 1,
                "perm_mac": null, "ad_aggregator_id": null, "ad_actor_state": null,
                "ad_partner_state": null }]
        }))
        .expect("a bond");
        let mut ovs = bond.clone();
        ovs.kind = preflight_model::BondKind::Ovs;
        ovs.bridge = Some(format!("br{evil}"));
        ovs.lacp = Some(evil.into());
        ovs.ports[0].ovs_type = Some(evil.into());
        ovs.ports[0].error = Some(evil.into());
        let state = NodeState {
            node: format!("n{evil}"),
            verdict: Verdict::NoGo,
            findings: vec![Finding {
                code: preflight_model::Code::BondPortDown,
                severity: Severity::Critical,
                subject: format!("bond0/{evil}"),
                message: format!("bond0 port {evil} is down"),
                since: std::time::SystemTime::UNIX_EPOCH,
            }],
            interfaces: vec![
                Interface {
                    index: 1,
                    name: evil.into(),
                    kind: Some(evil.into()),
                    duplex: Some(evil.into()),
                    speed_mbps: Some(1000),
                    controller: Some(2),
                    ..Interface::default()
                },
                Interface {
                    index: 2,
                    name: format!("bond{evil}"),
                    ..Interface::default()
                },
            ],
            bonds: vec![bond, ovs],
            addresses: Vec::new(),
            routes: Vec::new(),
            probes: Vec::new(),
            expected_from: None,
            nic_mapping: [(
                format!("nic{evil}"),
                preflight_model::NicMapping {
                    in_force: Some(evil.into()),
                    next_run: Some(evil.into()),
                    reason: Some(evil.into()),
                },
            )]
            .into(),
            nic_rules: Some(preflight_model::NicRules {
                installed: Some(evil.into()),
                followed: "18.1.0".into(),
                why: format!("os-net-config 18.1.0's rules: {evil} is installed"),
            }),
            fallback: Some(preflight_model::FallbackPrediction {
                kind: preflight_model::FallbackKind::FallbackConfig,
                interfaces: vec![preflight_model::FallbackInterface {
                    name: evil.into(),
                    written_as: Some(evil.into()),
                    addresses: vec![evil.into()],
                    gateway: Some(evil.into()),
                    link: Some(false),
                    dhcp_offered: None,
                    note: Some(evil.into()),
                }],
                reachable: Some(false),
                why: evil.into(),
            }),
            dhcp_probes: Vec::new(),
            // A neighbour from a report is not re-escaped by a decoder.
            lldp: vec![serde_json::from_value(serde_json::json!({
                "member": evil, "chassis_id": evil, "chassis_id_subtype": "local",
                "port_id": evil, "port_id_subtype": "local", "ttl_s": 120,
                "system_name": evil, "since": "2026-01-01T00:00:00Z"
            }))
            .expect("a neighbour")],
            member_paths: Vec::new(),
        };
        let out = super::table(&state, Some(&format!("expected state: {evil}")));
        assert!(out.contains("eth\\u{202e}1\\u{1b}[2J\\u{200b}"), "{out}");
        assert_shown_as_is(&out);
    }
}
