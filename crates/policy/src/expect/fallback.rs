//! What a failed os-net-config run would leave the node with. os-net-config
//! 18.1.0 and later (RHOSO's edpm-ansible) apply the file's
//! `fallback_config` section after a failed `network_config` (cli.py
//! `safe_fallback`: at most two entries, else none at all; 15.x-18.0.x
//! predate it); TripleO Wallaby (os-net-config 14.x) instead runs its safe
//! defaults (tripleo-ansible's `tripleo_os_net_config`,
//! `_generate_default_cfg`): DHCP on every NIC that has carrier once set up,
//! SR-IOV VFs excluded, with `--cleanup`, so bonds and VLANs are gone. The
//! node stays reachable only if one of those interfaces gets an address and
//! a way out: a static address with its gateway on-link, or a DHCP server
//! that answers (the DHCP probe, `agent.dhcp_probe`). A fallback that
//! strands the node is FALLBACK_STRANDS_NODE.

use std::net::IpAddr;

use preflight_model::{
    DhcpProbeResult, FallbackInterface, FallbackKind, FallbackPrediction, Snapshot,
};

use super::{Expectations, Expected, Kind};
use crate::{raw, Code, Raw};

/// os-net-config applies at most this many `fallback_config` entries
/// ("fallback_config shall be strictly used for SSH restoration").
pub const MAX_FALLBACK_ENTRIES: usize = 2;

/// The note of a static address without a default route.
const NO_DEFAULT_ROUTE: &str = "no default route: reachable from its own subnet only";

/// Deepest member chain followed from a probed interface to its NICs; a
/// file is bounded, this only guards against a cycle of names.
const MAX_DEPTH: usize = 8;

/// An os-net-config file's `fallback_config` section.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct FallbackSection {
    /// Its top-level entries (0: the file has none).
    pub entries: usize,
    /// The interfaces read from them (members included, `parent` set).
    pub interfaces: Vec<Expected>,
    /// Why the section is ignored, as os-net-config ignores it (`fallback_config
    /// is not a list`); EXPECTATION_UNCHECKED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

/// The prediction for an os-net-config file's expectations (`None` for
/// expectations of another origin).
#[must_use]
pub fn predict_fallback(
    snap: &Snapshot,
    exp: &Expectations,
    dhcp: &[DhcpProbeResult],
) -> Option<FallbackPrediction> {
    let section = exp.fallback.as_ref()?;
    let rules = exp.nics.osnc.rules();
    if rules.followed == "14.2.0" {
        return Some(safe_defaults(snap, exp, dhcp, &rules.why));
    }
    if !exp.nics.osnc.applies_fallback_config() {
        let installed = exp.nics.osnc.version.as_deref().unwrap_or("?");
        return Some(FallbackPrediction {
            kind: FallbackKind::None,
            interfaces: Vec::new(),
            reachable: None,
            why: format!(
                "os-net-config {installed} is installed; fallback_config came in 18.1.0, so a failed run leaves what it applied, and nothing restores SSH"
            ),
        });
    }
    if let Some(why) = &section.ignored {
        return Some(FallbackPrediction {
            kind: FallbackKind::None,
            interfaces: Vec::new(),
            reachable: None,
            why: format!(
                "{why}: os-net-config ignores it, so a failed run leaves what it applied, and nothing restores SSH"
            ),
        });
    }
    if section.entries == 0 {
        return Some(FallbackPrediction {
            kind: FallbackKind::None,
            interfaces: Vec::new(),
            reachable: None,
            why: format!(
                "the file has no fallback_config ({}): a failed run leaves what it applied, and nothing restores SSH",
                rules.why
            ),
        });
    }
    Some(fallback_config(snap, exp, section, dhcp))
}

/// EXPECTATION_UNCHECKED for a `fallback_config` os-net-config ignores.
pub(crate) fn ignored_rule(exp: &Expectations) -> Option<Raw> {
    let why = exp.fallback.as_ref()?.ignored.as_ref()?;
    Some(raw(
        Code::ExpectationUnchecked,
        "fallback_config",
        format!("{why}: os-net-config ignores it, and so does preflight; a failed run would restore nothing. Write it as a list (`fallback_config:` then `- type: interface ...`)"),
    ))
}

/// FALLBACK_STRANDS_NODE when the prediction says the node would be lost.
pub(crate) fn rule(snap: &Snapshot, exp: &Expectations, dhcp: &[DhcpProbeResult]) -> Option<Raw> {
    let p = predict_fallback(snap, exp, dhcp)?;
    if p.reachable != Some(false) {
        return None;
    }
    let what = match p.kind {
        FallbackKind::FallbackConfig => "its fallback_config",
        _ => "TripleO's safe defaults (DHCP on every NIC with carrier)",
    };
    Some(raw(
        Code::FallbackStrandsNode,
        "fallback",
        format!(
            "if os-net-config fails during the update, {what} would leave the node unreachable: {}. Fix the fallback before the update (a static address with its gateway on a NIC with carrier, or a DHCP server on a NIC os-net-config would set up)",
            p.why
        ),
    ))
}

fn safe_defaults(
    snap: &Snapshot,
    exp: &Expectations,
    dhcp: &[DhcpProbeResult],
    rules: &str,
) -> FallbackPrediction {
    let vfs = &exp.nics.osnc.kernel_vfs;
    let nics: Vec<&preflight_model::Interface> = super::ordered_nics(snap, false)
        .into_iter()
        .filter(|n| !vfs.iter().any(|v| v == n))
        .filter_map(|n| snap.by_name(n))
        .collect();
    // Safe defaults skip a NIC whose sysfs addr_assign_type is not 0
    // (permanent). Enslaving a NIC to a kernel bond sets its MAC through
    // dev_set_mac_address, which makes it 3 (set) until reboot: the bond's
    // ports are left out. Read from kernel source, not yet seen in a VM;
    // leaving them out errs towards "stranded", never towards "reachable".
    let (ported, nics): (Vec<_>, Vec<_>) = nics.into_iter().partition(|i| i.bond_port.is_some());
    let interfaces: Vec<FallbackInterface> = nics
        .into_iter()
        .map(|i| {
            // Safe defaults set every NIC up before reading its carrier:
            // an admin-down NIC's link is unknown until then.
            let link = i.admin_up.then_some(i.carrier);
            FallbackInterface {
                name: i.name.clone(),
                written_as: None,
                addresses: vec!["dhcp".into()],
                gateway: None,
                link,
                dhcp_offered: offered(snap, exp, dhcp, &i.name),
                note: (link == Some(false)).then(|| "no carrier: left out".to_owned()),
            }
        })
        .collect();
    let (reachable, why) = verdict(&interfaces, |i| i.dhcp_offered == Some(true), |_| false);
    let skipped = if ported.is_empty() {
        String::new()
    } else {
        format!(
            "; bond ports {} left out (the bond set their MAC: addr_assign_type 3)",
            ported
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    FallbackPrediction {
        kind: FallbackKind::SafeDefaults,
        why: format!("{why}{skipped} ({rules})"),
        interfaces,
        reachable,
    }
}

fn fallback_config(
    snap: &Snapshot,
    exp: &Expectations,
    section: &FallbackSection,
    dhcp: &[DhcpProbeResult],
) -> FallbackPrediction {
    let mut interfaces = Vec::new();
    for x in section
        .interfaces
        .iter()
        .filter(|x| x.parent.is_none() && x.kind.in_kernel())
    {
        let link = link_of(snap, section, x, 0);
        let mut note = match (link, snap.by_name(&x.name)) {
            (Some(false), None) if x.kind == Kind::Interface => {
                Some("no such interface".to_owned())
            }
            (Some(false), _) => Some("no carrier".to_owned()),
            _ => None,
        };
        let gateway = x.default_route.flatten();
        if let Some(gw) =
            gateway.filter(|gw| !x.addresses.is_empty() && !on_link(&x.addresses, *gw))
        {
            note = Some(format!(
                "gateway {gw} is outside its addresses: no default route"
            ));
        } else if !x.dhcp && !x.addresses.is_empty() && x.default_route.is_none() {
            note.get_or_insert_with(|| NO_DEFAULT_ROUTE.to_owned());
        }
        interfaces.push(FallbackInterface {
            name: x.name.clone(),
            written_as: x.written_as.clone(),
            addresses: if x.dhcp {
                vec!["dhcp".into()]
            } else {
                x.addresses
                    .iter()
                    .map(|(a, l)| format!("{a}/{l}"))
                    .collect()
            },
            gateway: gateway.map(|g| g.to_string()),
            link,
            dhcp_offered: if x.dhcp {
                offered(snap, exp, dhcp, &x.name)
                    .or_else(|| offered_fb(snap, exp, section, dhcp, x, 0))
            } else {
                None
            },
            note,
        });
    }
    if section.entries > MAX_FALLBACK_ENTRIES {
        return FallbackPrediction {
            kind: FallbackKind::FallbackConfig,
            interfaces,
            reachable: Some(false),
            why: format!(
                "fallback_config has {} entries; os-net-config applies at most {MAX_FALLBACK_ENTRIES} and with more applies none",
                section.entries
            ),
        };
    }
    let static_address = |i: &FallbackInterface| i.addresses.first().is_some_and(|a| a != "dhcp");
    let (reachable, why) = verdict(
        &interfaces,
        |i| i.dhcp_offered == Some(true) || (static_address(i) && i.note.is_none()),
        // Without a default route only its own subnet reaches it, and
        // preflight does not know where SSH would come from.
        |i| static_address(i) && i.note.as_deref() == Some(NO_DEFAULT_ROUTE),
    );
    FallbackPrediction {
        kind: FallbackKind::FallbackConfig,
        interfaces,
        reachable,
        why,
    }
}

/// Reachable when an interface with link gives access; cannot tell when
/// one might (unknown link, DHCP not probed, or `unsure` says so);
/// stranded otherwise.
fn verdict(
    interfaces: &[FallbackInterface],
    gives_access: impl Fn(&FallbackInterface) -> bool,
    unsure: impl Fn(&FallbackInterface) -> bool,
) -> (Option<bool>, String) {
    let names = |f: &dyn Fn(&FallbackInterface) -> bool| {
        interfaces
            .iter()
            .filter(|i| f(i))
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ok = names(&|i| i.link == Some(true) && gives_access(i));
    if !ok.is_empty() {
        return (Some(true), format!("reachable through {ok}"));
    }
    let maybe: Vec<String> = interfaces
        .iter()
        .filter(|i| i.link != Some(false))
        .filter_map(|i| {
            let why = if i.link.is_none() {
                "link unknown"
            } else if i.addresses.first().is_some_and(|a| a == "dhcp") && i.dhcp_offered.is_none() {
                "no DHCP probe through it: `preflight probe dhcp@IFACE`"
            } else if unsure(i) {
                i.note.as_deref().unwrap_or("unknown")
            } else {
                return None;
            };
            Some(format!("{}: {why}", i.name))
        })
        .collect();
    if !maybe.is_empty() {
        return (
            None,
            format!(
                "cannot tell whether it would give access ({})",
                maybe.join("; ")
            ),
        );
    }
    if interfaces.is_empty() {
        return (Some(false), "no interface would be configured".into());
    }
    let why: Vec<String> = interfaces
        .iter()
        .map(|i| {
            let cause = match (i.link, i.dhcp_offered, i.note.as_deref()) {
                (Some(false), _, n) => n.unwrap_or("no carrier").to_owned(),
                (_, Some(false), _) => "no DHCP server answered".to_owned(),
                (_, _, Some(n)) => n.to_owned(),
                _ => "no address".to_owned(),
            };
            format!("{}: {cause}", i.name)
        })
        .collect();
    (
        Some(false),
        format!("no interface would give access ({})", why.join("; ")),
    )
}

/// Whether `a` lies in one of the subnets of `addresses`.
fn on_link(addresses: &[(IpAddr, u8)], a: IpAddr) -> bool {
    addresses.iter().any(|(net, len)| match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from((*len).min(32)))
                .unwrap_or(0);
            u32::from(*n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from((*len).min(128)))
                .unwrap_or(0);
            u128::from(*n) & mask == u128::from(a) & mask
        }
        _ => false,
    })
}

/// Link of a fallback entry: a NIC's carrier (unknown while admin-down);
/// a bond's or bridge's from its members in the section; an existing
/// netdev's carrier otherwise.
fn link_of(snap: &Snapshot, section: &FallbackSection, x: &Expected, depth: usize) -> Option<bool> {
    let members: Vec<&Expected> = section
        .interfaces
        .iter()
        .filter(|m| m.parent.as_deref() == Some(x.name.as_str()) && x.members.contains(&m.name))
        .collect();
    if x.kind == Kind::Interface || members.is_empty() || depth >= MAX_DEPTH {
        return match snap.by_name(&x.name) {
            None if x.kind == Kind::Interface => Some(false),
            None => None,
            Some(i) => i.admin_up.then_some(i.carrier),
        };
    }
    let links: Vec<Option<bool>> = members
        .iter()
        .map(|m| link_of(snap, section, m, depth + 1))
        .collect();
    if links.contains(&Some(true)) {
        Some(true)
    } else if links.iter().all(|l| *l == Some(false)) {
        Some(false)
    } else {
        None
    }
}

/// The DHCP probes that tell about untagged DHCP on `nic`: one on the NIC
/// itself, or on an entry of the running configuration whose members lead
/// to it without a VLAN in between (a bond, a bridge over a bond). `None`
/// when none ran (or none could be sent).
fn offered(
    snap: &Snapshot,
    exp: &Expectations,
    dhcp: &[DhcpProbeResult],
    nic: &str,
) -> Option<bool> {
    let bonds = snap.bonds();
    // A probe on a bond leaves through its active port only: it says
    // nothing of the others (nor of any port while no single one is active,
    // 802.3ad, balance modes, or no such bond in the kernel or OVSDB).
    let next = |e: &Expected, m: &str| {
        !is_bond(e.kind)
            || bonds
                .iter()
                .any(|b| b.name == e.name && b.active_port.as_deref() == Some(m))
    };
    let answers: Vec<bool> = dhcp
        .iter()
        .filter(|r| {
            r.error.is_none()
                && (r.interface == nic || leads_to(&exp.interfaces, &r.interface, nic, &next, 0))
        })
        .map(|r| r.offered)
        .collect();
    (!answers.is_empty()).then(|| answers.contains(&true))
}

/// A fallback entry's DHCP answer through its own members (a fallback bond
/// of NICs probed in the running configuration). A bond picks its active
/// port only when it comes up: its NICs must all agree. A bridge floods the
/// request out of every port: one answer is enough.
fn offered_fb(
    snap: &Snapshot,
    exp: &Expectations,
    section: &FallbackSection,
    dhcp: &[DhcpProbeResult],
    x: &Expected,
    depth: usize,
) -> Option<bool> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let answers: Vec<Option<bool>> = section
        .interfaces
        .iter()
        .filter(|m| {
            m.parent.as_deref() == Some(x.name.as_str())
                && x.members.contains(&m.name)
                && m.kind != Kind::Vlan
        })
        .map(|m| {
            offered(snap, exp, dhcp, &m.name)
                .or_else(|| offered_fb(snap, exp, section, dhcp, m, depth + 1))
        })
        .collect();
    if answers.is_empty() {
        return None;
    }
    let all = |v: bool| answers.iter().all(|a| *a == Some(v));
    if all(true) {
        Some(true)
    } else if all(false) {
        Some(false)
    } else if !is_bond(x.kind) && answers.contains(&Some(true)) {
        Some(true)
    } else {
        None
    }
}

/// Kinds that send a frame through one port of several.
fn is_bond(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::LinuxBond | Kind::OvsBond | Kind::OvsDpdkBond | Kind::Team
    )
}

/// Whether untagged frames from `from` reach `nic` through members that
/// `next(entry, member)` lets them take.
fn leads_to(
    entries: &[Expected],
    from: &str,
    nic: &str,
    next: &dyn Fn(&Expected, &str) -> bool,
    depth: usize,
) -> bool {
    if depth >= MAX_DEPTH {
        return false;
    }
    entries
        .iter()
        .filter(|e| e.name == from && e.kind != Kind::Vlan)
        .flat_map(|e| e.members.iter().filter(move |m| next(e, m)))
        .any(|m| {
            let is_vlan = entries.iter().any(|e| e.name == *m && e.kind == Kind::Vlan);
            !is_vlan && (m == nic || leads_to(entries, m, nic, next, depth + 1))
        })
}
