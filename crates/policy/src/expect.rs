//! Expected state: what the node's network should look like, read from its
//! os-net-config file as it is (YAML or JSON), and the rules that compare the
//! running state with it. Catches the seed failure's second half: the
//! configurator's fallback to DHCP, a lost static address, a lost default
//! route, a missing bond member.
//!
//! Entry types preflight does not model (ovs_user_bridge, ib_interface,
//! contrail_vrouter, ...) are listed in `unsupported`, never an error.

use std::net::IpAddr;

use preflight_model::{BondMode, Snapshot};

use crate::{raw, Code, Raw};

mod baseline;
mod common;
mod fallback;
mod ifupdown;
mod netplan;
mod networkd;
mod networkmanager;
pub(crate) mod nics;
mod osnc;
mod osnc_files;
mod ovs_entry;
mod unseen;
mod yaml;

pub use baseline::from_snapshot;
pub(crate) use fallback::ignored_rule as fallback_ignored_rule;
pub(crate) use fallback::rule as fallback_rule;
pub use fallback::{predict_fallback, FallbackSection, MAX_FALLBACK_ENTRIES};
pub use ifupdown::{
    from_ifupdown, ifupdown_dir_entry, ifupdown_glob, ifupdown_includes, ifupdown_is_glob,
    IfupdownFile, Include, MAX_IFUPDOWN_DEPTH, MAX_IFUPDOWN_FILES, MAX_IFUPDOWN_FILE_BYTES,
    MAX_IFUPDOWN_LINE_BYTES,
};
pub use netplan::{from_netplan, NetplanFile, MAX_NETPLAN_FILES, MAX_NETPLAN_FILE_BYTES};
pub use networkd::{from_networkd, NetworkdFile, MAX_NETWORKD_FILES, MAX_NETWORKD_FILE_BYTES};
pub use networkmanager::{
    from_networkmanager, DhcpExposure, NmKeyfile, MAX_NM_FILES, MAX_NM_FILE_BYTES,
};
pub use nics::{
    in_force_mapping, next_run, nic_mapping, ordered_nics, osnc_order, valid_mac, DpdkBound,
    NextRun, OsncState, Unmatched,
};
pub use osnc::{from_os_net_config, parse_document};
pub use osnc_files::{dpdk_map, sriov_names};
pub use unseen::UnseenBond;
pub use yaml::{MAX_DOCUMENT_BYTES, MAX_DOCUMENT_NODES, MAX_EXPANDED_BYTES};

/// Kinds of entries preflight checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `interface`: a NIC.
    Interface,
    /// `linux_bond`.
    LinuxBond,
    /// `ovs_bridge` (a netdev of kind openvswitch).
    OvsBridge,
    /// `ovs_bond`: no kernel netdev of its own; its members are checked.
    OvsBond,
    /// `vlan`.
    Vlan,
    /// `linux_bridge`.
    LinuxBridge,
    /// `ovs_user_bridge`: an OVS bridge on the userspace (DPDK) datapath.
    OvsUserBridge,
    /// `ovs_dpdk_bond`: checked in OVSDB only, like `ovs_bond`.
    OvsDpdkBond,
    /// `ovs_dpdk_port`: an OVSDB interface of type `dpdk`, no kernel netdev.
    OvsDpdkPort,
    /// An `interface` bound to DPDK (inside an `ovs_dpdk_port` and the like):
    /// not a kernel netdev once bound, so not looked for in the kernel.
    DpdkNic,
    /// `team` (libteam; RHEL 7-era deployments).
    Team,
}

impl Kind {
    /// Kinds that exist only in OVSDB, never as a kernel netdev.
    #[must_use]
    pub fn ovs_only(self) -> bool {
        matches!(self, Self::OvsBond | Self::OvsDpdkBond | Self::OvsDpdkPort)
    }

    /// Kinds that exist as a kernel netdev, so their absence there is a
    /// finding.
    #[must_use]
    pub fn in_kernel(self) -> bool {
        !self.ovs_only() && self != Self::DpdkNic
    }

    /// Kinds that mean Open vSwitch runs on the node.
    #[must_use]
    pub fn needs_ovs(self) -> bool {
        self.ovs_only() || matches!(self, Self::OvsBridge | Self::OvsUserBridge)
    }
}

/// One expected interface.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// Name after nicN mapping.
    pub name: String,
    /// As written in the file (`nic1`), when it was mapped.
    pub written_as: Option<String>,
    /// Kind.
    pub kind: Kind,
    /// The entry whose `members` hold this one (`br-ex` for an `ovs_bond`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `use_dhcp: true`.
    pub dhcp: bool,
    /// Static addresses with prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// A default route is expected (route with `default: true` or 0.0.0.0/0, ::/0).
    pub default_route: Option<Option<IpAddr>>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Members (bonds), after mapping.
    pub members: Vec<String>,
    /// `mode=` of `bonding_options`.
    pub bond_mode: Option<BondMode>,
    /// `miimon=` of `bonding_options`.
    pub bond_miimon: Option<u32>,
    /// `file:line` of each declaration, for messages: `""` the entry
    /// itself, `member:NAME`, `address:IP/LEN`, `mode`, `miimon`, `route`,
    /// `mtu`. Empty for files without line-level positions.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub declared_at: std::collections::BTreeMap<String, String>,
}

impl Expected {
    /// Where `key` was declared (`file:line`), else `src`.
    fn at<'a>(&'a self, key: &str, src: &'a str) -> &'a str {
        self.declared_at.get(key).map_or(src, String::as_str)
    }
}

/// Everything expected of a node.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Expectations {
    /// Where they came from (for messages).
    pub source: String,
    /// Interfaces.
    pub interfaces: Vec<Expected>,
    /// Entries not modelled, as `type name` (reported, not checked).
    pub unsupported: Vec<String>,
    /// Bonds configured in a datapath preflight cannot read (reported as
    /// BOND_HEALTH_UNKNOWN, not as unchecked entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_bonds: Vec<UnseenBond>,
    /// An os-net-config file's `fallback_config` (`None`: not such a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSection>,
    /// How the file's `nicN` names resolve.
    #[serde(default)]
    pub nics: NicPlan,
    /// Declarations preflight does not check (an unknown key, a match it
    /// cannot evaluate), each naming its `file:line`: EXPECTATION_UNCHECKED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<Unchecked>,
    /// The files read, in the order read, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Physical NICs NetworkManager would give an automatic DHCP profile:
    /// UNEXPECTED_DHCP_EXPOSURE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp_exposure: Vec<DhcpExposure>,
}

/// One declaration preflight reads past without checking it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unchecked {
    /// `file:line`.
    pub at: String,
    /// What is not checked and why.
    pub what: String,
}

/// The `nicN` names of an os-net-config file and the NICs they are on.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NicPlan {
    /// The `nicN` names the file uses, in natural order.
    #[serde(default)]
    pub names: Vec<String>,
    /// The mapping in force (`nic2` → `eth1`); a name the configuration was
    /// built without a NIC for is absent.
    pub in_force: std::collections::BTreeMap<String, String>,
    /// What os-net-config reads besides the kernel when it numbers NICs
    /// (mapping file, DPDK and SR-IOV state, its version): the next run is
    /// computed from it.
    #[serde(default)]
    pub osnc: OsncState,
}

/// A file that cannot be read as expectations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {reason}")]
pub struct ExpectError {
    /// File.
    pub file: String,
    /// Path in the document (`network_config[2].addresses[0].ip_netmask`).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Compares the running state with the expectations.
#[must_use]
pub fn rules(snap: &Snapshot, exp: &Expectations) -> Vec<Raw> {
    let mut out = Vec::new();
    let src = &exp.source;
    let next = next_run(snap, &exp.nics.osnc);
    for (nic, m) in nic_table_with(snap, exp, &next) {
        if let Some(reason) = m.reason {
            out.push(raw(
                Code::NicRenumbered,
                &nic,
                format!(
                    "{nic} is {} now, but os-net-config's next run would map it to {} because {reason}: the update would build the network of {src} on the wrong NICs (and may fall back to DHCP). Restore the link, or pin the nicN names by MAC (lower case, as the kernel writes it) in /etc/os-net-config/mapping.yaml before the update ({})",
                    m.in_force.as_deref().unwrap_or("unmapped"),
                    m.next_run.as_deref().unwrap_or("no NIC at all"),
                    exp.nics.osnc.rules_followed(),
                ),
            ));
        }
    }
    let mapping_file = exp
        .nics
        .osnc
        .mapping_file
        .as_deref()
        .unwrap_or("the mapping file");
    for u in &next.unmatched {
        let now = next.map.get(&u.nic).map_or_else(
            || "no NIC at all".to_owned(),
            |d| format!("{d}, by position"),
        );
        out.push(raw(
            Code::MappingEntryUnmatched,
            &u.nic,
            format!(
                "{mapping_file} maps {} to `{}`, which matches no NIC: {}. os-net-config ignores the entry and maps {} to {now}, so the name it meant to pin moves",
                u.nic,
                preflight_model::excerpt::excerpt(&u.value),
                u.why,
                u.nic
            ),
        ));
    }
    out.extend(exp.unseen_bonds.iter().map(|b| unseen::rule(b, src)));
    out.extend(exp.dhcp_exposure.iter().map(|d| {
        raw(
            Code::UnexpectedDhcpExposure,
            &d.nic,
            format!(
                "{}: {} (in {src}): NetworkManager would give it an automatic \"Wired connection\" profile and ask for DHCP; set no-auto-default=* or give it a profile",
                d.at, d.why
            ),
        )
    }));
    out.extend(exp.unchecked.iter().map(|u| {
        raw(
            Code::ExpectationUnchecked,
            &u.at,
            format!(
                "{}: {} (in {src}); preflight does not check it",
                u.at, u.what
            ),
        )
    }));
    for u in &exp.unsupported {
        out.push(raw(
            Code::ExpectationUnchecked,
            u,
            format!("`{u}` in {src} is of a type preflight does not check: its interface members are checked, the entry itself is not"),
        ));
    }
    if exp.interfaces.iter().any(|x| x.kind.needs_ovs()) {
        out.extend(crate::ovs::unreadable(
            &snap.ovs,
            &format!("{src} configures Open vSwitch bridges or bonds"),
        ));
    }
    let has_default = |v6: bool| snap.routes.iter().any(|r| r.is_default() && r.ipv6 == v6);
    // A member that is no entry of its own (an unmodelled type such as
    // sriov_vf) is reported as EXPECTATION_UNCHECKED, not looked for.
    let kind_of = |name: &str| {
        exp.interfaces
            .iter()
            .find(|e| e.name == name)
            .map_or(Kind::DpdkNic, |e| e.kind)
    };
    for x in &exp.interfaces {
        let written = x
            .written_as
            .as_ref()
            .map_or_else(String::new, |w| format!(" ({w} in {src})"));
        let running = snap.by_name(&x.name);
        if x.kind.in_kernel() && running.is_none() {
            out.push(raw(
                Code::ExpectedInterfaceMissing,
                &x.name,
                format!(
                    "{}{written} is configured in {} but does not exist on the node",
                    x.name,
                    x.at("", src)
                ),
            ));
        }
        if x.kind.ovs_only() {
            ovs_entry::rules(snap, exp, x, src, &mut out);
        }
        for m in x.members.iter().filter(|m| kind_of(m).in_kernel()) {
            match snap.by_name(m) {
                None => out.push(raw(
                    Code::BondMemberMissing,
                    format!("{}/{m}", x.name),
                    format!(
                        "{m}, a member of {} in {}, does not exist on the node",
                        x.name,
                        x.at(&format!("member:{m}"), src)
                    ),
                )),
                Some(i) if !i.carrier && kind_of(m) == Kind::Interface => out.push(raw(
                    Code::BondMemberMissing,
                    format!("{}/{m}", x.name),
                    format!(
                        "{m}, a member of {} in {}, has no carrier; rebuilding {} with it may fail",
                        x.name,
                        x.at(&format!("member:{m}"), src),
                        x.name
                    ),
                )),
                Some(i)
                    if x.kind == Kind::Team
                        && running.is_some_and(|t| i.controller != Some(t.index)) =>
                {
                    out.push(raw(
                        Code::BondMemberMissing,
                        format!("{}/{m}", x.name),
                        format!(
                            "{m}, a member of team {} in {src}, is not a port of {}",
                            x.name, x.name
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if !x.kind.in_kernel() {
            continue; // addresses, routes and MTU live on kernel netdevs
        }
        if let Some(gw) = x.default_route {
            let v6 = gw.is_some_and(|g| g.is_ipv6());
            let defaults: Vec<&preflight_model::Route> = snap
                .routes
                .iter()
                .filter(|r| r.is_default() && r.ipv6 == v6)
                .collect();
            let via_expected = defaults
                .iter()
                .any(|r| gw.is_none_or(|g| r.gateway == Some(g)));
            if !defaults.is_empty() && !via_expected {
                let actual: Vec<String> = defaults
                    .iter()
                    .map(|r| {
                        format!(
                            "via {} on {} ({})",
                            r.gateway.map_or_else(|| "-".into(), |g| g.to_string()),
                            r.oif.map_or_else(|| "-".into(), |o| snap.name_of(o)),
                            r.protocol
                        )
                    })
                    .collect();
                out.push(raw(
                    Code::DefaultRouteMissing,
                    &x.name,
                    format!(
                        "the default route is {} but {} configures it via {} on {}",
                        actual.join(", "),
                        x.at("route", src),
                        gw.map_or_else(|| "-".into(), |g| g.to_string()),
                        x.name
                    ),
                ));
            } else if !has_default(v6) {
                out.push(raw(
                    Code::DefaultRouteMissing,
                    &x.name,
                    format!(
                        "no {} default route, but {} configures one on {}{}",
                        if v6 { "IPv6" } else { "IPv4" },
                        x.at("route", src),
                        x.name,
                        gw.map_or_else(String::new, |g| format!(" via {g}"))
                    ),
                ));
            }
        }
        let Some(iface) = running else {
            // The addresses it should carry are gone with it.
            for (ip, len) in &x.addresses {
                out.push(raw(
                    Code::ExpectedAddressMissing,
                    format!("{}/{ip}", x.name),
                    format!("{ip}/{len} is configured on {}{written}{}, which does not exist; the node may be unreachable on this network", x.name, declared(x, &format!("address:{ip}/{len}"))),
                ));
            }
            continue;
        };
        for (ip, len) in &x.addresses {
            let present = snap
                .addresses_of(iface.index)
                .any(|a| a.address == *ip && a.prefix_len == *len);
            if !present {
                out.push(raw(
                    Code::ExpectedAddressMissing,
                    format!("{}/{ip}", x.name),
                    format!("{ip}/{len} is configured on {}{written}{} but not present; the node may be unreachable on this network", x.name, declared(x, &format!("address:{ip}/{len}"))),
                ));
            }
        }
        if !x.dhcp {
            let dynamic: Vec<String> = snap
                .addresses_of(iface.index)
                .filter(|a| !a.permanent && a.scope == "global" && a.address.is_ipv4())
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect();
            let dhcp_route = snap
                .routes
                .iter()
                .any(|r| r.oif == Some(iface.index) && r.protocol == "dhcp");
            if !dynamic.is_empty() || dhcp_route {
                out.push(raw(
                    Code::UnexpectedDhcp,
                    &x.name,
                    format!(
                        "{} has {} but {src} configures it statically: the network configurator may have fallen back to DHCP",
                        x.name,
                        if dynamic.is_empty() { "a DHCP route".to_string() } else { format!("a dynamic address ({})", dynamic.join(", ")) }
                    ),
                ));
            }
        }
        if let Some(mtu) = x.mtu {
            if iface.mtu != mtu {
                out.push(raw(
                    Code::MtuMismatch,
                    &x.name,
                    format!(
                        "{} has MTU {} but {} configures {mtu}",
                        x.name,
                        iface.mtu,
                        x.at("mtu", src)
                    ),
                ));
            }
        }
        if x.kind == Kind::LinuxBond {
            if let Some(b) = &iface.bond {
                if let Some(m) = x.bond_mode.filter(|m| *m != b.mode) {
                    out.push(raw(
                        Code::BondModeMismatch,
                        &x.name,
                        format!(
                            "{} runs in mode {} but {} configures {m}",
                            x.name,
                            b.mode,
                            x.at("mode", src)
                        ),
                    ));
                }
                if let Some(mi) = x.bond_miimon.filter(|m| *m != b.miimon_ms) {
                    out.push(raw(
                        Code::BondModeMismatch,
                        &x.name,
                        format!(
                            "{} runs with miimon {} but {} configures {mi}",
                            x.name,
                            b.miimon_ms,
                            x.at("miimon", src)
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// ` (declared at FILE:LINE)` when `key` of `x` has a position.
fn declared(x: &Expected, key: &str) -> String {
    x.declared_at
        .get(key)
        .map_or_else(String::new, |a| format!(" (declared at {a})"))
}

/// Each `nicN` of the expectations: the NIC it is on now and the one
/// os-net-config would map it to now, with the reason when they differ.
#[must_use]
pub fn nic_table(
    snap: &Snapshot,
    exp: &Expectations,
) -> std::collections::BTreeMap<String, preflight_model::NicMapping> {
    nic_table_with(snap, exp, &next_run(snap, &exp.nics.osnc))
}

fn nic_table_with(
    snap: &Snapshot,
    exp: &Expectations,
    next: &NextRun,
) -> std::collections::BTreeMap<String, preflight_model::NicMapping> {
    let all = osnc_order(snap, &exp.nics.osnc, false);
    let names: Vec<&String> = if exp.nics.names.is_empty() {
        exp.nics.in_force.keys().collect()
    } else {
        exp.nics.names.iter().collect()
    };
    names
        .into_iter()
        .map(|nic| {
            let in_force = exp.nics.in_force.get(nic);
            let next_run = next.map.get(nic).cloned();
            // A mapping os-net-config refuses stops its run: said for every
            // name, even one that had no NIC either way.
            let reason = (next.refused.is_some() || next_run.as_ref() != in_force).then(|| {
                if let Some(r) = &next.refused {
                    return format!("os-net-config would stop at the mapping file: {r}");
                }
                if let Some(u) = next.unmatched.iter().find(|u| &u.nic == nic) {
                    return format!(
                        "its mapping entry `{}` matches no NIC ({})",
                        preflight_model::excerpt::excerpt(&u.value),
                        u.why
                    );
                }
                let Some(now) = in_force else {
                    return "the configuration was built without a NIC for it (its position was taken by the mapping file or had no NIC)".to_owned();
                };
                // NICs at or before this one in os-net-config's order that it
                // would skip now: each shifts every later nicN by one.
                let upto = all
                    .iter()
                    .position(|n| n == now)
                    .map_or(all.len(), |p| p + 1);
                let why: Vec<String> = all[..upto]
                    .iter()
                    .filter_map(|n| nics::why_not_counted(snap, n))
                    .collect();
                if why.is_empty() {
                    "the NICs that are up differ from those the configuration was built on"
                        .to_owned()
                } else {
                    why.join(", ")
                }
            });
            (
                nic.clone(),
                preflight_model::NicMapping {
                    in_force: in_force.cloned(),
                    next_run,
                    reason,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
