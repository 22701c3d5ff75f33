//! A baseline: the running state as expectations (`preflight baseline`).

use preflight_model::Snapshot;

use super::{Expectations, Expected, Kind, NicPlan};

/// A baseline: the node's current state as expectations, so that a later
/// comparison reports every difference with the same rules (`preflight
/// baseline`). Only what configuration controls is kept: interfaces with
/// their kind, MTU and bond settings, permanent global addresses, the default
/// gateway; bond members are the ports that were up.
#[must_use]
pub fn from_snapshot(snap: &Snapshot, source: &str) -> Expectations {
    let default_gw = snap
        .routes
        .iter()
        .find(|r| r.is_default() && !r.ipv6)
        .map(|r| (r.oif, r.gateway));
    let interfaces = snap
        .interfaces
        .values()
        .filter(|i| i.name != "lo")
        .map(|i| {
            let kind = match (i.kind.as_deref(), i.bond.is_some()) {
                (_, true) => Kind::LinuxBond,
                (Some("vlan"), _) => Kind::Vlan,
                (Some("bridge"), _) => Kind::LinuxBridge,
                (Some("openvswitch"), _) => Kind::OvsBridge,
                _ => Kind::Interface,
            };
            Expected {
                name: i.name.clone(),
                written_as: None,
                kind,
                parent: None,
                // A dynamic address today is not a finding tomorrow.
                dhcp: snap.addresses_of(i.index).any(|a| !a.permanent),
                addresses: snap
                    .addresses_of(i.index)
                    .filter(|a| a.permanent && a.scope == "global")
                    .map(|a| (a.address, a.prefix_len))
                    .collect(),
                default_route: default_gw
                    .filter(|(oif, _)| *oif == Some(i.index))
                    .map(|(_, gw)| gw),
                mtu: Some(i.mtu),
                members: snap
                    .ports_of(i.index)
                    .into_iter()
                    .filter(|p| i.bond.is_some() && p.carrier)
                    .map(|p| p.name.clone())
                    .collect(),
                bond_mode: i.bond.as_ref().map(|b| b.mode),
                bond_miimon: i.bond.as_ref().map(|b| b.miimon_ms),
                declared_at: std::collections::BTreeMap::new(),
            }
        })
        .collect();
    Expectations {
        source: source.to_owned(),
        interfaces,
        unsupported: Vec::new(),
        unseen_bonds: Vec::new(),
        fallback: None,
        nics: NicPlan::default(),
        unchecked: Vec::new(),
        files: Vec::new(),
        dhcp_exposure: Vec::new(),
    }
}
