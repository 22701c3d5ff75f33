//! What a failed os-net-config run would leave the node with: the fallback
//! that restores access (TripleO's safe defaults, os-net-config's
//! `fallback_config`), the interfaces it brings up with their addresses,
//! and whether the node would still be reachable. Predicted by the policy
//! from the expected configuration, the kernel's state and the DHCP probes.

use serde::{Deserialize, Serialize};

/// The fallback a failed run would apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackKind {
    /// os-net-config 18.1.0 or later applies the file's `fallback_config`
    /// section (at most two entries; more and it applies none).
    FallbackConfig,
    /// TripleO's safe defaults (os-net-config 14.x, `NetworkSafeDefaults`):
    /// DHCP on every physical NIC with carrier.
    SafeDefaults,
    /// None: the file has no usable `fallback_config` (none, not a list, or
    /// os-net-config 15.x-18.0.x, which predates it), and RHOSO's own safe
    /// defaults are off by default; a failed run leaves what it applied.
    None,
}

/// One interface the fallback would configure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackInterface {
    /// Kernel name (after nicN mapping).
    pub name: String,
    /// As written in the file (`nic2`), when mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_as: Option<String>,
    /// `dhcp`, or the static addresses (`192.0.2.10/24`).
    pub addresses: Vec<String>,
    /// The default route's gateway, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Whether it would come up with a link: `None` when that cannot be
    /// known now (an admin-down NIC, whose carrier the kernel does not say).
    pub link: Option<bool>,
    /// DHCP only: whether a DHCP probe through it was answered (`None`: not
    /// probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_offered: Option<bool>,
    /// What it contributes, for a person (`no such interface`, `gateway
    /// 192.0.2.1 outside 198.51.100.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackPrediction {
    /// Which fallback.
    pub kind: FallbackKind,
    /// The interfaces it would configure.
    pub interfaces: Vec<FallbackInterface>,
    /// Whether the node would still be reachable: `Some(false)` strands it
    /// (FALLBACK_STRANDS_NODE), `None` cannot be told (no DHCP probe
    /// through it, link unknown, a static address without a default route).
    pub reachable: Option<bool>,
    /// Why, for a person.
    pub why: String,
}
