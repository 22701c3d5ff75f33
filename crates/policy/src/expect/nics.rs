//! The nicN → device mapping: os-net-config's abstract NIC names (`nic1`,
//! `nic2`, ...) resolved to the node's interfaces the way os-net-config
//! resolves them.

use std::collections::BTreeMap;

use preflight_model::Snapshot;

/// The nicN → device mapping: a mapping file's `interface_mapping`, else
/// os-net-config's own rule: active (carrier) physical NICs, embedded ones
/// (`em*`, `eno*`) first, then by name in natural order.
#[must_use]
pub fn nic_mapping(
    snap: &Snapshot,
    mapping: Option<&serde_json::Value>,
) -> BTreeMap<String, String> {
    if let Some(m) = mapping
        .and_then(|m| m.get("interface_mapping"))
        .and_then(|m| m.as_object())
    {
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
        return out;
    }
    let mut nics: Vec<&str> = snap
        .interfaces
        .values()
        .filter(|i| {
            i.kind.is_none()
                && i.carrier
                && i.name != "lo"
                && i.mac.as_deref() != Some("00:00:00:00:00:00")
        })
        .map(|i| i.name.as_str())
        .collect();
    nics.sort_by(|a, b| {
        let emb = |n: &str| !(n.starts_with("em") || n.starts_with("eno"));
        emb(a)
            .cmp(&emb(b))
            .then_with(|| natural(a).cmp(&natural(b)))
    });
    nics.iter()
        .enumerate()
        .map(|(i, n)| (format!("nic{}", i + 1), (*n).to_owned()))
        .collect()
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
