//! The nicN → device mapping: os-net-config's abstract NIC names (`nic1`,
//! `nic2`, ...) resolved to the node's interfaces, two ways:
//!
//! - **in force**: the NIC each name was applied to when the configuration
//!   was last built. The mapping file's matched entries, then the running
//!   state (a bond's ports, the NIC holding a configured address, an OVS
//!   bond's members), then os-net-config's rule as it was with every NIC up.
//!   Expectations are checked against it.
//! - **next run**: what os-net-config would compute if it ran now
//!   (`os-net-config -i`). It numbers only NICs whose operstate is `up`
//!   (plus DPDK-bound NICs and, 18.x, SR-IOV PFs, whatever their link), so
//!   one dead port shifts every later `nicN` that a mapping file does not
//!   pin (the seed outage's root cause). A difference is NIC_RENUMBERED.
//!
//! The rules are os-net-config's own, read from its code at 18.1.0 and
//! 14.2.0 (`objects.mapped_nics`, `utils._ordered_nics`,
//! `common.interface_mac`) and checked against the real tool in a VM
//! (tests/vm/osnc-oracle.sh): physical NICs (a device and a MAC), SR-IOV
//! VFs excluded, `em*`, `eth*` and `eno*` first, each group in natural
//! order; mapping entries compared as written (an upper-case MAC matches
//! nothing); unmapped active NICs named by their position unless the file
//! took that alias.

use std::collections::{BTreeMap, BTreeSet};

use preflight_model::{Interface, OperState, Snapshot};

/// A physical NIC as os-net-config counts them: no rtnetlink kind (veth,
/// bond, bridge, ... have one), not loopback, a real MAC.
fn physical(i: &Interface) -> bool {
    i.kind.is_none() && i.name != "lo" && i.mac.as_deref().is_some_and(|m| m != "00:00:00:00:00:00")
}

/// os-net-config's "active": operstate `up`.
fn active(i: &Interface) -> bool {
    i.oper_state == OperState::Up
}

/// Physical NICs in os-net-config's order; only active ones with
/// `active_only`.
#[must_use]
pub fn ordered_nics(snap: &Snapshot, active_only: bool) -> Vec<&str> {
    in_order(
        snap.interfaces
            .values()
            .filter(|i| physical(i) && (!active_only || active(i)))
            .map(|i| i.name.as_str())
            .collect(),
    )
}

/// NIC names in os-net-config's order (embedded first, natural order), each
/// once.
#[must_use]
pub fn in_order(mut nics: Vec<&str>) -> Vec<&str> {
    nics.sort_by(|a, b| {
        let later =
            |n: &str| !(n.starts_with("em") || n.starts_with("eth") || n.starts_with("eno"));
        later(a)
            .cmp(&later(b))
            .then_with(|| natural(a).cmp(&natural(b)))
    });
    nics.dedup();
    nics
}

/// What os-net-config reads besides the kernel when it numbers NICs: the
/// mapping file's `interface_mapping`, `/var/lib/os-net-config/dpdk_mapping.yaml`
/// (NICs bound to DPDK, gone from the kernel) and `sriov_config.yaml` (SR-IOV
/// PFs and VFs), and the os-net-config version installed on the node when it
/// can be read (its rules differ between versions: see [`Self::counts_sriov_pfs`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OsncState {
    /// The mapping file, for messages (`/etc/os-net-config/mapping.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_file: Option<String>,
    /// Its `interface_mapping` entries as written (`nic1: 52:54:00:…` or
    /// `nic1: em3`); values are kept as read, not normalized, because
    /// os-net-config compares them as written.
    #[serde(default)]
    pub mapping: BTreeMap<String, serde_json::Value>,
    /// NICs listed in `dpdk_mapping.yaml`.
    #[serde(default)]
    pub dpdk: Vec<DpdkBound>,
    /// Names of SR-IOV PFs in `sriov_config.yaml` (`device_type: pf`).
    #[serde(default)]
    pub sriov_pfs: Vec<String>,
    /// Names of SR-IOV VFs in `sriov_config.yaml` (`device_type: vf`).
    #[serde(default)]
    pub sriov_vfs: Vec<String>,
    /// Kernel NICs that are SR-IOV VFs (sysfs `device/physfn`): never
    /// numbered.
    #[serde(default)]
    pub kernel_vfs: Vec<String>,
    /// The os-net-config version installed on the node (`18.1.0`), when its
    /// package metadata could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One entry of os-net-config's `dpdk_mapping.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DpdkBound {
    /// Kernel name the NIC had before it was bound.
    pub name: String,
    /// PCI address.
    pub pci_address: String,
    /// `mac_address` (what a mapping file's MAC is compared with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// An SR-IOV VF (its PCI device has `physfn`, or `sriov_config.yaml`
    /// lists it as a VF): os-net-config skips it.
    #[serde(default)]
    pub vf: bool,
}

impl OsncState {
    /// The state with a mapping document (`interface_mapping:` at its top)
    /// read from `file`; a document without that key is no mapping, as
    /// os-net-config reads it.
    #[must_use]
    pub fn with_mapping(file: &str, doc: Option<&serde_json::Value>) -> Self {
        let mapping = doc
            .and_then(|m| m.get("interface_mapping"))
            .and_then(|m| m.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Self {
            mapping_file: doc.map(|_| file.to_owned()),
            mapping,
            ..Self::default()
        }
    }

    /// Whether SR-IOV PFs of `sriov_config.yaml` are numbered whatever
    /// their link: os-net-config 18.1.0 does (`utils._ordered_nics` adds
    /// `common.get_sriov_pfs()`), 14.2.0 (Wallaby) does not. A version
    /// below 15 is read as Wallaby's rule; an unknown one as the newest.
    #[must_use]
    pub fn counts_sriov_pfs(&self) -> bool {
        let major = self
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        major.is_none_or(|m| m >= 15)
    }

    /// Whether a failed run applies the file's `fallback_config`: the
    /// section came in os-net-config 18.1.0 (commit c632714), so 15.x to
    /// 18.0.x restore nothing. An unknown or unreadable version is read as
    /// the newest, as for the numbering rules.
    #[must_use]
    pub fn applies_fallback_config(&self) -> bool {
        self.version
            .as_deref()
            .and_then(version_triple)
            .is_none_or(|v| v >= (18, 1, 0))
    }

    /// The rules preflight follows, for messages (`inspect` shows them in
    /// NIC_RENUMBERED).
    #[must_use]
    pub fn rules_followed(&self) -> String {
        format!("predicted by {}", self.rules().why)
    }

    /// The os-net-config version whose rules preflight follows, and why.
    #[must_use]
    pub fn rules(&self) -> preflight_model::NicRules {
        let followed = if self.counts_sriov_pfs() {
            "18.1.0"
        } else {
            "14.2.0"
        };
        let why = match &self.version {
            Some(v) => format!("os-net-config {followed}'s rules: {v} is installed"),
            None => format!("os-net-config {followed}'s rules, the newest: the installed version could not be read"),
        };
        preflight_model::NicRules {
            installed: self.version.clone(),
            followed: followed.to_owned(),
            why,
        }
    }
}

/// `major.minor.patch` from the leading numbers of a version (`18.1.0`,
/// `18.1.0-1.el9osp`, `19.0`: missing parts are 0); `None` without a
/// leading number.
fn version_triple(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| {
        let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
        p[..digits].parse::<u32>().ok()
    });
    let major = parts.next().flatten()?;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// NICs in os-net-config's order as `utils._ordered_nics` builds it: the
/// kernel's physical NICs (only those whose operstate is `up` with
/// `active_only`), then every NIC of `dpdk_mapping.yaml` that is no VF and
/// every SR-IOV PF (18.x), whatever their link.
#[must_use]
pub fn osnc_order<'a>(snap: &'a Snapshot, st: &'a OsncState, active_only: bool) -> Vec<&'a str> {
    let mut v = ordered_nics(snap, active_only);
    v.retain(|n| !st.kernel_vfs.iter().any(|vf| vf == n));
    v.extend(
        st.dpdk
            .iter()
            .filter(|d| !d.vf && !st.sriov_vfs.contains(&d.name))
            .map(|d| d.name.as_str()),
    );
    if st.counts_sriov_pfs() {
        v.extend(st.sriov_pfs.iter().map(String::as_str));
    }
    in_order(v)
}

/// `common.interface_mac`: a bond port's permanent MAC (sysfs
/// `bonding_slave/perm_hwaddr`), else the NIC's address, else (bound to
/// DPDK, gone from the kernel) the DPDK mapping's.
fn interface_mac<'a>(snap: &'a Snapshot, st: &'a OsncState, name: &str) -> Option<&'a str> {
    if let Some(i) = snap.by_name(name) {
        let perm = i.bond_port.as_ref().and_then(|p| p.perm_mac.as_deref());
        return perm.or(i.mac.as_deref());
    }
    st.dpdk
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.mac_address.as_deref())
}

/// `netaddr.valid_mac`: the EUI-48 forms netaddr parses (colon or hyphen
/// octets of 1-2 hex digits, Cisco's three groups of 1-4, PostgreSQL's two
/// of 5-6, 11 or 12 bare hex digits), either case.
#[must_use]
pub fn valid_mac(s: &str) -> bool {
    let hex = |g: &str, lo: usize, hi: usize| {
        (lo..=hi).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let groups = |sep: char, n: usize, lo: usize, hi: usize| {
        let parts: Vec<&str> = s.split(sep).collect();
        parts.len() == n && parts.iter().all(|g| hex(g, lo, hi))
    };
    groups(':', 6, 1, 2)
        || groups('-', 6, 1, 2)
        || groups(':', 3, 1, 4)
        || groups('-', 3, 1, 4)
        || groups('.', 3, 1, 4)
        || groups('-', 2, 5, 6)
        || groups(':', 2, 5, 6)
        || hex(s, 11, 12)
}

/// The 48 bits of a MAC in any of [`valid_mac`]'s forms, for hints only.
fn mac_bits(s: &str) -> Option<u64> {
    if !valid_mac(s) {
        return None;
    }
    let digits: String = if s.contains([':', '-', '.']) {
        let parts: Vec<&str> = s.split([':', '-', '.']).collect();
        let width = 12 / parts.len();
        parts.iter().map(|p| format!("{p:0>width$}")).collect()
    } else {
        s.to_owned()
    };
    u64::from_str_radix(&digits, 16).ok()
}

/// A mapping entry that matches no NIC: os-net-config ignores it (logging
/// "mac … not found" or "nic … not found") and numbers that name by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// The alias (`nic2`).
    pub nic: String,
    /// The value as written.
    pub value: String,
    /// Why it matches nothing, for a message.
    pub why: String,
}

/// What os-net-config's next run would map (`objects.mapped_nics`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NextRun {
    /// nicN → NIC.
    pub map: BTreeMap<String, String>,
    /// Mapping entries that match no NIC.
    pub unmatched: Vec<Unmatched>,
    /// os-net-config would stop at the mapping file (a NIC mapped twice, an
    /// alias that is an active NIC's name): why.
    pub refused: Option<String>,
}

/// `objects.mapped_nics`: a mapping file's entries resolved against every
/// available NIC (link or not; a MAC compared as written with
/// [`interface_mac`], a name with the NICs' names), then every active NIC not
/// mapped by the file named `nic<position among the active NICs>` unless the
/// file took that alias. With `all_active`, every available NIC counts as
/// active (how the configuration was built when every link was up).
fn mapped_nics(snap: &Snapshot, st: &OsncState, all_active: bool) -> NextRun {
    let available = osnc_order(snap, st, false);
    let counted = if all_active {
        available.clone()
    } else {
        osnc_order(snap, st, true)
    };
    let mut out = NextRun::default();
    for (alias, value) in &st.mapping {
        let Some(v) = value.as_str() else {
            out.unmatched.push(Unmatched {
                nic: alias.clone(),
                value: value.to_string(),
                why: "it is not a string (an unquoted MAC of decimal digits is a number to os-net-config's YAML reader): quote it".into(),
            });
            continue;
        };
        let dev = if valid_mac(v) {
            available
                .iter()
                .find(|n| interface_mac(snap, st, n) == Some(v))
                .copied()
        } else {
            available.iter().find(|n| **n == v).copied()
        };
        let Some(dev) = dev else {
            let why = match mac_bits(v) {
                Some(bits) => match available.iter().find(|n| {
                    interface_mac(snap, st, n).and_then(mac_bits) == Some(bits)
                }) {
                    Some(n) => format!(
                        "{n} has this MAC as {}: os-net-config compares MACs as written, so write it that way",
                        interface_mac(snap, st, n).unwrap_or_default()
                    ),
                    None => "no NIC has this MAC (a replaced card?)".into(),
                },
                None => format!("no NIC is named {v}"),
            };
            out.unmatched.push(Unmatched {
                nic: alias.clone(),
                value: v.to_owned(),
                why,
            });
            continue;
        };
        if out.map.values().any(|d| d == dev) {
            out.refused = Some(format!(
                "interface {dev} already mapped, check mapping file for duplicates"
            ));
            return NextRun {
                map: BTreeMap::new(),
                ..out
            };
        }
        let vf = st.kernel_vfs.contains(alias);
        if !vf
            && snap
                .by_name(alias)
                .is_some_and(|i| physical(i) && active(i))
        {
            out.refused = Some(format!(
                "cannot map {dev} to alias {alias}, alias overlaps with active NIC."
            ));
            return NextRun {
                map: BTreeMap::new(),
                ..out
            };
        }
        out.map.insert(alias.clone(), dev.to_owned());
    }
    for (i, dev) in counted.iter().enumerate() {
        if out.map.values().any(|d| d == dev) {
            continue;
        }
        out.map
            .entry(format!("nic{}", i + 1))
            .or_insert_with(|| (*dev).to_owned());
    }
    out
}

/// What os-net-config would map if it ran now (`os-net-config -i`).
#[must_use]
pub fn next_run(snap: &Snapshot, st: &OsncState) -> NextRun {
    mapped_nics(snap, st, false)
}

/// The mapping os-net-config would compute now with `mapping` as its
/// mapping document (no DPDK or SR-IOV state).
#[must_use]
pub fn nic_mapping(
    snap: &Snapshot,
    mapping: Option<&serde_json::Value>,
) -> BTreeMap<String, String> {
    next_run(snap, &OsncState::with_mapping("mapping.yaml", mapping)).map
}

/// `nicN` names as written in an os-net-config document (members, devices
/// and names anywhere in it), in natural order.
#[must_use]
pub fn nic_names(doc: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if let (true, Some(s)) = (k == "name" || k == "device", x.as_str()) {
                        if is_nic_name(s) {
                            out.insert(s.to_owned());
                        }
                    }
                    walk(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut set = BTreeSet::new();
    walk(doc, &mut set);
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort_by_key(|a| natural(a));
    v
}

fn is_nic_name(s: &str) -> bool {
    s.strip_prefix("nic")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The mapping in force: which NIC each `nicN` of `doc` was applied to.
/// The mapping file's entries that match a NIC first (os-net-config pins
/// them), then evidence from the running state (a bond's ports in order, the
/// NIC holding a configured static address, an OVS bond's members), then
/// os-net-config's rule as it was when the configuration was built with
/// every NIC up: position among all NICs (DPDK-bound ones included),
/// skipping aliases the file took.
#[must_use]
pub fn in_force_mapping(
    snap: &Snapshot,
    doc: &serde_json::Value,
    st: &OsncState,
) -> BTreeMap<String, String> {
    let built = mapped_nics(snap, st, true);
    let pinned: BTreeMap<&str, &str> = built
        .map
        .iter()
        .filter(|(k, _)| st.mapping.contains_key(*k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut evidence: BTreeMap<String, String> = BTreeMap::new();
    collect_evidence(snap, doc, &mut evidence);
    evidence.retain(|k, v| !pinned.contains_key(k.as_str()) && !pinned.values().any(|p| p == v));
    let claimed: BTreeSet<&str> = evidence
        .values()
        .map(String::as_str)
        .chain(pinned.values().copied())
        .collect();
    let mut out = BTreeMap::new();
    for name in nic_names(doc) {
        if let Some(dev) = pinned.get(name.as_str()) {
            out.insert(name, (*dev).to_owned());
        } else if let Some(dev) = evidence.get(&name) {
            out.insert(name, dev.clone());
        } else if let Some(dev) = built.map.get(&name) {
            if !claimed.contains(dev.as_str()) {
                out.insert(name, dev.clone());
            }
        }
    }
    out
}

/// nicN → NIC pairs the running state proves.
fn collect_evidence(snap: &Snapshot, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_evidence(snap, x, out)),
        serde_json::Value::Object(o) => {
            let ty = o.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let name = o.get("name").and_then(|t| t.as_str()).unwrap_or("");
            let member_nics: Vec<&str> = o
                .get("members")
                .and_then(|m| m.as_array())
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x.get("name").and_then(|n| n.as_str()))
                        .filter(|n| is_nic_name(n))
                        .collect()
                })
                .unwrap_or_default();
            let running: Option<Vec<String>> = match ty {
                "linux_bond" | "team" => snap.by_name(name).map(|b| {
                    snap.ports_of(b.index)
                        .iter()
                        .map(|p| p.name.clone())
                        .collect()
                }),
                "ovs_bond" => snap
                    .ovs
                    .bonds()
                    .find(|(_, p)| p.name == name)
                    .map(|(_, p)| p.interfaces.iter().map(|i| i.name.clone()).collect()),
                _ => None,
            };
            if let Some(mut ports) = running {
                let mut nics = member_nics.clone();
                if ports.len() == nics.len() {
                    // os-net-config maps in order, so order is kept on both sides.
                    ports.sort_by_key(|a| natural(a));
                    nics.sort_by_key(|a| natural(a));
                    for (n, p) in nics.into_iter().zip(ports) {
                        out.entry(n.to_owned()).or_insert(p);
                    }
                }
            }
            if ty == "interface" && is_nic_name(name) {
                let holder = o
                    .get("addresses")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.get("ip_netmask").and_then(|v| v.as_str()))
                    .filter_map(|t| t.split('/').next()?.trim().parse::<std::net::IpAddr>().ok())
                    .find_map(|ip| snap.addresses.iter().find(|a| a.address == ip))
                    .and_then(|a| snap.interfaces.get(&a.ifindex))
                    .filter(|i| physical(i));
                if let Some(i) = holder {
                    out.entry(name.to_owned()).or_insert_with(|| i.name.clone());
                }
            }
            for x in o.values() {
                collect_evidence(snap, x, out);
            }
        }
        _ => {}
    }
}

/// Why a NIC is not counted by os-net-config now, for a message.
#[must_use]
pub fn why_not_counted(snap: &Snapshot, name: &str) -> Option<String> {
    let i = snap.by_name(name)?;
    if active(i) {
        return None;
    }
    Some(if i.carrier {
        format!("{name} is {} (not up)", i.oper_state.as_str())
    } else {
        format!("{name} has no carrier")
    })
}

/// One piece of `utils._natural_sort_key`: text and numbers alternate
/// (`re.split('([0-9]+)')`), so a position always holds the same kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Piece {
    Text(String),
    /// A number, as (digits without leading zeros: their count, then the
    /// digits): compares as Python's `int` does, whatever its size.
    Num(usize, String),
}

/// `utils._natural_sort_key`: `eth2` before `eth10`, `eth` before `eth0`.
pub(crate) fn natural(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let cut = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push(Piece::Text(rest[..cut].to_owned()));
        rest = &rest[cut..];
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = rest[..end].trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        out.push(Piece::Num(digits.len(), digits.to_owned()));
        rest = &rest[end..];
    }
}
