//! Types shared by every preflight crate: the node snapshot that the netlink
//! crate builds from kernel messages, the findings that policy derives from it,
//! and the verdict. Everything here is plain data with serde derives, so that
//! the same values travel from the kernel to the CLI's JSON, the agent's
//! reports and the aggregator's store without conversion layers.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub mod api;
mod bond;
pub mod code;
pub mod config;
pub mod dhcp;
pub mod excerpt;
pub mod fallback;
pub mod lldp;
pub mod member_path;
pub mod names;
pub mod ovs;
pub mod report;
pub mod time;

pub use bond::{
    lacp, AdInfo, Bond, BondKind, BondMode, BondPort, BondView, MiiStatus, PortState, PortView,
};
pub use code::Code;
pub use dhcp::DhcpProbeResult;
pub use excerpt::excerpt;
pub use fallback::{FallbackInterface, FallbackKind, FallbackPrediction};
pub use lldp::LldpNeighbor;
pub use member_path::MemberPathStatus;
pub use ovs::{OvsBridge, OvsInterface, OvsPort, OvsSource};

/// Everything preflight knows about one node's network at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Interfaces by kernel ifindex.
    pub interfaces: BTreeMap<u32, Interface>,
    /// Every IPv4/IPv6 address the kernel reported.
    pub addresses: Vec<Address>,
    /// Routes of the main table.
    pub routes: Vec<Route>,
    /// Open vSwitch, as read from OVSDB (bonds the kernel does not see).
    #[serde(default)]
    pub ovs: OvsSource,
    /// What the bond members' switches say over LLDP.
    #[serde(default, skip_serializing_if = "lldp::LldpState::is_empty")]
    pub lldp: lldp::LldpState,
}

impl Snapshot {
    /// Finds an interface by name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&Interface> {
        self.interfaces.values().find(|i| i.name == name)
    }

    /// Name of the interface with this index, or `if<index>` when unknown.
    #[must_use]
    pub fn name_of(&self, index: u32) -> String {
        self.interfaces
            .get(&index)
            .map_or_else(|| format!("if{index}"), |i| i.name.clone())
    }

    /// Ports (interfaces whose controller is `bond_index`), ordered by name.
    #[must_use]
    pub fn ports_of(&self, bond_index: u32) -> Vec<&Interface> {
        let mut ports: Vec<&Interface> = self
            .interfaces
            .values()
            .filter(|i| i.controller == Some(bond_index))
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        ports
    }

    /// Addresses configured on the interface with this index.
    pub fn addresses_of(&self, index: u32) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(move |a| a.ifindex == index)
    }
}

/// Administrative + operational view of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Kernel ifindex.
    pub index: u32,
    /// Interface name (`eth0`).
    pub name: String,
    /// rtnetlink kind (`bond`, `veth`, `bridge`, ...); `None` for physical NICs.
    pub kind: Option<String>,
    /// IFF_UP: the operator asked for the interface to be up.
    pub admin_up: bool,
    /// RFC 2863 operational state as the kernel reports it (`up`, `down`, ...).
    pub oper_state: OperState,
    /// Whether the link has carrier (IFLA_CARRIER, else IFF_LOWER_UP).
    pub carrier: bool,
    /// Carrier transitions since the interface was created.
    pub carrier_changes: u32,
    /// MTU in bytes.
    pub mtu: u32,
    /// Index of the controller (bond, bridge, OVS) this interface is enslaved to.
    pub controller: Option<u32>,
    /// Current MAC address, `aa:bb:..` form.
    pub mac: Option<String>,
    /// Speed in Mb/s, where the driver reports one.
    pub speed_mbps: Option<u32>,
    /// Duplex (`full`, `half`), where the driver reports it.
    pub duplex: Option<String>,
    /// Bond settings when this interface is a bond.
    pub bond: Option<Bond>,
    /// Port state when this interface is enslaved to a bond.
    pub bond_port: Option<BondPort>,
    /// Parts of the kernel's message that could not be parsed. A non-empty
    /// list means preflight cannot vouch for this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<String>,
}

/// RFC 2863 operational state (IFLA_OPERSTATE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    /// The driver does not report a state (loopback, some virtual devices).
    #[default]
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower layer (a port, the carrier) is down.
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Waiting for an external event (802.1X, ...).
    Dormant,
    /// Up and able to pass packets.
    Up,
}

impl OperState {
    /// Lower-case name as `ip link` prints it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::NotPresent => "notpresent",
            Self::Down => "down",
            Self::LowerLayerDown => "lowerlayerdown",
            Self::Testing => "testing",
            Self::Dormant => "dormant",
            Self::Up => "up",
        }
    }
}

/// One IP address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Interface index.
    pub ifindex: u32,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// `true` when configured statically (IFA_F_PERMANENT); `false` for
    /// addresses with a lifetime (DHCP, SLAAC).
    pub permanent: bool,
    /// Scope (`global`, `link`, `host`).
    pub scope: String,
}

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination, `None` for a default route.
    pub destination: Option<IpAddr>,
    /// Destination prefix length (0 for default).
    pub prefix_len: u8,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Who installed it (`kernel`, `static`, `boot`, `dhcp`, `ra`, ...).
    pub protocol: String,
    /// Metric.
    pub metric: Option<u32>,
    /// `true` for IPv6.
    pub ipv6: bool,
}

impl Route {
    /// A route to 0.0.0.0/0 or ::/0.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported, does not block.
    Warning,
    /// Blocks: the verdict is no-go.
    Critical,
}

impl Severity {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One problem found on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable machine-readable code (`BOND_PORT_DOWN` on the wire); never
    /// changes meaning.
    pub code: Code,
    /// Critical findings block, warnings do not.
    pub severity: Severity,
    /// What is affected: `bond0`, `bond0/eth1`, `eth2`.
    pub subject: String,
    /// What is wrong and what to do, for a person.
    pub message: String,
    /// When preflight first saw this finding (continuously since).
    #[serde(with = "time::rfc3339")]
    pub since: SystemTime,
}

impl Finding {
    /// Key that identifies "the same finding" across evaluations.
    #[must_use]
    pub fn key(&self) -> (Code, &str) {
        (self.code, &self.subject)
    }
}

/// Sorts findings worst first, then by code and subject, so output is stable.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.code.cmp(&b.code))
            .then_with(|| a.subject.cmp(&b.subject))
    });
}

/// The answer to "may I update this node?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// No unwaived critical finding.
    #[serde(rename = "go")]
    Go,
    /// At least one blocker.
    #[serde(rename = "no-go")]
    NoGo,
}

impl Verdict {
    /// Go when no finding is critical.
    #[must_use]
    pub fn from_findings(findings: &[Finding]) -> Self {
        if findings.iter().any(|f| f.severity == Severity::Critical) {
            Self::NoGo
        } else {
            Self::Go
        }
    }

    /// `go` / `no-go`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::NoGo => "no-go",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of one reachability probe target over its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// `icmp 192.0.2.1 via eth0`, `tcp 10.0.0.5:9100 via bond0`.
    pub target: String,
    /// Failed `fail_after` times in a row and not yet recovered.
    pub failed: bool,
    /// Loss over the window, 0.0 to 1.0.
    pub loss: f64,
    /// Mean round trip of the successes in the window, ms.
    pub rtt_ms: Option<f64>,
    /// Consecutive failures now.
    pub consecutive_failures: u32,
    /// Last error, if the last probe failed.
    pub last_error: Option<String>,
}

/// Everything `preflight inspect --json` prints and an agent reports about
/// its node: the verdict, the findings (worst first) and the state they
/// were derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub node: String,
    /// go / no-go.
    pub verdict: Verdict,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// Interfaces ordered by index.
    pub interfaces: Vec<Interface>,
    /// Bonds with ports.
    pub bonds: Vec<BondView>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Routes of the main table.
    pub routes: Vec<Route>,
    /// Reachability probes and their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeStatus>,
    /// The expected-state file the findings were checked against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_from: Option<String>,
    /// os-net-config's `nicN` names: the NIC each is on now and the one
    /// os-net-config's next run would put it on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nic_mapping: BTreeMap<String, NicMapping>,
    /// Which os-net-config version's rules `nic_mapping` followed (with
    /// `nic_mapping` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_rules: Option<NicRules>,
    /// What a failed os-net-config run would leave the node with (with an
    /// os-net-config file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackPrediction>,
    /// DHCP probes of the statically configured interfaces (`agent.dhcp_probe`):
    /// would a fallback to DHCP find a server?
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp_probes: Vec<DhcpProbeResult>,
    /// The member path check: each bond member's own path to each network
    /// the bond carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_paths: Vec<MemberPathStatus>,
    /// Each bond member's switch as LLDP says, by member name; a member
    /// that heard no LLDPDU (or whose last one expired) is absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lldp: Vec<LldpNeighbor>,
}

/// The os-net-config rules a `nicN` prediction followed: they differ
/// between versions, so the installed one is followed when it can be read,
/// else the newest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRules {
    /// The version installed on the node (`14.2.1`), from its Python package
    /// metadata; absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// The version whose rules were followed (`18.1.0`, `14.2.0`).
    pub followed: String,
    /// Why, for a person.
    pub why: String,
}

/// Where one os-net-config `nicN` name points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicMapping {
    /// The NIC the running configuration was built on.
    pub in_force: Option<String>,
    /// The NIC os-net-config would map it to if it ran now.
    pub next_run: Option<String>,
    /// Why they differ (`eth1 has no carrier`); `None` when they agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NodeState {
    /// Builds the node state from a snapshot and its findings.
    #[must_use]
    pub fn new(node: String, snapshot: &Snapshot, findings: Vec<Finding>) -> Self {
        Self {
            node,
            verdict: Verdict::from_findings(&findings),
            findings,
            interfaces: snapshot.interfaces.values().cloned().collect(),
            bonds: snapshot.bonds(),
            addresses: snapshot.addresses.clone(),
            routes: snapshot.routes.clone(),
            probes: Vec::new(),
            expected_from: None,
            nic_mapping: BTreeMap::new(),
            nic_rules: None,
            fallback: None,
            dhcp_probes: Vec::new(),
            member_paths: Vec::new(),
            lldp: snapshot.lldp.neighbors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: &str, severity: Severity, subject: &str) -> Finding {
        Finding {
            code: Code::parse(code).expect("a known code"),
            severity,
            subject: subject.into(),
            message: String::new(),
            since: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn verdict_is_no_go_only_with_a_critical_finding() {
        assert_eq!(Verdict::from_findings(&[]), Verdict::Go);
        let warn = finding("LINK_FLAPPING", Severity::Warning, "eth0");
        assert_eq!(
            Verdict::from_findings(std::slice::from_ref(&warn)),
            Verdict::Go
        );
        let crit = finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1");
        assert_eq!(Verdict::from_findings(&[warn, crit]), Verdict::NoGo);
    }

    #[test]
    fn findings_sort_worst_first() {
        let mut v = vec![
            finding("LINK_NO_CARRIER", Severity::Warning, "eth3"),
            finding("BOND_PORT_DOWN", Severity::Critical, "bond0/eth1"),
            finding("BOND_DEGRADED", Severity::Critical, "bond0"),
        ];
        sort_findings(&mut v);
        let codes: Vec<_> = v.iter().map(|f| f.code.as_str()).collect();
        assert_eq!(
            codes,
            ["BOND_DEGRADED", "BOND_PORT_DOWN", "LINK_NO_CARRIER"]
        );
    }

    #[test]
    fn bond_mode_parses_names_and_numbers() {
        assert_eq!(BondMode::parse("4"), Some(BondMode::Ieee8023ad));
        assert_eq!(
            BondMode::parse("active-backup"),
            Some(BondMode::ActiveBackup)
        );
        assert_eq!(BondMode::parse("lacp"), None);
        let json = serde_json::to_string(&BondMode::Ieee8023ad).expect("serializes");
        assert_eq!(json, "\"802.3ad\"");
    }

    #[test]
    fn finding_since_round_trips_as_rfc3339() {
        let f = Finding {
            since: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            ..finding("BOND_DOWN", Severity::Critical, "bond0")
        };
        let json = serde_json::to_value(&f).expect("serializes");
        assert_eq!(json["since"], "2023-11-14T22:13:20Z");
        let back: Finding = serde_json::from_value(json).expect("parses");
        assert_eq!(back, f);
    }
}
