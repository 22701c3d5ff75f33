//! Reads an os-net-config file (YAML or JSON, as os-net-config itself
//! reads it) into [`Expectations`]. Entry types preflight does not model are
//! listed in `unsupported` (and reported as EXPECTATION_UNCHECKED), never an
//! error; their `interface` members are still checked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use preflight_model::excerpt::{excerpt, excerpt_of, EXCERPT_BYTES};
use preflight_model::BondMode;

use super::yaml::MAX_DOCUMENT_BYTES;
use super::{ExpectError, Expectations, Expected, Kind};

/// Longest name of an entry: far above any interface name (15 bytes in
/// the kernel), so only a hostile or broken file reaches it.
const MAX_NAME_BYTES: usize = 255;

/// A value of the document for a message, as JSON when short (`"9000"`
/// shows the quotes that make it a string); an excerpt with its length
/// when long. Rendered no further than the excerpt needs, although the
/// length is counted to the end (within the document's bounds).
fn quoted(v: &serde_json::Value) -> String {
    /// Keeps the first bytes written and counts them all.
    struct Head {
        kept: Vec<u8>,
        len: usize,
    }
    impl std::io::Write for Head {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let room = (EXCERPT_BYTES + 4).saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&b[..room.min(b.len())]);
            self.len += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if let serde_json::Value::String(s) = v {
        if s.len() > EXCERPT_BYTES {
            return excerpt(s).into_owned();
        }
    }
    let mut head = Head {
        kept: Vec::new(),
        len: 0,
    };
    // Writing into memory cannot fail, nor can serializing a JSON value.
    if serde_json::to_writer(&mut head, v).is_err() {
        return "(a value that cannot be shown)".into();
    }
    let text = match std::str::from_utf8(&head.kept) {
        Ok(t) => t,
        // Cut inside a character: keep what precedes it.
        Err(e) => std::str::from_utf8(&head.kept[..e.valid_up_to()]).unwrap_or_default(),
    };
    excerpt_of(text, head.len, EXCERPT_BYTES).into_owned()
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
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(err(
            "size",
            format!(
                "{} bytes, more than the {MAX_DOCUMENT_BYTES} bytes preflight reads of an os-net-config file",
                text.len()
            ),
        ));
    }
    // os-net-config reads both forms with a YAML loader, which also accepts
    // JSON that strict parsers refuse (trailing commas): do the same, and
    // report the JSON error for a JSON-looking file neither can read
    // (unless the YAML reader refused it for a bound: that is the cause).
    let json = text
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str::<serde_json::Value>(text));
    if let Some(Ok(v)) = json {
        return Ok(v);
    }
    match super::yaml::load(text) {
        Ok(v) => Ok(v),
        Err(y) => Err(match json {
            Some(Err(j)) if !y.bound => err(
                &format!("line {}", j.line()),
                format!("not valid JSON: {j}"),
            ),
            _ => err(&format!("line {}", y.line), y.reason),
        }),
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    Some((ip.trim().parse().ok()?, len.trim().parse().ok()?))
}

/// Reads expectations from an os-net-config document, with its `nicN`
/// names resolved by `nics` (the mapping in force, see
/// [`super::in_force_mapping`]).
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
    let used = super::nics::nic_names(doc);
    let mut out = Expectations {
        source: file.to_owned(),
        nics: super::NicPlan {
            in_force: nics
                .iter()
                .filter(|(k, _)| used.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            names: used,
            osnc: super::OsncState::default(),
        },
        ..Expectations::default()
    };
    for (i, e) in list.iter().enumerate() {
        let at = Place {
            path: format!("network_config[{i}]"),
            parent: None,
            userspace: false,
        };
        walk(e, &at, nics, &mut out, file)?;
    }
    out.fallback = Some(fallback_section(file, doc, nics)?);
    Ok(out)
}

/// The `fallback_config` section, read with the same rules as
/// `network_config` (its nicN names map the same way).
fn fallback_section(
    file: &str,
    doc: &serde_json::Value,
    nics: &BTreeMap<String, String>,
) -> Result<super::FallbackSection, ExpectError> {
    let Some(v) = doc.get("fallback_config").filter(|v| !v.is_null()) else {
        return Ok(super::FallbackSection::default());
    };
    // os-net-config (cli.py) applies a fallback_config only when it is a
    // list, and otherwise goes on without one: absent, with a warning.
    let Some(list) = v.as_array() else {
        return Ok(super::FallbackSection {
            ignored: Some(format!(
                "fallback_config in {} is not a list of entries",
                excerpt(file)
            )),
            ..super::FallbackSection::default()
        });
    };
    let mut read = Expectations::default();
    for (i, e) in list.iter().enumerate() {
        let at = Place {
            path: format!("fallback_config[{i}]"),
            parent: None,
            userspace: false,
        };
        walk(e, &at, nics, &mut read, file)?;
    }
    Ok(super::FallbackSection {
        entries: list.len(),
        interfaces: read.interfaces,
        ignored: None,
    })
}

/// Where an entry sits in the document.
struct Place<'a> {
    /// Path in the document (`network_config[0].members[1]`).
    path: String,
    /// Name of the entry whose `members` list holds this one.
    parent: Option<&'a str>,
    /// Under a DPDK or other userspace-datapath entry: its NICs are bound to
    /// a userspace driver and are not kernel netdevs.
    userspace: bool,
}

/// Entry types whose member NICs leave the kernel (bound to DPDK/VFIO).
fn takes_nics_from_kernel(ty: &str) -> bool {
    ty.contains("dpdk") || ty.starts_with("vpp") || ty.starts_with("nfvswitch")
}

fn walk(
    e: &serde_json::Value,
    at: &Place<'_>,
    nics: &BTreeMap<String, String>,
    out: &mut Expectations,
    file: &str,
) -> Result<Option<String>, ExpectError> {
    let err = |p: String, reason: String| ExpectError {
        file: file.to_owned(),
        path: p,
        reason,
    };
    let path = at.path.as_str();
    let obj = e
        .as_object()
        .ok_or_else(|| err(path.to_owned(), "each entry must be a mapping".into()))?;
    let ty = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| err(format!("{path}.type"), "missing or not a string".into()))?;
    let kind = match ty {
        "interface" if at.userspace => Kind::DpdkNic,
        "interface" => Kind::Interface,
        "linux_bond" => Kind::LinuxBond,
        "ovs_bridge" => Kind::OvsBridge,
        "ovs_bond" => Kind::OvsBond,
        "ovs_user_bridge" => Kind::OvsUserBridge,
        "ovs_dpdk_bond" => Kind::OvsDpdkBond,
        "ovs_dpdk_port" => Kind::OvsDpdkPort,
        "team" => Kind::Team,
        "vlan" => Kind::Vlan,
        "linux_bridge" => Kind::LinuxBridge,
        other => {
            let name = obj.get("name").and_then(|n| n.as_str()).unwrap_or("");
            // Its members are still checked: a NIC does not stop existing
            // because its parent is of a type preflight does not model.
            let mut members = Vec::new();
            if let Some(list) = obj.get("members").and_then(|m| m.as_array()) {
                for (j, m) in list.iter().enumerate() {
                    let inner = Place {
                        path: format!("{path}.members[{j}]"),
                        parent: None,
                        userspace: at.userspace || takes_nics_from_kernel(other),
                    };
                    members.extend(walk(m, &inner, nics, out, file)?);
                }
            }
            match unseen_bond(other, obj, name, path, members) {
                Some(b) => out.unseen_bonds.push(b),
                None => out.unsupported.push(
                    format!("{} {}", excerpt(other), excerpt(name))
                        .trim()
                        .to_owned(),
                ),
            }
            // A bond still lists it as a member, by the name os-net-config
            // gives it (`sriov_vf`: DEVICE_VFID).
            let vf = obj
                .get("device")
                .and_then(|d| d.as_str())
                .zip(obj.get("vfid").and_then(serde_json::Value::as_u64))
                .map(|(d, id)| format!("{}_{id}", nics.get(d).map_or(d, String::as_str)));
            return Ok((!name.is_empty()).then(|| name.to_owned()).or(vf));
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
    if written.len() > MAX_NAME_BYTES {
        return Err(err(
            format!("{path}.name"),
            format!(
                "`{}` is not an interface name (at most {MAX_NAME_BYTES} bytes)",
                excerpt(&written)
            ),
        ));
    }
    let name = nics
        .get(&written)
        .cloned()
        .unwrap_or_else(|| written.clone());
    let mut x = Expected {
        written_as: (name != written).then_some(written),
        name: name.clone(),
        kind,
        parent: at.parent.map(str::to_owned),
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
        declared_at: BTreeMap::new(),
    };
    if let Some(m) = obj.get("mtu") {
        x.mtu = Some(
            m.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| (68..=65_536).contains(v))
                .ok_or_else(|| {
                    err(
                        format!("{path}.mtu"),
                        format!("`{}` is not an MTU (68-65536)", quoted(m)),
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
                parse_cidr(text).ok_or_else(|| {
                    err(p, format!("`{}` is not an address/prefix", excerpt(text)))
                })?,
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
                            format!("`{}` is not an address", excerpt(h)),
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
            let inner = Place {
                path: format!("{path}.members[{j}]"),
                parent: Some(&name),
                userspace: at.userspace || takes_nics_from_kernel(ty),
            };
            if let Some(member) = walk(m, &inner, nics, out, file)? {
                x.members.push(member);
            }
        }
    }
    out.interfaces.push(x);
    Ok(Some(name))
}

/// The bond an entry of an unmodelled type configures, when it is one whose
/// health preflight cannot read (see [`super::UnseenBond`]). os-net-config
/// writes a vrouter bond (`BOND_MODE`) for a `contrail_vrouter_dpdk` with
/// more than one member; one with `bond_mode` and a single member is taken
/// as a bond too, since its writer meant one and preflight cannot tell.
fn unseen_bond(
    ty: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    path: &str,
    members: Vec<String>,
) -> Option<super::UnseenBond> {
    let given = |key: &str| {
        obj.get(key)
            .map(|v| {
                v.as_str()
                    .map_or_else(|| quoted(v), |s| excerpt(s).into_owned())
            })
            .filter(|v| !v.is_empty())
            .map(|v| format!("{key} {v}"))
    };
    let mode = match ty {
        "contrail_vrouter_dpdk" => {
            let mode = given("bond_mode");
            if mode.is_none() && members.len() < 2 {
                return None;
            }
            mode
        }
        "vpp_bond" => given("bonding_options"),
        _ => return None,
    };
    Some(super::UnseenBond {
        name: excerpt(name).into_owned(),
        entry_type: ty.to_owned(),
        path: path.to_owned(),
        members,
        mode,
    })
}
