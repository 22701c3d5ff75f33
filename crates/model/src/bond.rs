//! Bonds: the bonding driver's settings and per-port state as the kernel
//! reports them (`Bond`, `BondPort`, the LACP bits), and the bond as people
//! and JSON consumers read it (`BondView`, one for a kernel bond or an Open
//! vSwitch bond), derived from a [`Snapshot`].

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{ovs, OperState, Snapshot};

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

impl BondPort {
    /// Whether the port carries the bond's traffic: the one definition of
    /// "up" that the findings, the metrics, `inspect` (table and JSON) and
    /// the on-call page all use. Carrier **and** MII status up: a port that
    /// lost carrier is down at once, though the bonding driver marks its MII
    /// status down only at the next miimon interval (or never, with
    /// `miimon 0`).
    #[must_use]
    pub fn is_up(&self, carrier: bool) -> bool {
        carrier && self.mii_status == MiiStatus::Up
    }
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
#[serde(from = "PortViewWire")]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// Carrier of the port.
    pub carrier: bool,
    /// Up as [`BondPort::is_up`] defines it (carrier and MII status up):
    /// written for JSON readers, recomputed from `carrier` and `port` when
    /// read (an older agent's report has none; a sent one is not trusted).
    pub up: bool,
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

/// [`PortView`] as read: `up` is derived, never taken from the input.
#[derive(Deserialize)]
struct PortViewWire {
    name: String,
    carrier: bool,
    speed_mbps: Option<u32>,
    duplex: Option<String>,
    #[serde(flatten)]
    port: BondPort,
    #[serde(default)]
    ovs_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    lacp_current: Option<bool>,
}

impl From<PortViewWire> for PortView {
    fn from(w: PortViewWire) -> Self {
        Self {
            up: w.port.is_up(w.carrier),
            name: w.name,
            carrier: w.carrier,
            speed_mbps: w.speed_mbps,
            duplex: w.duplex,
            port: w.port,
            ovs_type: w.ovs_type,
            error: w.error,
            lacp_current: w.lacp_current,
        }
    }
}

impl BondView {
    /// How many ports are up ([`BondPort::is_up`]).
    #[must_use]
    pub fn ports_up(&self) -> usize {
        self.ports.iter().filter(|p| p.up).count()
    }
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
                            let port = p.bond_port.clone()?;
                            Some(PortView {
                                name: p.name.clone(),
                                carrier: p.carrier,
                                up: port.is_up(p.carrier),
                                speed_mbps: p.speed_mbps,
                                duplex: p.duplex.clone(),
                                port,
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
