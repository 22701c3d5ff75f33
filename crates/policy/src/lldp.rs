//! Rules on what the bond members' switches say over LLDP (the snapshot's
//! [`LldpState`]): a bond without switch redundancy (BOND_SINGLE_SWITCH), a
//! switch port that drops the node's largest frames (MTU_EXCEEDS_SWITCH), a
//! switch port that does not carry a VLAN the node uses on the bond
//! (SWITCH_VLAN_MISSING), and, against a baseline, a member cabled to
//! another switch or port than before (LLDP_NEIGHBOR_CHANGED). Each rule
//! judges only what a switch advertised: a member without a neighbour, or a
//! switch that does not advertise its VLANs or frame size, is no finding
//! here (the member path check proves the path itself).

use std::collections::BTreeSet;
use std::time::SystemTime;

use preflight_model::lldp::LldpState;
use preflight_model::{BondMode, Finding, LldpNeighbor, Snapshot};

use crate::{raw, Code, PolicyConfig, Raw};

/// Ethernet header (destination, source, Ethertype: 14 bytes) and FCS (4):
/// what a frame adds to the MTU. 802.3's maximum frame size counts both
/// (the untagged 1500-byte MTU is the classic 1518-byte frame). The 4
/// bytes of an 802.1Q tag are not added for a node with VLANs: switches
/// differ in whether the size they advertise counts the tag (some say 1518
/// for a 1500-byte port that carries full-size tagged frames, others 1522),
/// and 802.3 lets a port take the tag beyond its basic frame size; adding it
/// would make every healthy VLAN node on a switch of the first kind no-go.
/// What is left unflagged is a switch port 1 to 4 bytes short for tagged
/// frames, which the advertised size cannot tell apart from a healthy one.
pub const FRAME_OVERHEAD: u32 = 18;

/// Every LLDP rule on `snap`.
pub fn rules(snap: &Snapshot, out: &mut Vec<Raw>) {
    let l = &snap.lldp;
    if !l.listening {
        return;
    }
    for iface in snap.interfaces.values() {
        let Some(bond) = &iface.bond else { continue };
        let members: Vec<(&str, u32)> = snap
            .ports_of(iface.index)
            .into_iter()
            .map(|p| (p.name.as_str(), p.mtu))
            .collect();
        // 802.3ad needs one LACP partner system (an MLAG pair shows as one):
        // one chassis is its design, not a fault.
        let failover = matches!(
            bond.mode,
            BondMode::ActiveBackup | BondMode::BalanceAlb | BondMode::BalanceTlb
        );
        let vlans: Vec<(u16, &str)> = l
            .vlans
            .iter()
            .filter(|v| v.parent == iface.name)
            .map(|v| (v.id, v.name.as_str()))
            .collect();
        judge_bond(
            &iface.name,
            bond.mode.as_str(),
            failover,
            &members,
            &vlans,
            l,
            out,
        );
    }
    for (_, port) in snap.ovs.bonds() {
        let members: Vec<(&str, u32)> = port
            .interfaces
            .iter()
            .filter_map(|m| Some((m.name.as_str(), snap.by_name(&m.name)?.mtu)))
            .collect();
        // With LACP (balance-tcp, or `lacp` on) the members face one partner.
        let lacp = port
            .lacp
            .as_deref()
            .is_some_and(|x| x == "active" || x == "passive");
        let mode = port.bond_mode.as_deref().unwrap_or("active-backup");
        let failover = !lacp && mode != "balance-tcp";
        // OVS VLANs are port tags on the bridge, not kernel subinterfaces:
        // the VLAN rule does not judge them.
        judge_bond(&port.name, mode, failover, &members, &[], l, out);
    }
}

/// The rules on one bond: `members` with their MTU, `vlans` the VLANs the
/// node uses on it (ID and subinterface).
///
/// A member may hear several senders (a switch and its NIC's firmware LLDP
/// agent, a hub): the rules judge the set, never whichever came last, so
/// the order of frames cannot flap a finding. A single switch is a chassis
/// every member hears; the frame size and VLANs are judged against every
/// sender that advertises them (preflight cannot tell which one the traffic
/// crosses, and a device that drops it breaks the path), one finding per
/// member.
fn judge_bond(
    bond: &str,
    mode: &str,
    failover: bool,
    members: &[(&str, u32)],
    vlans: &[(u16, &str)],
    l: &LldpState,
    out: &mut Vec<Raw>,
) {
    for (member, _) in members {
        if let Some(e) = l.errors.get(*member) {
            out.push(raw(
                Code::LldpUnavailable,
                format!("{bond}/{member}"),
                format!(
                    "{bond} member {member} cannot be listened on for LLDP ({e}): its switch is unknown, so no LLDP rule judges it. Give the agent CAP_NET_RAW, or check the interface"
                ),
            ));
        }
    }
    let heard: Vec<Vec<&LldpNeighbor>> = members.iter().map(|(m, _)| l.all_of(m)).collect();
    if failover && members.len() >= 2 && heard.iter().all(|h| !h.is_empty()) {
        let chassis = |h: &[&LldpNeighbor]| -> BTreeSet<(String, String)> {
            h.iter()
                .map(|n| (n.chassis_id_subtype.clone(), n.chassis_id.clone()))
                .collect()
        };
        let mut common = chassis(&heard[0]);
        for h in &heard[1..] {
            let c = chassis(h);
            common.retain(|x| c.contains(x));
        }
        // The first shared chassis (sorted): the same one whatever the order.
        if let Some((sub, id)) = common.into_iter().next() {
            let on = |n: &&&LldpNeighbor| n.chassis_id_subtype == sub && n.chassis_id == id;
            let ports: Vec<String> = heard
                .iter()
                .filter_map(|h| h.iter().find(on))
                .map(|h| format!("{} on port {}", h.member, h.port()))
                .collect();
            let name = heard[0].iter().find(on).map_or(id.as_str(), |n| n.switch());
            out.push(raw(
                Code::BondSingleSwitch,
                bond,
                format!(
                    "{bond} ({mode}) has every member on one switch, {name} (chassis {id}): {}; that switch's failure or reboot takes {bond} down. Cable the members to two switches (or an MLAG pair)",
                    ports.join(", ")
                ),
            ));
        }
    }
    for (member, mtu) in members {
        let subject = format!("{bond}/{member}");
        let mut small = Vec::new();
        let mut lacking = Vec::new();
        for n in l.all_of(member) {
            let need = mtu + FRAME_OVERHEAD;
            if let Some(max) = n.max_frame_size.filter(|m| u32::from(*m) < need) {
                small.push(format!("{} takes at most {max}", n.describe()));
            }
            if let Some(m) = vlans_missing(n, vlans) {
                lacking.push(m);
            }
        }
        if !small.is_empty() {
            let need = mtu + FRAME_OVERHEAD;
            out.push(raw(
                Code::MtuExceedsSwitch,
                &subject,
                format!(
                    "{bond} member {member} has MTU {mtu}, so it sends frames of up to {need} bytes (Ethernet header and FCS), but its switch port ({}): larger packets are dropped there. Raise the switch port's MTU or lower the node's",
                    small.join("; ")
                ),
            ));
        }
        if !lacking.is_empty() {
            out.push(raw(
                Code::SwitchVlanMissing,
                &subject,
                format!(
                    "{bond} member {member}'s switch port {}. Add the VLAN to the switch port",
                    lacking.join("; ")
                ),
            ));
        }
    }
}

/// What of `vlans` the port `n` does not carry, as a sentence, or `None`.
fn vlans_missing(n: &LldpNeighbor, vlans: &[(u16, &str)]) -> Option<String> {
    if !n.vlans_advertised() {
        return None;
    }
    // Every VLAN here is a tagged subinterface: the port's PVID goes
    // untagged, so a VID equal to it reaches the subinterface never.
    // A list cut at MAX_VLANS proves no absence; the PVID case stands.
    let carried: BTreeSet<u16> = n.vlans.iter().map(|v| v.id).collect();
    let missing: Vec<String> = vlans
        .iter()
        .filter_map(|(id, net)| {
            if n.pvid == Some(*id) {
                Some(format!(
                    "VLAN {id} ({net}) tagged: the port sends VLAN {id} untagged (its PVID)"
                ))
            } else if !n.vlans_cut && !carried.contains(id) {
                Some(format!("VLAN {id} ({net})"))
            } else {
                None
            }
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let advertised: Vec<String> = carried.iter().map(u16::to_string).collect();
    Some(format!(
        "({}) does not carry {}: it advertises VLANs {}; a failover to {} cuts {} off",
        n.describe(),
        missing.join(", "),
        advertised.join(","),
        n.member,
        if missing.len() == 1 { "it" } else { "them" }
    ))
}

/// LLDP_NEIGHBOR_CHANGED: each member of `baseline` whose switch or port is
/// not among the ones it hears now (a sender heard beside the baseline's,
/// such as a NIC's agent, is no change), one finding per member. A member
/// that hears nothing now counts only once `now.complete` (it has had a
/// full LLDP interval to be heard).
#[must_use]
pub fn changed(snap: &Snapshot, baseline: &[LldpNeighbor]) -> Vec<Raw> {
    let now = &snap.lldp;
    let mut by_member: std::collections::BTreeMap<&str, Vec<&LldpNeighbor>> =
        std::collections::BTreeMap::new();
    for b in baseline {
        by_member.entry(b.member.as_str()).or_default().push(b);
    }
    let mut out = Vec::new();
    for (member, before) in by_member {
        let subject = snap.by_name(member).map_or_else(
            || member.to_owned(),
            |i| match i.controller {
                Some(c) => format!("{}/{}", snap.name_of(c), i.name),
                None => i.name.clone(),
            },
        );
        let heard = now.all_of(member);
        let gone: Vec<String> = before
            .iter()
            .filter(|b| {
                !heard
                    .iter()
                    .any(|n| n.chassis_id == b.chassis_id && n.port_id == b.port_id)
            })
            .map(|b| b.describe())
            .collect();
        if gone.is_empty() {
            continue;
        }
        let message = if !heard.is_empty() {
            let now: Vec<String> = heard.iter().map(|n| n.describe()).collect();
            format!(
                "{member} is cabled to {} now; the baseline had {}: recabled (or the switch was replaced) since. Check the cabling plan",
                now.join(" and "),
                gone.join(" and ")
            )
        } else if now.complete {
            format!(
                "{member} hears no LLDP now; the baseline had {}: the cable moved to a port without LLDP, or the switch stopped sending it",
                gone.join(" and ")
            )
        } else {
            continue;
        };
        out.push(raw(Code::LldpNeighborChanged, subject, message));
    }
    out
}

/// `raws` as findings with the configured severities, first seen `wall`:
/// for a one-shot comparison (`preflight baseline compare`).
#[must_use]
pub fn findings(raws: Vec<Raw>, config: &PolicyConfig, wall: SystemTime) -> Vec<Finding> {
    raws.into_iter()
        .filter_map(|r| {
            let severity = config.severity.get(&r.code).copied().flatten()?;
            Some(Finding {
                code: r.code,
                severity,
                subject: r.subject,
                message: config.with_reason(r.code, severity, r.message),
                since: wall,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
