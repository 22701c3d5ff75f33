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
pub mod code;
pub mod config;
pub mod names;
pub mod ovs;
pub mod report;
pub mod time;

pub use code::Code;
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

/// Bonding driver settings and 802.3ad aggregator state of one bond.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bond {
    /// Bonding mode.
    pub mode: BondMode,
    /// MII link monitoring interval in ms (0 = off).
    pub miimon_ms: u32,
    /// ARP monitoring interval in ms (0 = off).
    pub arp_interval_ms: u32,
    /// ARP monitoring targets.
    #[serde(default)]
    pub arp_ip_targets: Vec<IpAddr>,
    /// Minimum number of ports that must be up for the bond to have carrier.
    pub min_links: u32,
    /// Index of the active port (active-backup, tlb, alb).
    pub active_port: Option<u32>,
    /// 802.3ad LACP rate (`slow`, `fast`), only meaningful in 802.3ad mode.
    pub lacp_rate: Option<String>,
    /// 802.3ad hash policy (`layer2`, `layer3+4`, ...).
    pub xmit_hash_policy: Option<String>,
    /// 802.3ad active aggregator, when the mode is 802.3ad.
    pub ad_info: Option<AdInfo>,
}

/// 802.3ad active aggregator of a bond (IFLA_BOND_AD_INFO).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdInfo {
    /// Active aggregator id.
    pub aggregator_id: u16,
    /// Ports in the active aggregator.
    pub num_ports: u16,
    /// Actor key.
    pub actor_key: u16,
    /// Partner key.
    pub partner_key: u16,
    /// Partner system MAC; all zeros when no LACP partner answered.
    pub partner_mac: String,
}

/// Bonding modes as the kernel numbers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    /// 0: round robin.
    #[default]
    #[serde(rename = "balance-rr")]
    BalanceRr,
    /// 1: one active port, the others standby.
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// 2: XOR hash.
    #[serde(rename = "balance-xor")]
    BalanceXor,
    /// 3: every frame on every port.
    #[serde(rename = "broadcast")]
    Broadcast,
    /// 4: IEEE 802.3ad dynamic link aggregation (LACP).
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    /// 5: adaptive transmit load balancing.
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    /// 6: adaptive load balancing.
    #[serde(rename = "balance-alb")]
    BalanceAlb,
    /// Open vSwitch only: source-MAC/VLAN load balancing (`balance-slb`).
    #[serde(rename = "balance-slb")]
    BalanceSlb,
    /// Open vSwitch only: L2-L4 hash, needs LACP (`balance-tcp`).
    #[serde(rename = "balance-tcp")]
    BalanceTcp,
}

impl BondMode {
    /// The name the bonding driver uses (`active-backup`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BalanceRr => "balance-rr",
            Self::ActiveBackup => "active-backup",
            Self::BalanceXor => "balance-xor",
            Self::Broadcast => "broadcast",
            Self::Ieee8023ad => "802.3ad",
            Self::BalanceTlb => "balance-tlb",
            Self::BalanceAlb => "balance-alb",
            Self::BalanceSlb => "balance-slb",
            Self::BalanceTcp => "balance-tcp",
        }
    }

    /// Parses an Open vSwitch `bond_mode` (`active-backup`, `balance-slb`,
    /// `balance-tcp`); `None` for anything else.
    #[must_use]
    pub fn parse_ovs(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "active-backup" => Self::ActiveBackup,
            "balance-slb" => Self::BalanceSlb,
            "balance-tcp" => Self::BalanceTcp,
            _ => return None,
        })
    }

    /// Parses a mode by name or number, as `bonding_options` write it
    /// (`mode=active-backup`, `mode=1`, `mode=802.3ad`, `mode=4`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "balance-rr" | "0" => Self::BalanceRr,
            "active-backup" | "1" => Self::ActiveBackup,
            "balance-xor" | "2" => Self::BalanceXor,
            "broadcast" | "3" => Self::Broadcast,
            "802.3ad" | "4" => Self::Ieee8023ad,
            "balance-tlb" | "5" => Self::BalanceTlb,
            "balance-alb" | "6" => Self::BalanceAlb,
            _ => return None,
        })
    }

    /// Modes in which exactly one port carries traffic and needs to be chosen.
    #[must_use]
    pub fn has_active_port(self) -> bool {
        matches!(self, Self::ActiveBackup)
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MII status of a bond port, as the bonding driver tracks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MiiStatus {
    /// Link up.
    Up,
    /// Link lost, waiting for downdelay.
    GoingDown,
    /// Link down.
    #[default]
    Down,
    /// Link back, waiting for updelay.
    GoingBack,
}

/// Whether a port carries traffic (active) or stands by (backup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Carries traffic.
    Active,
    /// Standby.
    #[default]
    Backup,
}

/// State the bonding driver keeps for one enslaved port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondPort {
    /// MII status.
    pub mii_status: MiiStatus,
    /// Active or backup.
    pub state: PortState,
    /// Link failures the driver counted since the port was enslaved.
    pub link_failure_count: u32,
    /// Permanent MAC of the port.
    pub perm_mac: Option<String>,
    /// 802.3ad aggregator this port belongs to.
    pub ad_aggregator_id: Option<u16>,
    /// 802.3ad actor operational port state (bit field, IEEE 802.1AX).
    pub ad_actor_state: Option<u8>,
    /// 802.3ad partner operational port state (bit field, IEEE 802.1AX).
    pub ad_partner_state: Option<u8>,
}

/// LACP port state bits (IEEE 802.1AX-2014, 6.4.2.3).
pub mod lacp {
    /// Active LACP (vs passive).
    pub const ACTIVITY: u8 = 0x01;
    /// Short timeout.
    pub const TIMEOUT: u8 = 0x02;
    /// Link is aggregatable.
    pub const AGGREGATION: u8 = 0x04;
    /// In sync with the partner.
    pub const SYNCHRONIZATION: u8 = 0x08;
    /// Collecting frames.
    pub const COLLECTING: u8 = 0x10;
    /// Distributing frames.
    pub const DISTRIBUTING: u8 = 0x20;
    /// Partner information is defaulted: no LACPDU received.
    pub const DEFAULTED: u8 = 0x40;
    /// Partner information expired.
    pub const EXPIRED: u8 = 0x80;
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

/// A bond with its ports, for people and JSON consumers (derived from a
/// [`Snapshot`]; nothing here is stored separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BondView {
    /// Bond name.
    pub name: String,
    /// Who runs the bond: the kernel's bonding driver or Open vSwitch.
    #[serde(rename = "type", default)]
    pub kind: BondKind,
    /// OVS bridge holding the bond (OVS bonds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// OVS `lacp` setting (`active`, `passive`, `off`; OVS bonds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp: Option<String>,
    /// Mode.
    pub mode: BondMode,
    /// Carrier of the bond itself.
    pub carrier: bool,
    /// Operational state of the bond itself.
    pub oper_state: OperState,
    /// MII monitor interval (ms).
    pub miimon_ms: u32,
    /// ARP monitor interval (ms).
    pub arp_interval_ms: u32,
    /// min_links.
    pub min_links: u32,
    /// Name of the active port, if any.
    pub active_port: Option<String>,
    /// 802.3ad aggregator info.
    pub ad_info: Option<AdInfo>,
    /// Ports, by name.
    pub ports: Vec<PortView>,
}

/// One bond port as people read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// Carrier of the port.
    pub carrier: bool,
    /// Speed (Mb/s).
    pub speed_mbps: Option<u32>,
    /// Duplex.
    pub duplex: Option<String>,
    /// Bonding driver state of the port (for OVS members: derived from
    /// OVSDB, MII status = admin and link state, failures = `link_resets`).
    #[serde(flatten)]
    pub port: BondPort,
    /// OVS interface `type` (`dpdk`, ...; OVS members only, empty = system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovs_type: Option<String>,
    /// OVS interface `error` (OVS members only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// OVS `lacp_current` (OVS members only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_current: Option<bool>,
}

/// Which software runs a bond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BondKind {
    /// The Linux bonding driver (`linux_bond`).
    #[default]
    Kernel,
    /// An Open vSwitch bond (`ovs_bond`, `ovs_dpdk_bond`).
    Ovs,
}

impl BondKind {
    /// `kernel` / `ovs`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Ovs => "ovs",
        }
    }
}

impl Snapshot {
    /// Bonds with their ports, ordered by name.
    #[must_use]
    pub fn bonds(&self) -> Vec<BondView> {
        let mut out: Vec<BondView> = self
            .interfaces
            .values()
            .filter_map(|i| {
                let b = i.bond.as_ref()?;
                Some(BondView {
                    name: i.name.clone(),
                    kind: BondKind::Kernel,
                    bridge: None,
                    lacp: None,
                    mode: b.mode,
                    carrier: i.carrier,
                    oper_state: i.oper_state,
                    miimon_ms: b.miimon_ms,
                    arp_interval_ms: b.arp_interval_ms,
                    min_links: b.min_links,
                    active_port: b.active_port.map(|a| self.name_of(a)),
                    ad_info: b.ad_info.clone(),
                    ports: self
                        .ports_of(i.index)
                        .into_iter()
                        .filter_map(|p| {
                            Some(PortView {
                                name: p.name.clone(),
                                carrier: p.carrier,
                                speed_mbps: p.speed_mbps,
                                duplex: p.duplex.clone(),
                                port: p.bond_port.clone()?,
                                ovs_type: None,
                                error: None,
                                lacp_current: None,
                            })
                        })
                        .collect(),
                })
            })
            .collect();
        out.extend(self.ovs.bonds().map(|(br, p)| ovs::bond_view(br, p)));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
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
