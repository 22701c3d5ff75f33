//! Open vSwitch state as read from OVSDB (the `Open_vSwitch` database of
//! ovsdb-server). TripleO bonds with `ovs_bond` inside an `ovs_bridge`: the
//! kernel sees the members only as plain NICs (or not at all, for DPDK), and
//! the bond itself lives in ovs-vswitchd, so its health is read from OVSDB.
//!
//! The types mirror the columns of `vswitchd/vswitch.xml` that preflight uses;
//! values are kept as OVSDB reports them (strings for enums) so nothing is lost
//! between the database and a person reading the JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the agent knows about Open vSwitch on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OvsSource {
    /// Reading OVSDB is switched off (`agent.ovsdb = "off"`).
    #[default]
    Off,
    /// No OVSDB socket exists at the configured path(s): Open vSwitch is not
    /// running here, or never was.
    Absent {
        /// The paths that were looked at.
        paths: Vec<String>,
    },
    /// A socket exists (or OVS is evidently in use) but the database could not
    /// be read: connection refused, protocol error, monitor failure.
    Unreadable {
        /// The socket path.
        path: String,
        /// What failed, for a person.
        reason: String,
    },
    /// The database was read; its bridges follow.
    Ok {
        /// The socket path.
        path: String,
        /// Bridges with their ports and interfaces, by name.
        bridges: Vec<OvsBridge>,
    },
}

impl OvsSource {
    /// Bridges when the database was read, else none.
    #[must_use]
    pub fn bridges(&self) -> &[OvsBridge] {
        match self {
            Self::Ok { bridges, .. } => bridges,
            _ => &[],
        }
    }

    /// `true` when the database was read.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }

    /// Every OVS bond (a Port with two or more Interfaces) with its bridge.
    pub fn bonds(&self) -> impl Iterator<Item = (&OvsBridge, &OvsPort)> {
        self.bridges()
            .iter()
            .flat_map(|b| b.ports.iter().filter(|p| p.is_bond()).map(move |p| (b, p)))
    }
}

/// An OVSDB `Bridge` row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OvsBridge {
    /// `name`.
    pub name: String,
    /// `datapath_type`: empty or `system` (kernel datapath), `netdev`
    /// (userspace, DPDK).
    #[serde(default)]
    pub datapath_type: String,
    /// The bridge's ports, by name.
    pub ports: Vec<OvsPort>,
    /// Columns of this row that could not be read, or ports it references
    /// that the database did not send; non-empty means the bridge may be
    /// missing ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<String>,
}

/// An OVSDB `Port` row: a bond when it has two or more interfaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OvsPort {
    /// `name` (`bond1`).
    pub name: String,
    /// `bond_mode`: `active-backup`, `balance-slb`, `balance-tcp`; `None` when
    /// unset (OVS then uses `active-backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_mode: Option<String>,
    /// `lacp`: `active`, `passive`, `off`; `None` when unset (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp: Option<String>,
    /// `bond_active_slave`: MAC of the active member (active-backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_active_slave: Option<String>,
    /// `bond_updelay`, ms.
    #[serde(default)]
    pub bond_updelay_ms: u64,
    /// `bond_downdelay`, ms.
    #[serde(default)]
    pub bond_downdelay_ms: u64,
    /// `other_config` (`bond-primary`, `lacp-fallback-ab`,
    /// `bond-detect-mode`, `bond-miimon-interval`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other_config: BTreeMap<String, String>,
    /// The port's interfaces (bond members), by name.
    pub interfaces: Vec<OvsInterface>,
    /// Columns of this row (or of rows it references) that could not be
    /// read; a non-empty list means preflight cannot vouch for this port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<String>,
}

impl OvsPort {
    /// A port with two or more interfaces is an OVS bond.
    #[must_use]
    pub fn is_bond(&self) -> bool {
        self.interfaces.len() >= 2
    }

    /// The bond mode in force (OVS defaults to active-backup).
    #[must_use]
    pub fn mode(&self) -> &str {
        self.bond_mode.as_deref().unwrap_or("active-backup")
    }

    /// Whether LACP is negotiated on this port (`lacp` active or passive).
    #[must_use]
    pub fn lacp_enabled(&self) -> bool {
        matches!(self.lacp.as_deref(), Some("active" | "passive"))
    }

    /// The member whose `mac_in_use` is `bond_active_slave`.
    #[must_use]
    pub fn active_member(&self) -> Option<&OvsInterface> {
        let mac = self.bond_active_slave.as_deref()?;
        self.interfaces.iter().find(|i| {
            i.mac_in_use
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(mac))
        })
    }

    /// `bond-miimon-interval` when `bond-detect-mode` is `miimon`, else 0
    /// (OVS then follows carrier, which is event-driven).
    #[must_use]
    pub fn miimon_ms(&self) -> u32 {
        if self
            .other_config
            .get("bond-detect-mode")
            .map(String::as_str)
            == Some("miimon")
        {
            self.other_config
                .get("bond-miimon-interval")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200)
        } else {
            0
        }
    }
}

/// An OVSDB `Interface` row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OvsInterface {
    /// `name`.
    pub name: String,
    /// `type`: empty (a system netdev), `internal`, `dpdk`, `tap`, ...
    #[serde(default, rename = "type")]
    pub iface_type: String,
    /// `admin_state`: `up` / `down`; `None` until ovs-vswitchd fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<String>,
    /// `link_state`: `up` / `down`; `None` until ovs-vswitchd fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<String>,
    /// `link_resets`: link state changes seen by ovs-vswitchd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_resets: Option<u64>,
    /// `lacp_current`: whether the partner's LACP information is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_current: Option<bool>,
    /// `mac_in_use`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_in_use: Option<String>,
    /// `ifindex` (0 or absent for DPDK and other non-kernel devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// `error`: why ovs-vswitchd could not open or configure the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `link_speed`, bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_speed: Option<u64>,
    /// `duplex`: `full` / `half`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex: Option<String>,
    /// Columns of this row that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<String>,
}

impl OvsInterface {
    /// Up for bonding purposes: admin up, link up, no error.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.admin_state.as_deref() == Some("up")
            && self.link_state.as_deref() == Some("up")
            && self.error.is_none()
    }

    /// Why this member is not up, for a person (`link_state down`).
    #[must_use]
    pub fn down_reason(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("error \"{}\"", crate::excerpt(e)));
        }
        match (self.admin_state.as_deref(), self.link_state.as_deref()) {
            (Some("up"), Some("up")) => None,
            (Some("up") | None, l) => Some(format!("link_state {}", l.unwrap_or("unknown"))),
            (Some(a), _) => Some(format!("admin_state {a}")),
        }
    }

    /// Speed in Mb/s, from `link_speed`.
    #[must_use]
    pub fn speed_mbps(&self) -> Option<u32> {
        self.link_speed
            .and_then(|bps| u32::try_from(bps / 1_000_000).ok())
    }
}

/// An OVS bond as people and JSON consumers read it, in the same shape as a
/// kernel bond.
#[must_use]
pub fn bond_view(bridge: &OvsBridge, port: &OvsPort) -> crate::BondView {
    use crate::{BondKind, BondMode, BondPort, MiiStatus, OperState, PortState, PortView};
    let active = port.active_member().map(|m| m.name.clone());
    let any_up = port.interfaces.iter().any(OvsInterface::is_up);
    let mut ports: Vec<PortView> = port
        .interfaces
        .iter()
        .map(|m| {
            let carrier = m.link_state.as_deref() == Some("up");
            let port = BondPort {
                mii_status: if m.is_up() {
                    MiiStatus::Up
                } else {
                    MiiStatus::Down
                },
                state: if active.as_deref() == Some(m.name.as_str()) {
                    PortState::Active
                } else {
                    PortState::Backup
                },
                link_failure_count: m
                    .link_resets
                    .map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
                perm_mac: m.mac_in_use.clone(),
                ad_aggregator_id: None,
                ad_actor_state: None,
                ad_partner_state: None,
            };
            PortView {
                name: m.name.clone(),
                carrier,
                up: port.is_up(carrier),
                speed_mbps: m.speed_mbps(),
                duplex: m.duplex.clone(),
                port,
                ovs_type: Some(m.iface_type.clone()),
                // Sent in every report: a column of any size must not be.
                error: m.error.as_deref().map(|e| crate::excerpt(e).into_owned()),
                lacp_current: m.lacp_current,
            }
        })
        .collect();
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    crate::BondView {
        name: port.name.clone(),
        kind: BondKind::Ovs,
        bridge: Some(bridge.name.clone()),
        lacp: port.lacp.clone(),
        mode: BondMode::parse_ovs(port.mode()).unwrap_or(BondMode::ActiveBackup),
        carrier: any_up,
        oper_state: if any_up {
            OperState::Up
        } else {
            OperState::Down
        },
        miimon_ms: port.miimon_ms(),
        arp_interval_ms: 0,
        min_links: 0,
        active_port: active,
        ad_info: None,
        ports,
    }
}
