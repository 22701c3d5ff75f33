//! The nicN → device mapping: os-net-config's abstract NIC names (`nic1`,
//! `nic2`, ...) resolved to the node's interfaces, two ways:
//!
//! - **in force**: the NIC each name was applied to when the configuration
//!   was last built. Read from the running state (a bond's ports, the NIC
//!   holding a configured address, an OVS bond's members) and, for names
//!   without such evidence, os-net-config's order over every physical NIC
//!   whether it has a link or not. Expectations are checked against it.
//! - **next run**: what os-net-config would compute if it ran now. Without a
//!   mapping file it numbers only NICs whose operstate is `up`, so one dead
//!   port shifts every later `nicN` (the seed outage's root cause; LP#1679787
//!   fixed it only for mapping files). A difference is NIC_RENUMBERED.
//!
//! os-net-config's rule (`utils._ordered_nics`): physical NICs (a device and
//! a MAC), SR-IOV VFs excluded, `em*`, `eth*` and `eno*` first, each group in
//! natural order (`eth2` before `eth10`).

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

/// A mapping file's `interface_mapping` (by name or by MAC), resolved.
fn from_file(
    snap: &Snapshot,
    m: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (nic, target) in m {
        let Some(t) = target.as_str() else { continue };
        let t = t.to_ascii_lowercase();
        // A MAC address maps to whichever interface has it.
        let dev = if t.len() == 17 && t.matches(':').count() == 5 {
            snap.interfaces
                .values()
                .find(|i| {
                    i.mac.as_deref() == Some(t.as_str())
                        || i.bond_port.as_ref().and_then(|p| p.perm_mac.as_deref())
                            == Some(t.as_str())
                })
                .map(|i| i.name.clone())
        } else {
            Some(t)
        };
        if let Some(d) = dev {
            out.insert(nic.clone(), d);
        }
    }
    out
}

fn file_mapping(
    mapping: Option<&serde_json::Value>,
) -> Option<&serde_json::Map<String, serde_json::Value>> {
    mapping
        .and_then(|m| m.get("interface_mapping"))
        .and_then(|m| m.as_object())
}

/// The mapping os-net-config would compute now: a mapping file's
/// `interface_mapping`, else its own rule over the NICs that are up.
#[must_use]
pub fn nic_mapping(
    snap: &Snapshot,
    mapping: Option<&serde_json::Value>,
) -> BTreeMap<String, String> {
    if let Some(m) = file_mapping(mapping) {
        return from_file(snap, m);
    }
    numbered(&ordered_nics(snap, true))
}

pub(crate) fn numbered(nics: &[&str]) -> BTreeMap<String, String> {
    nics.iter()
        .enumerate()
        .map(|(i, n)| (format!("nic{}", i + 1), (*n).to_owned()))
        .collect()
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
/// With a mapping file, the file's (it does not shift). Without, evidence
/// from the running state first (a bond's ports in order, the NIC holding a
/// configured static address, an OVS bond's members), then os-net-config's
/// order over every physical NIC, link or not.
#[must_use]
pub fn in_force_mapping(
    snap: &Snapshot,
    doc: &serde_json::Value,
    mapping: Option<&serde_json::Value>,
) -> BTreeMap<String, String> {
    if let Some(m) = file_mapping(mapping) {
        return from_file(snap, m);
    }
    let mut evidence: BTreeMap<String, String> = BTreeMap::new();
    collect_evidence(snap, doc, &mut evidence);
    let claimed: BTreeSet<&str> = evidence.values().map(String::as_str).collect();
    let all = ordered_nics(snap, false);
    let mut out = BTreeMap::new();
    for name in nic_names(doc) {
        if let Some(dev) = evidence.get(&name) {
            out.insert(name, dev.clone());
            continue;
        }
        let pos: Option<usize> = name[3..]
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1));
        if let Some(dev) = pos.and_then(|p| all.get(p)) {
            if !claimed.contains(dev) {
                out.insert(name, (*dev).to_owned());
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

pub(crate) fn natural(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((std::mem::take(&mut text), num.parse().unwrap_or(0)));
                num.clear();
            }
            text.push(c);
        }
    }
    out.push((text, num.parse().unwrap_or(0)));
    out
}
