//! The merged netplan devices as [`Expected`] entries: names (an
//! ethernet's `match` and `set-name`), bond members and parameters, VLAN
//! links, addresses, DHCP, default routes and MTU. Keys preflight does not
//! compare are EXPECTATION_UNCHECKED naming `file:line`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use preflight_model::excerpt::excerpt;
use preflight_model::{BondMode, Snapshot};
use serde_json::Value;

use super::Dev;
use crate::expect::{common, ExpectError, Expected, Kind, Unchecked};

/// Keys that change nothing preflight compares (boot ordering, docs).
const IGNORED: &[&str] = &["optional", "renderer", "critical"];

fn at(d: &Dev, rel: &str) -> String {
    d.at.get(rel)
        .or_else(|| d.at.get(""))
        .cloned()
        .unwrap_or_default()
}

fn path(d: &Dev, rel: &str) -> String {
    format!("network.{}.{}.{rel}", d.section, d.id)
}

fn bad(d: &Dev, rel: &str, reason: String) -> ExpectError {
    ExpectError {
        file: at(d, rel),
        path: path(d, rel),
        reason,
    }
}

fn skip(d: &Dev, rel: &str, why: &str, unch: &mut Vec<Unchecked>) {
    unch.push(Unchecked {
        at: at(d, rel),
        what: format!("{} {why}", excerpt(&path(d, rel))),
    });
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The kernel name of an ethernet: `set-name`, else a literal
/// `match.name`, else the NIC with `match.macaddress`, else the id. `None`
/// when the match cannot be evaluated (a glob, or only drivers).
fn ethernet_name(d: &Dev, snap: &Snapshot, unch: &mut Vec<Unchecked>) -> Option<String> {
    let m = d.keys.get("match").and_then(Value::as_object);
    let set = d.keys.get("set-name").and_then(Value::as_str);
    if let (Some(s), Some(_)) = (set, m) {
        skip(d, "set-name", &format!("renames the matched NIC to {}: the rename is what the NIC must be called now, and it moves if the match stops matching (see RENAME exposure in docs/netplan.md)", excerpt(s)), unch);
        return Some(s.to_owned());
    }
    let Some(m) = m else {
        return Some(d.id.clone());
    };
    for k in m.keys() {
        if k != "name" && k != "macaddress" {
            skip(
                d,
                &format!("match.{k}"),
                "is a match preflight does not evaluate",
                unch,
            );
        }
    }
    if let Some(n) = m.get("name").and_then(Value::as_str) {
        if is_glob(n) {
            skip(
                d,
                "match.name",
                "is a glob: which NICs it matches is not checked",
                unch,
            );
            return None;
        }
        return Some(n.to_owned());
    }
    if let Some(mac) = m.get("macaddress").and_then(Value::as_str) {
        let nic = snap.interfaces.values().find(|i| {
            i.mac
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(mac))
        });
        // A MAC no NIC has: expected under the MAC, so it is missing.
        return Some(nic.map_or_else(|| mac.to_ascii_lowercase(), |i| i.name.clone()));
    }
    skip(
        d,
        "match",
        "names neither a name nor a MAC: which NIC it is for is not checked",
        unch,
    );
    None
}

fn address(d: &Dev, rel: &str, v: &Value) -> Result<(IpAddr, u8), ExpectError> {
    // `- 10.0.0.1/24` or `- "10.0.0.1/24": {lifetime: 0}`.
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let fail = || {
        bad(
            d,
            rel,
            format!(
                "`{}` is not an address with a prefix length (`192.0.2.1/24`)",
                excerpt(&v.to_string())
            ),
        )
    };
    let (ip, len) = s.split_once('/').ok_or_else(fail)?;
    let ip: IpAddr = ip.parse().map_err(|_| fail())?;
    let len: u8 = len.parse().map_err(|_| fail())?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(fail());
    }
    Ok((ip, len))
}

fn number(d: &Dev, rel: &str, v: &Value, what: &str) -> Result<u32, ExpectError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| {
            bad(
                d,
                rel,
                format!("`{}` is not {what}", excerpt(&v.to_string())),
            )
        })
}

/// `mii-monitor-interval`: milliseconds, or a number with `ms` or `s`.
fn interval(v: &Value) -> Option<u32> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).ok();
    }
    let s = v.as_str()?;
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok();
    }
    if let Some(sec) = s.strip_suffix('s') {
        return sec.parse::<u32>().ok()?.checked_mul(1000);
    }
    s.parse().ok()
}

fn list<'a>(d: &'a Dev, key: &'a str) -> impl Iterator<Item = (String, &'a Value)> + 'a {
    d.keys
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(move |(i, v)| (format!("{key}[{i}]"), v))
}

fn routes(d: &Dev, x: &mut Expected, unch: &mut Vec<Unchecked>) -> Result<(), ExpectError> {
    let mut defaults: Vec<(Option<IpAddr>, String)> = Vec::new();
    for (rel, r) in list(d, "routes") {
        let to = r.get("to").and_then(Value::as_str).unwrap_or_default();
        if !matches!(to, "default" | "0.0.0.0/0" | "::/0") {
            skip(
                d,
                &rel,
                "is a route preflight does not check (only default routes)",
                unch,
            );
            continue;
        }
        let via = match r.get("via") {
            Some(v) => Some(v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                bad(
                    d,
                    &rel,
                    format!("via `{}` is not an IP address", excerpt(&v.to_string())),
                )
            })?),
            None => None,
        };
        defaults.push((via, at(d, &rel)));
    }
    for k in ["gateway4", "gateway6"] {
        if let Some(v) = d.keys.get(k) {
            let g = v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                bad(
                    d,
                    k,
                    format!("`{}` is not an IP address", excerpt(&v.to_string())),
                )
            })?;
            defaults.push((Some(g), at(d, k)));
        }
    }
    let v4 = defaults
        .iter()
        .find(|(g, _)| g.is_some_and(|g| g.is_ipv4()))
        .or(defaults.first());
    if let Some((g, a)) = v4 {
        x.default_route = Some(*g);
        x.declared_at.insert("route".into(), a.clone());
    }
    Ok(())
}

/// The expectations of `devs`; `renderer` is `network.renderer`.
pub(super) fn expectations(
    devs: &[Dev],
    renderer: Option<&(String, String)>,
    snap: &Snapshot,
    unch: &mut Vec<Unchecked>,
) -> Result<Vec<Expected>, ExpectError> {
    if let Some((r, a)) = renderer {
        if r != "networkd" && r != "NetworkManager" {
            unch.push(Unchecked {
                at: a.clone(),
                what: format!("renderer {} is not one netplan documents", excerpt(r)),
            });
        }
    }
    // Ethernet ids to kernel names, for bond members and VLAN links.
    let mut names: HashMap<&str, Option<String>> = HashMap::new();
    for d in devs.iter().filter(|d| d.section == "ethernets") {
        names.insert(&d.id, ethernet_name(d, snap, unch));
    }
    let name_of = |id: &str| -> String {
        names
            .get(id)
            .cloned()
            .flatten()
            .unwrap_or_else(|| id.to_owned())
    };
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for d in devs {
        let (kind, name) = match d.section.as_str() {
            "ethernets" => match names.get(d.id.as_str()).cloned().flatten() {
                Some(n) => (Kind::Interface, n),
                None => continue,
            },
            "bonds" => (Kind::LinuxBond, d.id.clone()),
            "vlans" => (Kind::Vlan, d.id.clone()),
            _ => (Kind::LinuxBridge, d.id.clone()),
        };
        let mut x = Expected {
            written_as: (name != d.id).then(|| d.id.clone()),
            ..common::blank(&name, kind)
        };
        x.declared_at.insert(String::new(), at(d, ""));
        for (k, v) in &d.keys {
            match k.as_str() {
                "match" | "set-name" | "routes" | "gateway4" | "gateway6" => {}
                k if IGNORED.contains(&k) => {}
                "addresses" => {
                    for (rel, a) in list(d, "addresses") {
                        let (ip, len) = address(d, &rel, a)?;
                        x.addresses.push((ip, len));
                        x.declared_at
                            .insert(format!("address:{ip}/{len}"), at(d, &rel));
                    }
                }
                "dhcp4" => {
                    x.dhcp = v
                        .as_bool()
                        .ok_or_else(|| bad(d, k, "is not a boolean".into()))?
                }
                "dhcp6" => {
                    if v.as_bool()
                        .ok_or_else(|| bad(d, k, "is not a boolean".into()))?
                    {
                        skip(d, k, "is true: the DHCPv6 lease is not checked", unch);
                    }
                }
                "mtu" => {
                    x.mtu = Some(number(d, k, v, "an MTU")?);
                    x.declared_at.insert("mtu".into(), at(d, k));
                }
                "interfaces" if kind == Kind::LinuxBond => {
                    for (rel, m) in list(d, "interfaces") {
                        let id = m
                            .as_str()
                            .ok_or_else(|| bad(d, &rel, "is not a device id".into()))?;
                        let n = name_of(id);
                        x.declared_at.insert(format!("member:{n}"), at(d, &rel));
                        x.members.push(n);
                    }
                }
                "interfaces" if kind == Kind::LinuxBridge => {
                    skip(
                        d,
                        k,
                        "(bridge ports) is not compared with the kernel's",
                        unch,
                    );
                }
                "parameters" if kind == Kind::LinuxBond => {
                    for (p, pv) in v.as_object().into_iter().flatten() {
                        let rel = format!("parameters.{p}");
                        match p.as_str() {
                            "mode" => {
                                let m = pv.as_str().and_then(BondMode::parse).ok_or_else(|| {
                                    bad(
                                        d,
                                        &rel,
                                        format!(
                                            "`{}` is not a bonding mode",
                                            excerpt(&pv.to_string())
                                        ),
                                    )
                                })?;
                                x.bond_mode = Some(m);
                                x.declared_at.insert("mode".into(), at(d, &rel));
                            }
                            "mii-monitor-interval" => {
                                let ms = interval(pv).ok_or_else(|| {
                                    bad(
                                        d,
                                        &rel,
                                        format!(
                                            "`{}` is not an interval",
                                            excerpt(&pv.to_string())
                                        ),
                                    )
                                })?;
                                x.bond_miimon = Some(ms);
                                x.declared_at.insert("miimon".into(), at(d, &rel));
                            }
                            _ => skip(d, &rel, "is not compared with the kernel's", unch),
                        }
                    }
                }
                "link" if kind == Kind::Vlan => {
                    let l = v
                        .as_str()
                        .ok_or_else(|| bad(d, k, "is not a device id".into()))?;
                    x.parent = Some(name_of(l));
                }
                "id" if kind == Kind::Vlan => {
                    if v.as_u64().is_none_or(|n| n > 4094) {
                        return Err(bad(
                            d,
                            k,
                            format!("`{}` is not a VLAN id (0-4094)", excerpt(&v.to_string())),
                        ));
                    }
                    skip(
                        d,
                        k,
                        "(the VLAN id) is not compared with the kernel's",
                        unch,
                    );
                }
                _ => skip(d, k, "is not checked", unch),
            }
        }
        routes(d, &mut x, unch)?;
        if kind == Kind::Vlan && x.parent.is_none() {
            skip(
                d,
                "",
                "is a VLAN without `link`: its parent is not checked",
                unch,
            );
        }
        if let Some(prev) = out.get(&name) {
            unch.push(Unchecked {
                at: at(d, ""),
                what: format!(
                    "{name} is also declared at {}: only that one is checked",
                    prev.declared_at.get("").cloned().unwrap_or_default()
                ),
            });
            continue;
        }
        out.insert(name, x);
    }
    Ok(out.into_values().collect())
}
