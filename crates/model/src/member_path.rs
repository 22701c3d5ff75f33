//! The member path check's results as reported: whether each bond member,
//! on its own, reaches each peer of each network the bond carries (an ARP
//! probe out of that member, see `preflight_probe::member`). A member that
//! cannot reach what another member of its bond reaches is a failover that
//! would cut that network off (BOND_PORT_NO_PATH).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One (bond, member, network, target) path and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberPathStatus {
    /// Bond (or team) name.
    pub bond: String,
    /// The member the probes leave by.
    pub member: String,
    /// The interface holding the network's address (`bond0`, `bond0.200`).
    pub network: String,
    /// 802.1Q VLAN id of the network; absent when untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Who should answer.
    pub target: Ipv4Addr,
    /// ARP requests sent in the last check.
    pub sent: u32,
    /// ARP requests answered in the last check.
    pub answered: u32,
    /// Unanswered `fail_after` checks in a row and not yet recovered
    /// (`recover_after` answered checks in a row).
    pub failed: bool,
    /// Answered recently and not failed: the path carries traffic.
    pub up: bool,
    /// Unanswered checks in a row now.
    pub consecutive_failures: u32,
    /// The source MAC the requests carry (the member's permanent address,
    /// or a locally administered variant when the node uses that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mac: Option<String>,
    /// Why the last check failed or could not be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The check could not be made at all (no CAP_NET_RAW, interface gone):
    /// this node cannot tell whether the path works.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
}

impl MemberPathStatus {
    /// `bond0/eth1` and where it goes: `10.200.0.1 on bond0.200 (VLAN 200)`.
    #[must_use]
    pub fn describe_target(&self) -> String {
        match self.vlan {
            Some(v) => format!("{} on {} (VLAN {v})", self.target, self.network),
            None => format!("{} on {}", self.target, self.network),
        }
    }
}
