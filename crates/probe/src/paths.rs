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
mod tests {
    use super::*;
    use preflight_model::{Address, Bond, BondPort, Interface, Route};

    fn iface(index: u32, name: &str, controller: Option<u32>) -> Interface {
        Interface {
            index,
            name: name.into(),
            carrier: true,
            controller,
            bond_port: controller.map(|_| BondPort::default()),
            ..Interface::default()
        }
    }

    fn addr(ifindex: u32, a: &str, len: u8) -> Address {
        Address {
            ifindex,
            address: a.parse().expect("ip"),
            prefix_len: len,
            permanent: true,
            scope: "global".into(),
        }
    }

    /// bond0 (10.100.0.5/24, default via 10.100.0.1) over eth0 and eth1,
    /// bond0.200 (10.200.0.5/24, no route), eth2 alone.
    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        let mut bond = iface(3, "bond0", None);
        bond.kind = Some("bond".into());
        bond.bond = Some(Bond {
            mode: BondMode::ActiveBackup,
            ..Bond::default()
        });
        for i in [
            bond,
            iface(1, "eth0", Some(3)),
            iface(2, "eth1", Some(3)),
            iface(4, "bond0.200", None),
            iface(5, "eth2", None),
        ] {
            s.interfaces.insert(i.index, i);
        }
        s.addresses = vec![
            addr(3, "10.100.0.5", 24),
            addr(4, "10.200.0.5", 24),
            addr(5, "10.50.0.5", 24),
        ];
        s.routes = vec![Route {
            destination: None,
            prefix_len: 0,
            gateway: Some("10.100.0.1".parse().expect("ip")),
            oif: Some(3),
            protocol: "static".into(),
            metric: None,
            ipv6: false,
        }];
        s
    }

    fn vlans() -> Vec<Vlan> {
        parse_vlans("VLAN Dev name    | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\nbond0.200      | 200  | bond0\n")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn gateways_then_configured_then_neighbours_through_every_member() {
        let neigh = parse_neighbours("IP address       HW type     Flags       HW address            Mask     Device\n10.200.0.7       0x1         0x2         52:54:00:12:34:56     *        bond0.200\n10.200.0.8       0x1         0x0         00:00:00:00:00:00     *        bond0.200\n10.100.0.9       0x1         0x2         52:54:00:12:34:57     *        bond0\n10.50.0.1        0x1         0x2         52:54:00:12:34:58     *        eth2\n");
        assert_eq!(neigh.len(), 3, "the incomplete entry is skipped");
        let p = plan(&snap(), &vlans(), &neigh, &[]);
        let got: Vec<(&str, &str, Option<u16>, String)> = p
            .iter()
            .map(|c| {
                (
                    c.member.as_str(),
                    c.network.as_str(),
                    c.vlan,
                    c.target.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("eth0", "bond0", None, "10.100.0.1".into()),
                ("eth0", "bond0.200", Some(200), "10.200.0.7".into()),
                ("eth1", "bond0", None, "10.100.0.1".into()),
                ("eth1", "bond0.200", Some(200), "10.200.0.7".into()),
            ],
            "the gateway, not the neighbour, on bond0; eth2 is no bond"
        );
        // A configured target in the VLAN's subnet replaces the neighbours;
        // one elsewhere is not used.
        let p = plan(
            &snap(),
            &vlans(),
            &neigh,
            &[ip("10.200.0.1"), ip("192.0.2.1")],
        );
        assert!(p
            .iter()
            .any(|c| c.target == ip("10.200.0.1") && c.vlan == Some(200)));
        assert!(!p.iter().any(|c| c.target == ip("10.200.0.7")));
        assert!(!p.iter().any(|c| c.target == ip("192.0.2.1")));
        assert!(
            p.iter().all(|c| c.also.is_empty()),
            "active-backup: separate ports"
        );
        // 802.3ad: one port for the switch; the reply may come on either.
        let mut lacp = snap();
        if let Some(b) = lacp.interfaces.get_mut(&3).and_then(|i| i.bond.as_mut()) {
            b.mode = BondMode::Ieee8023ad;
        }
        let p = plan(&lacp, &vlans(), &neigh, &[]);
        assert!(p.iter().any(|c| c.member == "eth0" && c.also == ["eth1"]));
        assert!(p.iter().any(|c| c.member == "eth1" && c.also == ["eth0"]));
    }

    #[test]
    fn at_most_a_handful_and_never_our_own_address() {
        let text: String = std::iter::once("header\n".to_owned())
            .chain(
                (1..=20)
                    .map(|i| format!("10.200.0.{i} 0x1 0x2 52:54:00:00:00:{i:02x} * bond0.200\n")),
            )
            .collect();
        let neigh = parse_neighbours(&text);
        let p = plan(&snap(), &vlans(), &neigh, &[ip("10.200.0.5")]);
        let on_vlan: Vec<_> = p
            .iter()
            .filter(|c| c.member == "eth0" && c.vlan.is_some())
            .collect();
        assert_eq!(on_vlan.len(), MAX_TARGETS_PER_NETWORK);
        assert!(
            !p.iter().any(|c| c.target == ip("10.200.0.5")),
            "our own address"
        );
    }

    #[test]
    fn a_member_without_carrier_or_a_lone_member_is_not_planned() {
        let mut s = snap();
        s.interfaces.get_mut(&2).expect("eth1").carrier = false;
        assert!(
            plan(&s, &vlans(), &[], &[]).is_empty(),
            "one member left: nothing to compare"
        );
        assert!(parse_vlans("x\ny\nbad line\n| 5 |\n").is_empty());
    }

    /// Review item 13: a plain truncation after sorting by member gives
    /// every slot to the first member and silently drops the backup's.
    #[test]
    fn the_cap_is_shared_by_every_member_and_drops_are_returned() {
        let mut all = Vec::new();
        for v in 1..=100u16 {
            for t in 1..=2u8 {
                for m in ["eth0", "eth1"] {
                    all.push(PathCheck {
                        bond: "bond0".into(),
                        member: m.into(),
                        network: format!("bond0.{v}"),
                        vlan: Some(v),
                        target: Ipv4Addr::new(10, 0, t, 1),
                        also: Vec::new(),
                    });
                }
            }
        }
        all.sort();
        let (kept, dropped) = cap(all.clone(), 256);
        assert_eq!(kept.len() + dropped.len(), all.len(), "nothing lost");
        assert!(kept.len() <= 256);
        let of = |m: &str| kept.iter().filter(|c| c.member == m).count();
        assert_eq!(of("eth0"), of("eth1"), "both members share the cap");
        // Every network keeps its first target before any keeps a second.
        for v in 1..=100u16 {
            assert!(
                kept.iter().any(|c| c.vlan == Some(v)),
                "VLAN {v} has a path"
            );
        }
        let (k, d) = cap(all[..10].to_vec(), 256);
        assert_eq!((k.len(), d.len()), (10, 0));
    }

    #[test]
    fn path_targets_parse() {
        use crate::Target;
        assert_eq!(
            "path:10.200.0.1@eth2/200".parse::<Target>(),
            Ok(Target::Path {
                addr: "10.200.0.1".parse().expect("ip"),
                device: "eth2".into(),
                vlan: Some(200)
            })
        );
        assert_eq!(
            "path:10.200.0.1@eth2/200"
                .parse::<Target>()
                .expect("ok")
                .to_string(),
            "path 10.200.0.1 via eth2 vlan 200"
        );
        for bad in [
            "path:10.0.0.1@eth2/0",
            "path:10.0.0.1@eth2/4095",
            "path:10.0.0.1",
            "path:::1@eth0",
            "path:10.0.0.1@a/b/1",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
