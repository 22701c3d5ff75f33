//! Every code preflight emits, in one place: the finding codes the policy
//! derives from a node's state, and the node-level blocker codes the
//! aggregator adds (a silent, stale or settling node, an empty inventory).
//! One macro line per code holds its stable string, default severity and
//! meaning, so the string on the wire, the docs and the rules cannot drift.
//! A code never changes meaning once released; severities are configurable,
//! codes are not.
//!
//! On the wire a code is its stable string (`"BOND_PORT_DOWN"`). Parsing an
//! unknown string is an error: an aggregator older than an agent rejects the
//! agent's report (400) rather than vouch for a finding it does not know, so
//! aggregators are upgraded before agents.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Severity;

macro_rules! codes {
    (
        finding { $($f:ident = $fname:literal, $fsev:ident, $fdoc:literal;)* }
        node { $($n:ident = $nname:literal, $ndoc:literal;)* }
    ) => {
        /// Every code preflight can emit: finding codes, then node-level
        /// blocker codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $fdoc] $f,)*
            $(#[doc = $ndoc] $n,)*
        }

        /// Finding codes (what the policy reports about a node's state), in
        /// documentation order.
        pub const FINDING_CODES: &[Code] = &[$(Code::$f,)*];

        /// Node-level blocker codes (what the aggregator says about a node or
        /// the inventory as a whole), in documentation order.
        pub const NODE_CODES: &[Code] = &[$(Code::$n,)*];

        impl Code {
            /// The stable string (`BOND_PORT_DOWN`).
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$f => $fname,)*
                    $(Self::$n => $nname,)*
                }
            }

            /// Parses the stable string of any code.
            #[must_use]
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($fname => Some(Self::$f),)*
                    $($nname => Some(Self::$n),)*
                    _ => None,
                }
            }

            /// Severity when not configured (node-level codes always block).
            #[must_use]
            pub fn default_severity(self) -> Severity {
                match self {
                    $(Self::$f => Severity::$fsev,)*
                    $(Self::$n => Severity::Critical,)*
                }
            }

            /// One-line meaning, for docs and `--help`.
            #[must_use]
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$f => $fdoc,)*
                    $(Self::$n => $ndoc,)*
                }
            }

            /// Whether the policy reports this code about a node's state (as
            /// opposed to the aggregator, about a node or the inventory).
            #[must_use]
            pub fn is_finding(self) -> bool {
                !matches!(self, $(Self::$n)|*)
            }
        }
    };
}

codes! {
    finding {
        BondPortDown = "BOND_PORT_DOWN", Critical, "a bond port's MII status is not up";
        BondDegraded = "BOND_DEGRADED", Critical, "fewer ports up than enslaved, or fewer ports than the minimum (2)";
        BondDown = "BOND_DOWN", Critical, "the bond has no carrier or is not operationally up";
        BondNoActivePort = "BOND_NO_ACTIVE_PORT", Critical, "an active-backup bond has no active port";
        LacpNotNegotiated = "LACP_NOT_NEGOTIATED", Critical, "an 802.3ad port has no LACP partner, defaulted partner data, or is not collecting and distributing";
        LacpAggregatorSplit = "LACP_AGGREGATOR_SPLIT", Critical, "an 802.3ad port is in another aggregator than the bond's active one";
        BondNoLinkMonitor = "BOND_NO_LINK_MONITOR", Critical, "miimon and arp_interval are both 0: a port failure would go unseen";
        LinkFlapping = "LINK_FLAPPING", Warning, "carrier changes above the threshold within the window";
        PortSpeedMismatch = "PORT_SPEED_MISMATCH", Warning, "ports of one bond run at different speed or duplex";
        LinkNoCarrier = "LINK_NO_CARRIER", Warning, "an admin-up interface outside any bond has no carrier";
        StateUnreadable = "STATE_UNREADABLE", Critical, "part of the kernel's report on an interface could not be parsed, so preflight cannot vouch for it";
        ExpectedInterfaceMissing = "EXPECTED_INTERFACE_MISSING", Critical, "an interface of the expected configuration does not exist";
        BondMemberMissing = "BOND_MEMBER_MISSING", Critical, "a configured bond member (Linux or OVS bond) is absent or has no carrier";
        ExpectedAddressMissing = "EXPECTED_ADDRESS_MISSING", Critical, "a configured static address is not on its interface";
        UnexpectedDhcp = "UNEXPECTED_DHCP", Critical, "a dynamic (DHCP) address or route where the configuration is static: the configurator fell back to DHCP";
        DefaultRouteMissing = "DEFAULT_ROUTE_MISSING", Critical, "the configured default route is missing";
        MtuMismatch = "MTU_MISMATCH", Critical, "an interface's MTU differs from the configured one";
        BondModeMismatch = "BOND_MODE_MISMATCH", Critical, "a bond's running mode or miimon differs from its bonding_options";
        ReachabilityFailed = "REACHABILITY_FAILED", Critical, "a reachability probe (ICMP or TCP, bound to an interface) failed several times in a row";
        BondPortNoPath = "BOND_PORT_NO_PATH", Critical, "a bond member cannot reach a peer (ARP through that member alone) that another member of the bond reaches: a failover to it cuts that network off";
        BondPortPathUnchecked = "BOND_PORT_PATH_UNCHECKED", Warning, "a bond member's own path cannot be checked (a DPDK member, a check that could not be sent, a bond with no target on its networks, its addresses on a bridge or OVS port above it, IPv6 only, an OVS bond of kernel netdevs, or past the 256-path cap): its redundancy is unproven";
        BondSingleSwitch = "BOND_SINGLE_SWITCH", Warning, "every member of an active-backup, balance-alb or balance-tlb bond hears one switch over LLDP: no switch redundancy";
        MtuExceedsSwitch = "MTU_EXCEEDS_SWITCH", Critical, "a bond member's MTU needs larger frames than its switch port's LLDP maximum frame size: larger packets are dropped there";
        SwitchVlanMissing = "SWITCH_VLAN_MISSING", Critical, "a VLAN the node uses on a bond is not among the VLANs a member's switch port advertises over LLDP: a failover to that member cuts the VLAN off";
        LldpUnavailable = "LLDP_UNAVAILABLE", Warning, "the LLDP listener cannot listen on a bond member (no CAP_NET_RAW, no such interface): its switch is unknown, so the LLDP rules cannot judge it";
        LldpNeighborChanged = "LLDP_NEIGHBOR_CHANGED", Critical, "a bond member's switch or switch port (LLDP) differs from the baseline: recabled since";
        ExpectationsInvalid = "EXPECTATIONS_INVALID", Critical, "the expected-state file cannot be read; the last good expectations stay in force";
        OvsStateUnreadable = "OVS_STATE_UNREADABLE", Critical, "Open vSwitch bonds are expected (configuration or kernel) but OVSDB cannot be read, so their health is unknown";
        NicRenumbered = "NIC_RENUMBERED", Critical, "os-net-config's next run would map a nicN name to another NIC than the one it is on now";
        MappingEntryUnmatched = "MAPPING_ENTRY_UNMATCHED", Warning, "an entry of os-net-config's mapping file matches no NIC (a MAC written in upper case, a replaced card): os-net-config ignores it and numbers that name by position";
        BondHealthUnknown = "BOND_HEALTH_UNKNOWN", Critical, "os-net-config configures a bond whose health preflight cannot see (a contrail_vrouter_dpdk or vpp_bond bond, in a userspace datapath): cannot tell, so no-go unless policy lowers it with a stated reason";
        FallbackStrandsNode = "FALLBACK_STRANDS_NODE", Critical, "if os-net-config's run fails, its fallback (fallback_config, or TripleO's DHCP safe defaults) would leave the node with no address it can be reached on";
        UnexpectedDhcpExposure = "UNEXPECTED_DHCP_EXPOSURE", Critical, "a physical NIC has no NetworkManager profile and no-auto-default does not cover it: NetworkManager would give it an automatic profile and ask for DHCP (a NIC that lost its profile in an update)";
        ExpectationUnchecked = "EXPECTATION_UNCHECKED", Warning, "an entry of the expected configuration is of a type preflight cannot check; it is listed, not silently skipped";
        FindingsTruncated = "FINDINGS_TRUNCATED", Critical, "the node has more findings than a report carries; those left out are unknown to the gate";
    }
    node {
        NodeSilent = "NODE_SILENT", "a node in the inventory has not reported since the aggregator started";
        NodeStale = "NODE_STALE", "a node's last report is older than its TTL";
        NodeSettling = "NODE_SETTLING", "a node's findings changed within the settle time";
        InventoryEmpty = "INVENTORY_EMPTY", "the inventory has no nodes: nothing to vouch for";
        MaintenanceOverrun = "MAINTENANCE_OVERRUN", "a node's maintenance lease ended and the node was not back and go within the grace time";
    }
}

impl Code {
    /// Codes that mean "preflight cannot tell"; they stay critical whatever
    /// the configuration says, because an unknown state must never be a go.
    #[must_use]
    pub fn fail_closed(self) -> bool {
        matches!(
            self,
            Self::StateUnreadable
                | Self::ExpectationsInvalid
                | Self::OvsStateUnreadable
                | Self::FindingsTruncated
        )
    }

    /// Codes that mean "cannot tell" about something an operator may know
    /// better (a bond another tool watches): lowering one below critical
    /// needs a reason in the configuration, shown in every finding it lowers.
    #[must_use]
    pub fn lowered_only_with_reason(self) -> bool {
        matches!(self, Self::BondHealthUnknown)
    }

    /// Codes a waiver without a code does not cover: a node's silence or
    /// staleness is waived only when named, so that a blanket waiver for a
    /// node's findings never hides that the node stopped reporting.
    #[must_use]
    pub fn waived_only_by_name(self) -> bool {
        matches!(self, Self::NodeSilent | Self::NodeStale)
    }
}

/// Ordered by the stable string, so that sorted output (findings, blockers)
/// is the same as when codes travelled as strings.
impl Ord for Code {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Code {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.as_str()
    }
}

/// A string that is not a known code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCode(pub String);

impl fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown code `{}` (an aggregator older than the agent? upgrade aggregators before agents)",
            self.0.chars().take(80).collect::<String>()
        )
    }
}

impl std::error::Error for UnknownCode {}

impl std::str::FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Code;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a preflight code such as \"BOND_PORT_DOWN\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Code, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_has_a_meaning() {
        for c in FINDING_CODES.iter().chain(NODE_CODES) {
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!(!c.meaning().is_empty());
        }
        assert!(FINDING_CODES.iter().all(|c| c.is_finding()));
        assert!(NODE_CODES.iter().all(|c| !c.is_finding()));
        assert!(NODE_CODES
            .iter()
            .all(|c| c.default_severity() == Severity::Critical));
    }

    #[test]
    fn serializes_as_the_stable_string_and_rejects_unknown_ones() {
        assert_eq!(
            serde_json::to_string(&Code::NodeSilent).expect("serializes"),
            "\"NODE_SILENT\""
        );
        assert_eq!(
            serde_json::from_str::<Code>("\"BOND_PORT_DOWN\"").expect("parses"),
            Code::BondPortDown
        );
        let e = serde_json::from_str::<Code>("\"BOND_ON_FIRE\"").expect_err("unknown");
        assert!(e.to_string().contains("unknown code `BOND_ON_FIRE`"), "{e}");
    }

    #[test]
    fn orders_by_the_stable_string() {
        let mut v = vec![Code::LinkNoCarrier, Code::BondPortDown, Code::BondDegraded];
        v.sort();
        assert_eq!(
            v,
            [Code::BondDegraded, Code::BondPortDown, Code::LinkNoCarrier]
        );
    }
}
