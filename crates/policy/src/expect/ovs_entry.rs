//! Entries that live only in OVSDB (`ovs_bond`, `ovs_dpdk_bond`,
//! `ovs_dpdk_port`): checked against the bridges OVSDB reports, not the
//! kernel.

use preflight_model::Snapshot;

use super::{Expectations, Expected, Kind};
use crate::{raw, Code, Raw};

/// An OVS-only entry (`ovs_bond`, `ovs_dpdk_bond`, `ovs_dpdk_port`) checked
/// against OVSDB: the port exists (in its bridge) with the configured members.
/// When OVSDB cannot be read, OVS_STATE_UNREADABLE already says so.
pub(super) fn rules(
    snap: &Snapshot,
    exp: &Expectations,
    x: &Expected,
    src: &str,
    out: &mut Vec<Raw>,
) {
    if !snap.ovs.is_ok() {
        return;
    }
    let bridges = snap.ovs.bridges();
    if x.kind == Kind::OvsDpdkPort {
        let found = bridges
            .iter()
            .flat_map(|b| &b.ports)
            .flat_map(|p| &p.interfaces)
            .any(|i| i.name == x.name);
        if !found {
            out.push(raw(
                Code::ExpectedInterfaceMissing,
                &x.name,
                format!("DPDK port {} is configured in {src} but OVSDB has no interface of that name (`ovs-vsctl list Interface {}`)", x.name, x.name),
            ));
        }
        return;
    }
    let within = x.parent.as_deref();
    let port = bridges
        .iter()
        .filter(|b| within.is_none_or(|p| b.name == p))
        .flat_map(|b| &b.ports)
        .find(|p| p.name == x.name);
    let Some(port) = port else {
        out.push(raw(
            Code::ExpectedInterfaceMissing,
            &x.name,
            format!(
                "OVS bond {} is configured in {src}{} but OVSDB has no such port (`ovs-vsctl show`)",
                x.name,
                within.map_or_else(String::new, |p| format!(" on bridge {p}"))
            ),
        ));
        return;
    };
    // Members of unmodelled types (sriov_vf) are reported as unchecked.
    let modelled = |m: &String| exp.interfaces.iter().any(|e| e.name == *m);
    for m in x.members.iter().filter(|m| modelled(m)) {
        if !port.interfaces.iter().any(|i| i.name == *m) {
            out.push(raw(
                Code::BondMemberMissing,
                format!("{}/{m}", x.name),
                format!(
                    "{m}, a member of OVS bond {} in {src}, is not a member of {} in OVSDB (members there: {})",
                    x.name,
                    x.name,
                    port.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
}
