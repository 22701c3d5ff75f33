//! Which member paths to check, with no configuration: for every kernel
//! bond or team and every IPv4 network it carries (the bond itself, its
//! VLAN subinterfaces), the gateways of routes through that network, else
//! the configured probe targets in it, else a few neighbours from the
//! kernel's table on it; each checked through every member with carrier.
//! [`plan`] is pure (tested with plain values); [`read_vlans`] and
//! [`read_neighbours`] read what the snapshot does not carry from /proc.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use preflight_model::{BondMode, Snapshot};

/// Most targets checked per network: enough to tell a dead path from a
/// dead host, few enough to stay a handful of frames per interval.
pub const MAX_TARGETS_PER_NETWORK: usize = 3;

/// Longest /proc file read: a neighbour table of ~10,000 entries.
const MAX_PROC_BYTES: u64 = 1 << 20;

/// One path to check: `target` on `network` through `member` of `bond`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathCheck {
    /// Bond (or team) name.
    pub bond: String,
    /// Member netdev the request leaves by.
    pub member: String,
    /// The interface holding the network's address (`bond0`, `bond0.200`).
    pub network: String,
    /// 802.1Q VLAN id of the network, `None` untagged.
    pub vlan: Option<u16>,
    /// Who should answer.
    pub target: Ipv4Addr,
    /// The bond's other members, where the reply may come back too: the
    /// switch treats the members of an 802.3ad, balance-xor or balance-rr
    /// bond (and of a team, whose runner is not read) as one port and
    /// forwards the reply by its hash. Empty for active-backup, tlb and alb,
    /// whose members are separate switch ports: the reply comes back on the
    /// member that asked.
    pub also: Vec<String>,
}

/// A VLAN subinterface (`/proc/net/vlan/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    /// Its name (`bond0.200`).
    pub name: String,
    /// VLAN id.
    pub id: u16,
    /// The interface it is on (`bond0`).
    pub parent: String,
}

/// One entry of the kernel's IPv4 neighbour table with a link address
/// (reachable or stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Address.
    pub ip: Ipv4Addr,
    /// Interface.
    pub device: String,
}

/// The member paths of `snap`: see the module text. `configured` are the
/// configured probe targets; a network's targets are cut to
/// [`MAX_TARGETS_PER_NETWORK`].
#[must_use]
pub fn plan(
    snap: &Snapshot,
    vlans: &[Vlan],
    neighbours: &[Neighbour],
    configured: &[Ipv4Addr],
) -> Vec<PathCheck> {
    let mut out = Vec::new();
    for bond in snap.interfaces.values() {
        if bond.bond.is_none() && bond.kind.as_deref() != Some("team") {
            continue;
        }
        let members: Vec<&str> = snap
            .ports_of(bond.index)
            .into_iter()
            .filter(|p| p.carrier)
            .map(|p| p.name.as_str())
            .collect();
        if members.len() < 2 {
            // One member has no other to fail over to: nothing to compare.
            continue;
        }
        let one_port = bond.bond.as_ref().is_none_or(|b| {
            matches!(
                b.mode,
                BondMode::Ieee8023ad
                    | BondMode::BalanceXor
                    | BondMode::BalanceRr
                    | BondMode::Broadcast
            )
        });
        let mut networks = vec![(bond, None)];
        for v in vlans.iter().filter(|v| v.parent == bond.name) {
            if let Some(i) = snap.by_name(&v.name) {
                networks.push((i, Some(v.id)));
            }
        }
        for (net, vlan) in networks {
            for target in targets(snap, net.index, &net.name, neighbours, configured) {
                for m in &members {
                    let also = if one_port {
                        members
                            .iter()
                            .filter(|o| *o != m)
                            .map(|o| (*o).to_owned())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    out.push(PathCheck {
                        bond: bond.name.clone(),
                        member: (*m).to_owned(),
                        network: net.name.clone(),
                        vlan,
                        target,
                        also,
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A bond or team of two or more members none of whose paths is planned,
/// and why: its redundancy is unproven, to be reported rather than passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplanned {
    /// Bond, team or Open vSwitch bond name.
    pub bond: String,
    /// Its members.
    pub members: Vec<String>,
    /// Why nothing was planned.
    pub reason: String,
}

/// The bonds [`plan`] gives no path (`planned` is its result): kernel bonds
/// and teams of two or more members with carrier, and Open vSwitch bonds of
/// kernel netdevs (DPDK members are reported on their own).
#[must_use]
pub fn unplanned(snap: &Snapshot, vlans: &[Vlan], planned: &[PathCheck]) -> Vec<Unplanned> {
    let mut out = Vec::new();
    for bond in snap.interfaces.values() {
        if bond.bond.is_none() && bond.kind.as_deref() != Some("team") {
            continue;
        }
        let members: Vec<String> = snap
            .ports_of(bond.index)
            .into_iter()
            .filter(|p| p.carrier)
            .map(|p| p.name.clone())
            .collect();
        if members.len() < 2 || planned.iter().any(|c| c.bond == bond.name) {
            continue;
        }
        let mut nets = vec![bond];
        nets.extend(
            vlans
                .iter()
                .filter(|v| v.parent == bond.name)
                .filter_map(|v| snap.by_name(&v.name)),
        );
        let names = nets
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (mut v4, mut v6) = (false, false);
        for n in &nets {
            for a in snap.addresses_of(n.index) {
                match a.address {
                    IpAddr::V4(_) => v4 = true,
                    IpAddr::V6(_) => v6 = true,
                }
            }
        }
        let above = bond.controller.and_then(|c| snap.interfaces.get(&c));
        let reason = match (above, v4, v6) {
            (Some(up), false, _) => format!(
                "its addresses are on {} above it (a bridge or Open vSwitch port): the check follows only the bond and its VLANs",
                up.name
            ),
            (_, false, true) => format!(
                "{names} carry IPv6 only: the check is ARP, IPv4 only"
            ),
            (_, false, false) => format!("no IPv4 address on {names}: nothing to ask"),
            (_, true, _) => format!(
                "no target on {names}: no gateway, configured probe target or neighbour there"
            ),
        };
        out.push(Unplanned {
            bond: bond.name.clone(),
            members,
            reason,
        });
    }
    for (_, port) in snap.ovs.bonds() {
        let members: Vec<String> = port
            .interfaces
            .iter()
            .filter(|i| i.iface_type != "dpdk")
            .map(|i| i.name.clone())
            .collect();
        if members.len() >= 2 {
            out.push(Unplanned {
                bond: port.name.clone(),
                members,
                reason: "an Open vSwitch bond: the check follows kernel bonds and teams only"
                    .into(),
            });
        }
    }
    out
}

/// Cuts `plan` to at most `max` paths, fairly: whole targets (every
/// member's path to it) are kept or dropped together, a network's first
/// target before any network's second, so no member loses its paths to a
/// sibling earlier in the order. Returns (kept, dropped), each in plan
/// order; the dropped ones are to be reported, not silently lost.
#[must_use]
pub fn cap(plan: Vec<PathCheck>, max: usize) -> (Vec<PathCheck>, Vec<PathCheck>) {
    if plan.len() <= max {
        return (plan, Vec::new());
    }
    type Net<'a> = (&'a str, &'a str, Option<u16>);
    let mut targets: BTreeMap<Net, Vec<Ipv4Addr>> = BTreeMap::new();
    for c in &plan {
        let t = targets.entry((&c.bond, &c.network, c.vlan)).or_default();
        if !t.contains(&c.target) {
            t.push(c.target);
        }
    }
    // (rank of the target in its network, network, target) -> path indexes.
    let mut groups: BTreeMap<(usize, Net, Ipv4Addr), Vec<usize>> = BTreeMap::new();
    for (i, c) in plan.iter().enumerate() {
        let net = (c.bond.as_str(), c.network.as_str(), c.vlan);
        let rank = targets
            .get(&net)
            .and_then(|t| t.iter().position(|x| *x == c.target))
            .unwrap_or(usize::MAX);
        groups.entry((rank, net, c.target)).or_default().push(i);
    }
    let mut keep = vec![false; plan.len()];
    let mut kept = 0;
    for idx in groups.values() {
        if kept + idx.len() <= max {
            kept += idx.len();
            for i in idx {
                keep[*i] = true;
            }
        }
    }
    let (mut k, mut d) = (Vec::with_capacity(kept), Vec::new());
    for (c, keep) in plan.into_iter().zip(keep) {
        if keep {
            k.push(c);
        } else {
            d.push(c);
        }
    }
    (k, d)
}

fn targets(
    snap: &Snapshot,
    index: u32,
    name: &str,
    neighbours: &[Neighbour],
    configured: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let subnets: Vec<(Ipv4Addr, u8)> = snap
        .addresses_of(index)
        .filter_map(|a| match a.address {
            IpAddr::V4(ip) => Some((ip, a.prefix_len)),
            IpAddr::V6(_) => None,
        })
        .collect();
    if subnets.is_empty() {
        return Vec::new();
    }
    let own = |ip: &Ipv4Addr| subnets.iter().any(|(a, _)| a == ip);
    let within = |ip: &Ipv4Addr| {
        subnets.iter().any(|(a, len)| {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(*len).min(32))
                .unwrap_or(0);
            u32::from(*a) & mask == u32::from(*ip) & mask
        })
    };
    let mut t: Vec<Ipv4Addr> = Vec::new();
    let add = |ip: Ipv4Addr, t: &mut Vec<Ipv4Addr>| {
        if !own(&ip) && !ip.is_unspecified() && !ip.is_broadcast() && !t.contains(&ip) {
            t.push(ip);
        }
    };
    for r in snap.routes.iter().filter(|r| r.oif == Some(index)) {
        if let Some(IpAddr::V4(gw)) = r.gateway {
            add(gw, &mut t);
        }
    }
    for ip in configured.iter().filter(|ip| within(ip)) {
        add(*ip, &mut t);
    }
    if t.is_empty() {
        for n in neighbours.iter().filter(|n| n.device == name) {
            add(n.ip, &mut t);
        }
    }
    t.truncate(MAX_TARGETS_PER_NETWORK);
    t
}

fn read_proc(path: &str) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        // A read error leaves what was read: a partial table, still bounded.
        let _ = f.take(MAX_PROC_BYTES).read_to_string(&mut s);
    }
    s
}

/// Parses `/proc/net/vlan/config` (two header lines, then
/// `name | id | parent`); lines that do not parse are skipped.
#[must_use]
pub fn parse_vlans(text: &str) -> Vec<Vlan> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let name = f.next()?.to_owned();
            let id = f.next()?.parse().ok()?;
            let parent = f.next()?.to_owned();
            (!name.is_empty() && !parent.is_empty()).then_some(Vlan { name, id, parent })
        })
        .collect()
}

/// The VLAN subinterfaces of this node (none when 8021q is not loaded).
#[must_use]
pub fn read_vlans() -> Vec<Vlan> {
    parse_vlans(&read_proc("/proc/net/vlan/config"))
}

/// Parses `/proc/net/arp`: entries with a link address (flag ATF_COM),
/// that is reachable, stale, delay or probe; failed and incomplete ones
/// are skipped.
#[must_use]
pub fn parse_neighbours(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [ip, _hw, flags, _mac, _mask, device] = f.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            (flags & 0x2 != 0).then_some(Neighbour {
                ip: ip.parse().ok()?,
                device: (*device).to_owned(),
            })
        })
        .collect()
}

/// The kernel's IPv4 neighbours with a link address.
#[must_use]
pub fn read_neighbours() -> Vec<Neighbour> {
    parse_neighbours(&read_proc("/proc/net/arp"))
}

#[cfg(test)]
#[path = "paths_tests.rs"]
mod tests;
