//! What a bond member's switch says about itself over LLDP (IEEE 802.1AB),
//! as the agent reports it: which switch and port the member is cabled to,
//! which VLANs that port carries and the largest frame it takes. Every text
//! here came off the wire from a device preflight does not control, so the
//! decoder stores it already escaped (control characters and bytes that are
//! not UTF-8 as `\xNN`) and cut to [`MAX_TEXT_BYTES`]; a terminal, a page or
//! a metric label can show it as it is.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Longest text kept from one TLV, in bytes (an LLDP string TLV carries at
/// most 255 bytes; escaping can lengthen it, the cut applies after).
pub const MAX_TEXT_BYTES: usize = 255;

/// Most VLANs kept per neighbour: a trunk may advertise hundreds of VLAN
/// Name TLVs in one LLDPDU (1,500 bytes hold at most ~250).
pub const MAX_VLANS: usize = 256;

/// One sender a bond member hears: the newest LLDPDU on that member from
/// this chassis and port ID whose time to live has not run out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpNeighbor {
    /// The node's interface the LLDPDU came in on (a bond member).
    pub member: String,
    /// Chassis ID: a MAC address as `aa:bb:cc:dd:ee:ff`, a network address
    /// as text, anything else as escaped text.
    pub chassis_id: String,
    /// How the chassis ID is encoded (`mac`, `local`, `ifname`, ...).
    pub chassis_id_subtype: String,
    /// Port ID, shown as the chassis ID is.
    pub port_id: String,
    /// How the port ID is encoded (`ifname`, `mac`, `local`, ...).
    pub port_id_subtype: String,
    /// Time to live the switch gave, seconds.
    pub ttl_s: u16,
    /// System Name TLV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    /// Port Description TLV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_descr: Option<String>,
    /// The first Management Address TLV, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgmt_address: Option<String>,
    /// 802.1 Port VLAN ID (the untagged VLAN); 0 means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvid: Option<u16>,
    /// 802.1 VLAN Name TLVs: the VLANs the switch says the port carries.
    /// Empty when the switch does not advertise them (then nothing can be
    /// concluded about VLANs), see [`Self::vlans_advertised`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<LldpVlan>,
    /// More VLAN Name TLVs came than [`MAX_VLANS`]: [`Self::vlans`] is
    /// not the whole list, so a VLAN missing from it proves nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vlans_cut: bool,
    /// 802.3 Maximum Frame Size: the largest frame, Ethernet header and
    /// FCS included, the port takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<u16>,
    /// 802.3 (or 802.1AX) Link Aggregation TLV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<LldpAggregation>,
    /// When an LLDPDU with these contents was first heard (a repeat of the
    /// same contents every 30 s does not change it, so the node's state
    /// changes only when the switch's answer does).
    #[serde(with = "crate::time::rfc3339")]
    pub since: SystemTime,
}

impl LldpNeighbor {
    /// Whether the switch advertised the VLANs of the port (VLAN Name TLVs).
    #[must_use]
    pub fn vlans_advertised(&self) -> bool {
        !self.vlans.is_empty()
    }

    /// `switch-a port Ethernet12` for a person: the system name, else the
    /// chassis ID, and [`Self::port`].
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{} port {}", self.switch(), self.port())
    }

    /// The switch's system name, else its chassis ID.
    #[must_use]
    pub fn switch(&self) -> &str {
        self.system_name.as_deref().unwrap_or(&self.chassis_id)
    }

    /// The port ID, or the port description when the ID is a MAC address
    /// (lldpd's default; the description names the port for a person).
    #[must_use]
    pub fn port(&self) -> &str {
        match (&*self.port_id_subtype, &self.port_descr) {
            ("mac", Some(d)) => d,
            _ => &self.port_id,
        }
    }
}

/// One 802.1 VLAN Name TLV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpVlan {
    /// VLAN ID.
    pub id: u16,
    /// Its name, escaped.
    pub name: String,
}

/// The Link Aggregation TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpAggregation {
    /// The port can be aggregated.
    pub capable: bool,
    /// The port is in an aggregation now.
    pub enabled: bool,
    /// The aggregated port's ifIndex (0 when not aggregated).
    pub port_id: u32,
}

/// What policy needs of LLDP, carried in the [`Snapshot`](crate::Snapshot):
/// the neighbours heard, the node's VLAN subinterfaces (to know which VLANs
/// a bond's members must carry) and whether the listener has run long
/// enough that a member without a neighbour truly has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpState {
    /// A listener runs on the bond members; `false`: nothing is known and
    /// no LLDP rule applies.
    #[serde(default)]
    pub listening: bool,
    /// Every member has had a full LLDP interval (30 s) to be heard.
    #[serde(default)]
    pub complete: bool,
    /// The neighbours heard, ordered by member, then chassis and port ID;
    /// a member may hear several senders (at most four are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<LldpNeighbor>,
    /// The node's 802.1Q VLAN subinterfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<VlanLink>,
    /// Members the listener cannot listen on, and why (no CAP_NET_RAW, no
    /// such interface): that nothing is heard there says nothing of the
    /// switch, and [`Self::complete`] stays false while any is here.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub errors: std::collections::BTreeMap<String, String>,
}

impl LldpState {
    /// Nothing heard and nothing listened to.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The first neighbour `member` hears, if any (a member may hear
    /// several senders: see [`Self::all_of`]).
    #[must_use]
    pub fn of(&self, member: &str) -> Option<&LldpNeighbor> {
        self.neighbors.iter().find(|n| n.member == member)
    }

    /// Every neighbour `member` hears: a switch and, say, its NIC's firmware
    /// LLDP agent, each keyed by chassis and port ID.
    #[must_use]
    pub fn all_of(&self, member: &str) -> Vec<&LldpNeighbor> {
        self.neighbors
            .iter()
            .filter(|n| n.member == member)
            .collect()
    }
}

/// One 802.1Q VLAN subinterface of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanLink {
    /// Its name (`bond0.200`).
    pub name: String,
    /// VLAN ID.
    pub id: u16,
    /// The interface it is on (`bond0`).
    pub parent: String,
}
