//! The result of a DHCP probe as reported: whether any DHCP server offered
//! an address on an interface. Informational (no finding of its own): it
//! says whether os-net-config's safe-defaults fallback to DHCP would leave
//! the node reachable on that interface.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One DHCPDISCOVER out of one interface and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpProbeResult {
    /// The interface the DISCOVER left by.
    pub interface: String,
    /// A server offered an address a client could take.
    pub offered: bool,
    /// An OFFER came that no client would take (no server identifier, an
    /// address of 0.0.0.0): why. It never counts as offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_offer: Option<String>,
    /// The offering server's identifier (option 54), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Ipv4Addr>,
    /// The address offered (never taken: the probe sends no REQUEST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Round trip from DISCOVER to OFFER, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Why the probe could not be sent (then `offered` says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the probe ran.
    #[serde(with = "crate::time::rfc3339")]
    pub checked_at: SystemTime,
}
