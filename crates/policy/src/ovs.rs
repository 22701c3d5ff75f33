//! Rules for Open vSwitch bonds (an OVSDB `Port` with two or more
//! `Interface`s): the same codes as kernel bonds, read from OVSDB columns.
//! The kernel sees an OVS bond's members only as plain NICs (DPDK members
//! not at all), so without these rules a dead member looks like a stray NIC.
//!
//! Also the fail-closed rule: Open vSwitch evidently in use on the node
//! (a kernel link of kind `openvswitch`, the `ovs-system` device) while
//! OVSDB cannot be read is OVS_STATE_UNREADABLE, never a go.

use std::collections::BTreeSet;

use preflight_model::{OvsBridge, OvsInterface, OvsPort, OvsSource, Snapshot};

use crate::{raw, Code, PolicyConfig, Raw};

/// Names of the kernel interfaces that are members of an OVS bond; the
/// kernel rules leave them to [`rules`] (they are never "outside any bond").
#[must_use]
pub fn bond_member_names(snap: &Snapshot) -> BTreeSet<&str> {
    snap.ovs
        .bonds()
        .flat_map(|(_, p)| p.interfaces.iter().map(|i| i.name.as_str()))
        .collect()
}

/// Why OVSDB is not readable, for a message; `None` when it was read.
#[must_use]
pub fn unreadable_reason(src: &OvsSource) -> Option<String> {
    match src {
        OvsSource::Ok { .. } => None,
        OvsSource::Off => Some("reading OVSDB is switched off (agent.ovsdb = \"off\")".into()),
        OvsSource::Absent { paths } => Some(format!("no OVSDB socket at {}", paths.join(" or "))),
        OvsSource::Unreadable { path, reason } => Some(format!("{path}: {reason}")),
    }
}

/// The OVS_STATE_UNREADABLE finding, with what made OVS bonds expected.
#[must_use]
pub fn unreadable(src: &OvsSource, evidence: &str) -> Option<Raw> {
    let why = unreadable_reason(src)?;
    Some(raw(
        Code::OvsStateUnreadable,
        "ovsdb",
        format!(
            "{evidence}, but OVSDB cannot be read ({why}): the health of Open vSwitch bonds is unknown. Check `systemctl status ovsdb-server ovs-vswitchd` and `ovs-vsctl show`; set agent.ovsdb to the socket path if it is elsewhere"
        ),
    ))
}

/// Every OVS rule on one snapshot. `flapping` holds, per `bond/member`, the
/// `link_resets` increase within the flap window (computed by the evaluator).
pub fn rules(
    snap: &Snapshot,
    config: &PolicyConfig,
    flapping: &std::collections::HashMap<String, u64>,
    out: &mut Vec<Raw>,
) {
    let kernel_ovs = snap
        .interfaces
        .values()
        .find(|i| i.kind.as_deref() == Some("openvswitch") || i.name == "ovs-system");
    if let Some(i) = kernel_ovs {
        out.extend(unreadable(
            &snap.ovs,
            &format!("the kernel has Open vSwitch device {}", i.name),
        ));
    }
    for b in snap
        .ovs
        .bridges()
        .iter()
        .filter(|b| !b.parse_errors.is_empty())
    {
        out.push(raw(
            Code::StateUnreadable,
            &b.name,
            format!(
                "OVS bridge {}: OVSDB's rows could not be fully read ({}); a bond on it may be missing from preflight's view",
                b.name,
                b.parse_errors.join("; ")
            ),
        ));
    }
    for (bridge, port) in snap.ovs.bonds() {
        bond_rules(snap, bridge, port, config, out);
        for m in &port.interfaces {
            let subject = format!("{}/{}", port.name, m.name);
            if let Some(&n) = flapping.get(&subject) {
                if n >= u64::from(config.flap_max_changes) && !config.ignored(&m.name) {
                    out.push(raw(
                        Code::LinkFlapping,
                        &subject,
                        format!(
                            "OVS bond {} member {} changed link state {n} times in the last {} (link_resets); suspect the cable, optics or switch port",
                            port.name,
                            m.name,
                            humantime::format_duration(config.flap_window)
                        ),
                    ));
                }
            }
        }
    }
}

/// Why a member is down: OVSDB's view, or -- before ovs-vswitchd has
/// noticed -- the kernel's: a member that is a kernel netdev without carrier
/// is down at once (the carrier loss reaches netlink before OVSDB's update).
fn member_down(snap: &Snapshot, m: &OvsInterface) -> Option<String> {
    m.down_reason().or_else(|| {
        let kernel = matches!(m.iface_type.as_str(), "" | "system");
        snap.by_name(&m.name)
            .filter(|i| kernel && !i.carrier)
            .map(|_| "no carrier in the kernel; OVS has not noticed yet".to_owned())
    })
}

fn bond_rules(
    snap: &Snapshot,
    bridge: &OvsBridge,
    port: &OvsPort,
    config: &PolicyConfig,
    out: &mut Vec<Raw>,
) {
    let name = &port.name;
    let members = &port.interfaces;
    let mut errors: Vec<String> = port.parse_errors.clone();
    for m in members {
        errors.extend(m.parse_errors.iter().map(|e| format!("{}: {e}", m.name)));
    }
    if !errors.is_empty() {
        out.push(raw(
            Code::StateUnreadable,
            name,
            format!(
                "OVS bond {name} in {}: OVSDB's rows could not be fully read ({}); preflight cannot vouch for this bond",
                bridge.name,
                errors.join("; ")
            ),
        ));
    }
    let up: Vec<&OvsInterface> = members
        .iter()
        .filter(|m| member_down(snap, m).is_none())
        .collect();
    let show = format!("`ovs-appctl bond/show {name}`");
    if up.is_empty() {
        out.push(raw(
            Code::BondDown,
            name,
            format!(
                "OVS bond {name} in {} has none of its {} members up; all traffic through it is lost. See {show}",
                bridge.name,
                members.len()
            ),
        ));
    }
    for m in members {
        let Some(why) = member_down(snap, m) else {
            continue;
        };
        let dpdk = if m.iface_type == "dpdk" {
            " (DPDK port: check `ovs-vsctl list Interface` and the NIC's driver binding)"
        } else {
            ""
        };
        out.push(raw(
            Code::BondPortDown,
            format!("{name}/{}", m.name),
            format!(
                "OVS bond {name} member {} is down ({why}, {} link resets){dpdk}; {name} runs without redundancy. Check the cable and switch port of {}; see {show}. A network configurator rebuilding {name} during the update may fail on it",
                m.name,
                m.link_resets.unwrap_or(0),
                m.name
            ),
        ));
    }
    let min = config.bond_min_ports as usize;
    if up.len() < members.len() || members.len() < min {
        let down: Vec<&str> = members
            .iter()
            .filter(|m| member_down(snap, m).is_some())
            .map(|m| m.name.as_str())
            .collect();
        let detail = if members.len() < min {
            format!(
                "OVS bond {name} has {} member(s), fewer than the {min} needed for redundancy",
                members.len()
            )
        } else {
            format!(
                "OVS bond {name} has {} of {} members up (down: {})",
                up.len(),
                members.len(),
                down.join(", ")
            )
        };
        out.push(raw(
            Code::BondDegraded,
            name,
            format!("{detail}; one more failure takes it down"),
        ));
    }
    if port.mode() == "active-backup" && !up.is_empty() && port.active_member().is_none() {
        out.push(raw(
            Code::BondNoActivePort,
            name,
            format!(
                "active-backup OVS bond {name} has no active member (bond_active_slave {}); it passes no traffic. See {show}",
                port.bond_active_slave.as_deref().unwrap_or("empty")
            ),
        ));
    }
    if port.lacp_enabled() {
        for m in up.iter().filter(|m| m.lacp_current != Some(true)) {
            out.push(raw(
                Code::LacpNotNegotiated,
                format!("{name}/{}", m.name),
                format!(
                    "OVS bond {name} (lacp={}) member {}: {}; check that the switch ports form one LACP LAG in active mode (`ovs-appctl lacp/show {name}`)",
                    port.lacp.as_deref().unwrap_or("?"),
                    m.name,
                    match m.lacp_current {
                        Some(_) => "LACP partner information is not current (no LACPDU from the switch)",
                        None => "OVS reports no LACP state for it",
                    }
                ),
            ));
        }
    }
    let speeds: BTreeSet<(Option<u32>, Option<&str>)> = members
        .iter()
        .filter(|m| m.link_speed.is_some())
        .map(|m| (m.speed_mbps(), m.duplex.as_deref()))
        .collect();
    if speeds.len() > 1 {
        let list: Vec<String> = members
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m.name,
                    m.speed_mbps()
                        .map_or_else(|| "unknown speed".into(), |s| format!("{s}Mb/s"))
                )
            })
            .collect();
        out.push(raw(
            Code::PortSpeedMismatch,
            name,
            format!(
                "OVS bond {name} members run at different speed or duplex ({}); traffic is unevenly served and LACP may refuse to aggregate",
                list.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests;
