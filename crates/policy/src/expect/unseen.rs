//! Bonds os-net-config builds where preflight cannot look: inside Contrail's
//! DPDK vrouter or VPP. They are neither kernel bonds nor OVSDB ports, so a
//! dead member is invisible to every rule; "cannot tell" is no-go
//! (BOND_HEALTH_UNKNOWN), which an operator who watches the bond by other
//! means lowers in policy with a stated reason.

use crate::{raw, Code, Raw};

/// A bond os-net-config configures in a datapath whose health preflight
/// cannot read: `contrail_vrouter_dpdk` with `bond_mode` or several members
/// (a DPDK bond inside Contrail's vrouter), `vpp_bond` (a bond inside VPP).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnseenBond {
    /// The entry's name (`vhost0`).
    pub name: String,
    /// Its os-net-config type (`contrail_vrouter_dpdk`).
    pub entry_type: String,
    /// Where it is in the file (`network_config[0]`).
    pub path: String,
    /// Its members, after nicN mapping.
    pub members: Vec<String>,
    /// `bond_mode 2` or `bonding_options ...` as written, when given.
    pub mode: Option<String>,
}

/// BOND_HEALTH_UNKNOWN for `b`, configured in `src`.
pub(super) fn rule(b: &UnseenBond, src: &str) -> Raw {
    let (datapath, look) = match b.entry_type.as_str() {
        "vpp_bond" => ("VPP", "`vppctl show bond details`"),
        _ => (
            "Contrail's DPDK vrouter",
            "the vrouter's own tools (`dpdkinfo -b` in the vrouter container)",
        ),
    };
    let members = if b.members.is_empty() {
        "no members listed".to_owned()
    } else {
        b.members.join(", ")
    };
    raw(
        Code::BondHealthUnknown,
        &b.name,
        format!(
            "{} in {src} at {} ({}) configures a bond of {members}{} inside {datapath}: it is neither a kernel bond nor an OVSDB port, so preflight cannot see whether its members are up and cannot tell whether it still has redundancy; a dead member would take the node's data plane down when the update rebuilds it. Check it with {look}; if another monitor watches it, lower BOND_HEALTH_UNKNOWN in [policy.severity] with the reason in [policy.reasons]",
            b.name,
            b.path,
            b.entry_type,
            b.mode.as_ref().map_or_else(String::new, |m| format!(" ({m})")),
        ),
    )
}
