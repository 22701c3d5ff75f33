//! Expected state: what the node's network should look like, read from its
//! os-net-config file as it is (YAML or JSON), and the rules that compare the
//! running state with it. Catches the seed failure's second half: the
//! configurator's fallback to DHCP, a lost static address, a lost default
//! route, a missing bond member.
//!
//! Entry types preflight does not model (ovs_user_bridge, ib_interface,
//! contrail_vrouter, ...) are listed in `unsupported`, never an error.

use std::collections::BTreeMap;
use std::net::IpAddr;

use preflight_model::{BondMode, Snapshot};

use crate::{raw, Code, Raw};

/// Kinds of entries preflight checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `interface`: a NIC.
    Interface,
    /// `linux_bond`.
    LinuxBond,
    /// `ovs_bridge` (a netdev of kind openvswitch).
    OvsBridge,
    /// `ovs_bond`: no kernel netdev of its own; its members are checked.
    OvsBond,
    /// `vlan`.
    Vlan,
    /// `linux_bridge`.
    LinuxBridge,
}

/// One expected interface.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// Name after nicN mapping.
    pub name: String,
    /// As written in the file (`nic1`), when it was mapped.
    pub written_as: Option<String>,
    /// Kind.
    pub kind: Kind,
    /// `use_dhcp: true`.
    pub dhcp: bool,
    /// Static addresses with prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// A default route is expected (route with `default: true` or 0.0.0.0/0, ::/0).
    pub default_route: Option<Option<IpAddr>>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Members (bonds), after mapping.
    pub members: Vec<String>,
    /// `mode=` of `bonding_options`.
    pub bond_mode: Option<BondMode>,
    /// `miimon=` of `bonding_options`.
    pub bond_miimon: Option<u32>,
}

/// Everything expected of a node.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Expectations {
    /// Where they came from (for messages).
    pub source: String,
    /// Interfaces.
    pub interfaces: Vec<Expected>,
    /// Entries not modelled, as `type name` (reported, not checked).
    pub unsupported: Vec<String>,
}

/// A file that cannot be read as expectations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {reason}")]
pub struct ExpectError {
    /// File.
    pub file: String,
    /// Path in the document (`network_config[2].addresses[0].ip_netmask`).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Converts YAML to a JSON value (os-net-config files are YAML or JSON).
fn yaml_to_json(y: &yaml_rust2::Yaml) -> serde_json::Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .map_or(serde_json::Value::Null, |f| serde_json::json!(f)),
        Yaml::Integer(i) => serde_json::json!(i),
        Yaml::String(s) => serde_json::Value::String(s.clone()),
        Yaml::Boolean(b) => serde_json::Value::Bool(*b),
        Yaml::Array(a) => serde_json::Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => serde_json::Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => format!("{k:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => serde_json::Value::Null,
    }
}

/// Parses os-net-config text (JSON when it starts with `{`, YAML otherwise).
///
/// # Errors
/// Syntax errors and values of the wrong type, with the path in the document.
pub fn parse_document(file: &str, text: &str) -> Result<serde_json::Value, ExpectError> {
    let err = |path: &str, reason: String| ExpectError {
        file: file.to_owned(),
        path: path.to_owned(),
        reason,
    };
    // os-net-config reads both forms with a YAML loader, which also accepts
    // JSON that strict parsers refuse (trailing commas): do the same, and
    // report the JSON error for a JSON-looking file neither can read.
    let json = text
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str::<serde_json::Value>(text));
    if let Some(Ok(v)) = json {
        return Ok(v);
    }
    match yaml_rust2::YamlLoader::load_from_str(text) {
        Ok(docs) => Ok(docs.first().map_or(serde_json::Value::Null, yaml_to_json)),
        Err(e) => Err(match json {
            Some(Err(j)) => err(
                &format!("line {}", j.line()),
                format!("not valid JSON: {j}"),
            ),
            _ => err(
                &format!("line {}", e.marker().line()),
                format!("not valid YAML: {e}"),
            ),
        }),
    }
}

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

fn natural(s: &str) -> Vec<(String, u64)> {
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

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    Some((ip.trim().parse().ok()?, len.trim().parse().ok()?))
}

/// Reads expectations from an os-net-config document.
///
/// # Errors
/// A document without `network_config` as a list, or a bad value in an
/// entry preflight checks, with the path in the document.
pub fn from_os_net_config(
    file: &str,
    doc: &serde_json::Value,
    nics: &BTreeMap<String, String>,
) -> Result<Expectations, ExpectError> {
    let err = |path: String, reason: &str| ExpectError {
        file: file.to_owned(),
        path,
        reason: reason.to_owned(),
    };
    let list = doc
        .get("network_config")
        .ok_or_else(|| {
            err(
                "network_config".into(),
                "missing: an os-net-config file has a network_config list",
            )
        })?
        .as_array()
        .ok_or_else(|| err("network_config".into(), "must be a list of entries"))?;
    let mut out = Expectations {
        source: file.to_owned(),
        ..Expectations::default()
    };
    for (i, e) in list.iter().enumerate() {
        walk(e, &format!("network_config[{i}]"), nics, &mut out, file)?;
    }
    Ok(out)
}

fn walk(
    e: &serde_json::Value,
    path: &str,
    nics: &BTreeMap<String, String>,
    out: &mut Expectations,
    file: &str,
) -> Result<Option<String>, ExpectError> {
    let err = |p: String, reason: String| ExpectError {
        file: file.to_owned(),
        path: p,
        reason,
    };
    let obj = e
        .as_object()
        .ok_or_else(|| err(path.to_owned(), "each entry must be a mapping".into()))?;
    let ty = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| err(format!("{path}.type"), "missing or not a string".into()))?;
    let kind = match ty {
        "interface" => Kind::Interface,
        "linux_bond" => Kind::LinuxBond,
        "ovs_bridge" => Kind::OvsBridge,
        "ovs_bond" => Kind::OvsBond,
        "vlan" => Kind::Vlan,
        "linux_bridge" => Kind::LinuxBridge,
        other => {
            let name = obj.get("name").and_then(|n| n.as_str()).unwrap_or("");
            out.unsupported
                .push(format!("{other} {name}").trim().to_owned());
            return Ok(None);
        }
    };
    let written = match (obj.get("name").and_then(|n| n.as_str()), kind) {
        (Some(n), _) => n.to_owned(),
        (None, Kind::Vlan) => {
            let id = obj
                .get("vlan_id")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| {
                    err(
                        format!("{path}.vlan_id"),
                        "a vlan without name needs a numeric vlan_id".into(),
                    )
                })?;
            match obj.get("device").and_then(|d| d.as_str()) {
                Some(dev) => format!("{}.{id}", nics.get(dev).map_or(dev, String::as_str)),
                None => format!("vlan{id}"),
            }
        }
        (None, _) => return Err(err(format!("{path}.name"), "missing".into())),
    };
    let name = nics
        .get(&written)
        .cloned()
        .unwrap_or_else(|| written.clone());
    let mut x = Expected {
        written_as: (name != written).then_some(written),
        name: name.clone(),
        kind,
        dhcp: obj
            .get("use_dhcp")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        addresses: Vec::new(),
        default_route: None,
        mtu: None,
        members: Vec::new(),
        bond_mode: None,
        bond_miimon: None,
    };
    if let Some(m) = obj.get("mtu") {
        x.mtu = Some(
            m.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| (68..=65_536).contains(v))
                .ok_or_else(|| {
                    err(
                        format!("{path}.mtu"),
                        format!("`{m}` is not an MTU (68-65536)"),
                    )
                })?,
        );
    }
    if let Some(addrs) = obj.get("addresses") {
        let list = addrs
            .as_array()
            .ok_or_else(|| err(format!("{path}.addresses"), "must be a list".into()))?;
        for (j, a) in list.iter().enumerate() {
            let p = format!("{path}.addresses[{j}].ip_netmask");
            let text = a
                .get("ip_netmask")
                .and_then(|v| v.as_str())
                .ok_or_else(|| err(p.clone(), "missing or not a string".into()))?;
            x.addresses.push(
                parse_cidr(text)
                    .ok_or_else(|| err(p, format!("`{text}` is not an address/prefix")))?,
            );
        }
    }
    if let Some(routes) = obj.get("routes") {
        let list = routes
            .as_array()
            .ok_or_else(|| err(format!("{path}.routes"), "must be a list".into()))?;
        for (j, r) in list.iter().enumerate() {
            let dest = r
                .get("ip_netmask")
                .or_else(|| r.get("destination"))
                .and_then(|v| v.as_str());
            let is_default = r
                .get("default")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
                || matches!(dest, Some("0.0.0.0/0" | "::/0"));
            if is_default {
                let hop = r
                    .get("next_hop")
                    .or_else(|| r.get("nexthop"))
                    .and_then(|v| v.as_str());
                let gw = match hop {
                    Some(h) => Some(h.parse().map_err(|_| {
                        err(
                            format!("{path}.routes[{j}].next_hop"),
                            format!("`{h}` is not an address"),
                        )
                    })?),
                    None => None,
                };
                x.default_route = Some(gw);
            }
        }
    }
    if let Some(opts) = obj.get("bonding_options").and_then(|v| v.as_str()) {
        for kv in opts.split_whitespace() {
            match kv.split_once('=') {
                Some(("mode", m)) => x.bond_mode = BondMode::parse(m),
                Some(("miimon", v)) => x.bond_miimon = v.parse().ok(),
                _ => {}
            }
        }
    }
    if let Some(members) = obj.get("members") {
        let list = members
            .as_array()
            .ok_or_else(|| err(format!("{path}.members"), "must be a list".into()))?;
        for (j, m) in list.iter().enumerate() {
            if let Some(member) = walk(m, &format!("{path}.members[{j}]"), nics, out, file)? {
                x.members.push(member);
            }
        }
    }
    out.interfaces.push(x);
    Ok(Some(name))
}

/// A baseline: the node's current state as expectations, so that a later
/// comparison reports every difference with the same rules (`preflight
/// baseline`). Only what configuration controls is kept: interfaces with
/// their kind, MTU and bond settings, permanent global addresses, the default
/// gateway; bond members are the ports that were up.
#[must_use]
pub fn from_snapshot(snap: &Snapshot, source: &str) -> Expectations {
    let default_gw = snap
        .routes
        .iter()
        .find(|r| r.is_default() && !r.ipv6)
        .map(|r| (r.oif, r.gateway));
    let interfaces = snap
        .interfaces
        .values()
        .filter(|i| i.name != "lo")
        .map(|i| {
            let kind = match (i.kind.as_deref(), i.bond.is_some()) {
                (_, true) => Kind::LinuxBond,
                (Some("vlan"), _) => Kind::Vlan,
                (Some("bridge"), _) => Kind::LinuxBridge,
                (Some("openvswitch"), _) => Kind::OvsBridge,
                _ => Kind::Interface,
            };
            Expected {
                name: i.name.clone(),
                written_as: None,
                kind,
                // A dynamic address today is not a finding tomorrow.
                dhcp: snap.addresses_of(i.index).any(|a| !a.permanent),
                addresses: snap
                    .addresses_of(i.index)
                    .filter(|a| a.permanent && a.scope == "global")
                    .map(|a| (a.address, a.prefix_len))
                    .collect(),
                default_route: default_gw
                    .filter(|(oif, _)| *oif == Some(i.index))
                    .map(|(_, gw)| gw),
                mtu: Some(i.mtu),
                members: snap
                    .ports_of(i.index)
                    .into_iter()
                    .filter(|p| i.bond.is_some() && p.carrier)
                    .map(|p| p.name.clone())
                    .collect(),
                bond_mode: i.bond.as_ref().map(|b| b.mode),
                bond_miimon: i.bond.as_ref().map(|b| b.miimon_ms),
            }
        })
        .collect();
    Expectations {
        source: source.to_owned(),
        interfaces,
        unsupported: Vec::new(),
    }
}

/// Compares the running state with the expectations.
#[must_use]
pub fn rules(snap: &Snapshot, exp: &Expectations) -> Vec<Raw> {
    let mut out = Vec::new();
    let src = &exp.source;
    let has_default = |v6: bool| snap.routes.iter().any(|r| r.is_default() && r.ipv6 == v6);
    for x in &exp.interfaces {
        let written = x
            .written_as
            .as_ref()
            .map_or_else(String::new, |w| format!(" ({w} in {src})"));
        let running = snap.by_name(&x.name);
        if x.kind != Kind::OvsBond && running.is_none() {
            out.push(raw(
                Code::ExpectedInterfaceMissing,
                &x.name,
                format!(
                    "{}{written} is configured in {src} but does not exist on the node",
                    x.name
                ),
            ));
        }
        for m in &x.members {
            match snap.by_name(m) {
                None => out.push(raw(
                    Code::BondMemberMissing,
                    format!("{}/{m}", x.name),
                    format!("{m}, a member of {} in {src}, does not exist on the node", x.name),
                )),
                Some(i) if !i.carrier && exp.interfaces.iter().any(|e| e.name == *m && e.kind == Kind::Interface) => out.push(raw(
                    Code::BondMemberMissing,
                    format!("{}/{m}", x.name),
                    format!("{m}, a member of {} in {src}, has no carrier; rebuilding {} with it may fail", x.name, x.name),
                )),
                Some(_) => {}
            }
        }
        if let Some(gw) = x.default_route {
            let v6 = gw.is_some_and(|g| g.is_ipv6());
            let defaults: Vec<&preflight_model::Route> = snap
                .routes
                .iter()
                .filter(|r| r.is_default() && r.ipv6 == v6)
                .collect();
            let via_expected = defaults
                .iter()
                .any(|r| gw.is_none_or(|g| r.gateway == Some(g)));
            if !defaults.is_empty() && !via_expected {
                let actual: Vec<String> = defaults
                    .iter()
                    .map(|r| {
                        format!(
                            "via {} on {} ({})",
                            r.gateway.map_or_else(|| "-".into(), |g| g.to_string()),
                            r.oif.map_or_else(|| "-".into(), |o| snap.name_of(o)),
                            r.protocol
                        )
                    })
                    .collect();
                out.push(raw(
                    Code::DefaultRouteMissing,
                    &x.name,
                    format!(
                        "the default route is {} but {src} configures it via {} on {}",
                        actual.join(", "),
                        gw.map_or_else(|| "-".into(), |g| g.to_string()),
                        x.name
                    ),
                ));
            } else if !has_default(v6) {
                out.push(raw(
                    Code::DefaultRouteMissing,
                    &x.name,
                    format!(
                        "no {} default route, but {src} configures one on {}{}",
                        if v6 { "IPv6" } else { "IPv4" },
                        x.name,
                        gw.map_or_else(String::new, |g| format!(" via {g}"))
                    ),
                ));
            }
        }
        let Some(iface) = running else {
            // The addresses it should carry are gone with it.
            for (ip, len) in &x.addresses {
                out.push(raw(
                    Code::ExpectedAddressMissing,
                    format!("{}/{ip}", x.name),
                    format!("{ip}/{len} is configured on {}{written}, which does not exist; the node may be unreachable on this network", x.name),
                ));
            }
            continue;
        };
        for (ip, len) in &x.addresses {
            let present = snap
                .addresses_of(iface.index)
                .any(|a| a.address == *ip && a.prefix_len == *len);
            if !present {
                out.push(raw(
                    Code::ExpectedAddressMissing,
                    format!("{}/{ip}", x.name),
                    format!("{ip}/{len} is configured on {}{written} but not present; the node may be unreachable on this network", x.name),
                ));
            }
        }
        if !x.dhcp {
            let dynamic: Vec<String> = snap
                .addresses_of(iface.index)
                .filter(|a| !a.permanent && a.scope == "global" && a.address.is_ipv4())
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect();
            let dhcp_route = snap
                .routes
                .iter()
                .any(|r| r.oif == Some(iface.index) && r.protocol == "dhcp");
            if !dynamic.is_empty() || dhcp_route {
                out.push(raw(
                    Code::UnexpectedDhcp,
                    &x.name,
                    format!(
                        "{} has {} but {src} configures it statically: the network configurator may have fallen back to DHCP",
                        x.name,
                        if dynamic.is_empty() { "a DHCP route".to_string() } else { format!("a dynamic address ({})", dynamic.join(", ")) }
                    ),
                ));
            }
        }
        if let Some(mtu) = x.mtu {
            if iface.mtu != mtu {
                out.push(raw(
                    Code::MtuMismatch,
                    &x.name,
                    format!(
                        "{} has MTU {} but {src} configures {mtu}",
                        x.name, iface.mtu
                    ),
                ));
            }
        }
        if x.kind == Kind::LinuxBond {
            if let Some(b) = &iface.bond {
                if let Some(m) = x.bond_mode.filter(|m| *m != b.mode) {
                    out.push(raw(
                        Code::BondModeMismatch,
                        &x.name,
                        format!(
                            "{} runs in mode {} but {src} configures {m}",
                            x.name, b.mode
                        ),
                    ));
                }
                if let Some(mi) = x.bond_miimon.filter(|m| *m != b.miimon_ms) {
                    out.push(raw(
                        Code::BondModeMismatch,
                        &x.name,
                        format!(
                            "{} runs with miimon {} but {src} configures {mi}",
                            x.name, b.miimon_ms
                        ),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
