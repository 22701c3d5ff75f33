//! Reads NetworkManager keyfiles (`*.nmconnection`) into [`Expectations`]
//! the way NetworkManager does: one profile per file, the first of several
//! with one `connection.uuid` (files in precedence order) shadowing the
//! others, a port bound to its controller by interface name or UUID, an
//! Ethernet profile bound to a NIC by `interface-name` or
//! `ethernet.mac-address`. Finding the files (directories, mode 0600 owned
//! by root) is the agent's; this module reads their text, so it is tested
//! on plain values. Also NetworkManager's automatic DHCP profile for a NIC
//! without one ([`DhcpExposure`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use preflight_model::excerpt::excerpt;
use preflight_model::{BondMode, Snapshot};

use super::{ExpectError, Expectations, Expected, Kind, Unchecked};

mod exposure;
mod keyfile;

pub use exposure::DhcpExposure;

/// Most keyfiles and configuration files preflight reads.
pub const MAX_NM_FILES: usize = 1024;
/// Largest file preflight reads.
pub const MAX_NM_FILE_BYTES: usize = 64 * 1024;

/// One keyfile NetworkManager would load (mode and owner already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmKeyfile {
    /// Path (in messages).
    pub path: String,
    /// Its text.
    pub text: String,
}

type At<T> = (T, String);

#[derive(Debug, Default)]
struct Profile {
    path: String,
    uuid: String,
    ty: Option<At<String>>,
    ifname: Option<At<String>>,
    controller: Option<At<String>>,
    port_type: Option<At<String>>,
    autoconnect: Option<At<bool>>,
    mode: Option<At<BondMode>>,
    miimon: Option<At<u32>>,
    parent: Option<At<String>>,
    mtu: Option<At<u32>>,
    mac: Option<At<String>>,
    dhcp: bool,
    addresses: Vec<At<(IpAddr, u8)>>,
    gateways: Vec<At<IpAddr>>,
}

fn bad(e: &keyfile::Entry, reason: String) -> ExpectError {
    ExpectError {
        file: e.at.clone(),
        path: format!("[{}] {}", excerpt(&e.group), excerpt(&e.key)),
        reason,
    }
}

fn num<T: std::str::FromStr>(e: &keyfile::Entry, what: &str) -> Result<T, ExpectError> {
    e.value
        .parse()
        .map_err(|_| bad(e, format!("`{}` is not {what}", excerpt(&e.value))))
}

/// `ADDR/LEN` or `ADDR/LEN,GATEWAY` (`addressN=`).
fn address(e: &keyfile::Entry) -> Result<((IpAddr, u8), Option<IpAddr>), ExpectError> {
    let fail = || {
        bad(
            e,
            format!(
                "`{}` is not an address with a prefix length (`192.0.2.1/24`)",
                excerpt(&e.value)
            ),
        )
    };
    let (a, gw) = match e.value.split_once(',') {
        Some((a, g)) => (a, Some(g.trim().parse().map_err(|_| fail())?)),
        None => (e.value.as_str(), None),
    };
    let (ip, len) = a.trim().split_once('/').ok_or_else(fail)?;
    let ip: IpAddr = ip.parse().map_err(|_| fail())?;
    let len: u8 = len.parse().map_err(|_| fail())?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(fail());
    }
    Ok(((ip, len), gw))
}

fn profile(f: &NmKeyfile, unch: &mut Vec<Unchecked>) -> Result<Profile, ExpectError> {
    let mut p = Profile {
        path: f.path.clone(),
        uuid: f.path.clone(),
        ..Profile::default()
    };
    let skip = |e: &keyfile::Entry, unch: &mut Vec<Unchecked>, why: &str| {
        unch.push(Unchecked {
            at: e.at.clone(),
            what: format!(
                "[{}] {}={} {why}",
                excerpt(&e.group),
                excerpt(&e.key),
                excerpt(&e.value)
            ),
        });
    };
    for e in keyfile::parse(&f.path, &f.text)? {
        let at = || e.at.clone();
        match (e.group.as_str(), e.key.as_str()) {
            // Bookkeeping that does not change the network.
            ("connection", "id" | "timestamp" | "permissions") | ("proxy", _) => {}
            ("ipv6", "addr-gen-mode") => {}
            ("connection", "uuid") => p.uuid = e.value.clone(),
            ("connection", "type") => p.ty = Some((e.value.clone(), at())),
            ("connection", "interface-name") => p.ifname = Some((e.value.clone(), at())),
            ("connection", "master" | "controller") => {
                p.controller = Some((e.value.clone(), at()));
            }
            ("connection", "slave-type" | "port-type") => {
                p.port_type = Some((e.value.clone(), at()));
            }
            ("connection", "autoconnect") => {
                let v = match e.value.as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(bad(&e, format!("`{}` is not a boolean", excerpt(&e.value)))),
                };
                p.autoconnect = Some((v, at()));
            }
            ("bond", "mode") => {
                let m = BondMode::parse(&e.value).ok_or_else(|| {
                    bad(&e, format!("`{}` is not a bonding mode", excerpt(&e.value)))
                })?;
                p.mode = Some((m, at()));
            }
            ("bond", "miimon") => p.miimon = Some((num(&e, "a number of milliseconds")?, at())),
            ("vlan", "parent") => p.parent = Some((e.value.clone(), at())),
            ("vlan", "id") => skip(&e, unch, "(the VLAN id is not compared with the kernel's)"),
            ("ethernet" | "802-3-ethernet", "mtu") => {
                let m: u32 = num(&e, "an MTU")?;
                // 0: NetworkManager leaves the MTU as it is.
                if m != 0 {
                    p.mtu = Some((m, at()));
                }
            }
            ("ethernet" | "802-3-ethernet", "mac-address") => {
                p.mac = Some((e.value.to_ascii_lowercase(), at()));
            }
            ("ipv4" | "ipv6", "method") => match e.value.as_str() {
                "auto" | "dhcp" if e.group == "ipv4" => p.dhcp = true,
                "manual" | "disabled" | "ignore" | "auto" | "link-local" | "dhcp" => {}
                _ => skip(&e, unch, "is a method preflight does not check"),
            },
            ("ipv4" | "ipv6", k)
                if k == "address"
                    || k == "addresses"
                    || k.strip_prefix("address")
                        .is_some_and(|n| n.parse::<u32>().is_ok()) =>
            {
                let (a, gw) = address(&e)?;
                p.addresses.push((a, at()));
                if let Some(g) = gw {
                    p.gateways.push((g, at()));
                }
            }
            ("ipv4" | "ipv6", "gateway") => {
                let g = e.value.parse().map_err(|_| {
                    bad(&e, format!("`{}` is not an IP address", excerpt(&e.value)))
                })?;
                p.gateways.push((g, at()));
            }
            _ => skip(&e, unch, "is not checked"),
        }
    }
    Ok(p)
}

fn kind_of(ty: &str) -> Option<Kind> {
    Some(match ty {
        "ethernet" | "802-3-ethernet" => Kind::Interface,
        "bond" => Kind::LinuxBond,
        "vlan" => Kind::Vlan,
        "bridge" => Kind::LinuxBridge,
        _ => return None,
    })
}

/// Reads `keyfiles` (in precedence order: an earlier file shadows a later
/// one with its UUID) as expectations for the links of `snap`, and
/// `conf` (NetworkManager.conf, then its conf.d files, in reading order;
/// `conf_where` names them when none exists) for automatic DHCP.
///
/// # Errors
/// Too many or too large files, a syntax error or a value NetworkManager
/// would refuse, each naming `file:line`.
pub fn from_networkmanager(
    source: &str,
    keyfiles: &[NmKeyfile],
    conf: &[(String, String)],
    conf_where: &str,
    snap: &Snapshot,
) -> Result<Expectations, ExpectError> {
    let count = keyfiles.len() + conf.len();
    if count > MAX_NM_FILES {
        return Err(ExpectError {
            file: source.to_owned(),
            path: String::new(),
            reason: format!("{count} files, more than the {MAX_NM_FILES} preflight reads"),
        });
    }
    for (path, text) in keyfiles
        .iter()
        .map(|k| (&k.path, &k.text))
        .chain(conf.iter().map(|(p, t)| (p, t)))
    {
        if text.len() > MAX_NM_FILE_BYTES {
            return Err(ExpectError {
                file: path.clone(),
                path: String::new(),
                reason: format!(
                    "{} bytes, more than the {MAX_NM_FILE_BYTES} bytes preflight reads of a file",
                    text.len()
                ),
            });
        }
    }
    let mut unch = Vec::new();
    let mut profiles: Vec<Profile> = Vec::new();
    for f in keyfiles {
        let p = profile(f, &mut unch)?;
        if let Some(first) = profiles.iter().find(|q| q.uuid == p.uuid) {
            unch.push(Unchecked {
                at: format!("{}:1", p.path),
                what: format!(
                    "has the UUID of {}, which shadows it: NetworkManager does not load this one",
                    first.path
                ),
            });
            continue;
        }
        profiles.push(p);
    }
    let by_mac = |m: &str| {
        snap.interfaces
            .values()
            .find(|i| i.mac.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(m)))
            .map(|i| i.name.clone())
    };
    // The device each profile is for: interface-name, else the NIC with
    // its MAC, else (a MAC no NIC has) the MAC itself, so it is missing.
    let name_of = |p: &Profile| -> Option<At<String>> {
        p.ifname.clone().or_else(|| {
            p.mac
                .as_ref()
                .map(|(m, at)| (by_mac(m).unwrap_or_else(|| m.clone()), at.clone()))
        })
    };
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let mut ports: Vec<(String, At<String>)> = Vec::new();
    for p in &profiles {
        let Some((ty, tat)) = &p.ty else {
            return Err(ExpectError {
                file: format!("{}:1", p.path),
                path: "[connection] type".into(),
                reason: "missing: NetworkManager refuses a profile without a type".into(),
            });
        };
        let Some(kind) = kind_of(ty) else {
            unch.push(Unchecked {
                at: tat.clone(),
                what: format!("a `{}` profile: preflight does not check it", excerpt(ty)),
            });
            continue;
        };
        if let Some((false, at)) = &p.autoconnect {
            unch.push(Unchecked {
                at: at.clone(),
                what: "autoconnect=false: NetworkManager does not bring the profile up by itself, so what it configures is not checked".into(),
            });
            continue;
        }
        let Some((name, nat)) = name_of(p) else {
            unch.push(Unchecked {
                at: tat.clone(),
                what: format!("{} names no interface-name or mac-address: it may be activated on any device of its type, so what it configures is not checked", p.path),
            });
            continue;
        };
        if let Some(x) = out.get(&name) {
            unch.push(Unchecked {
                at: nat,
                what: format!("{name} also has the profile declared at {}: NetworkManager activates one of them (autoconnect-priority, last use), only that one is checked", x.at("", &x.name)),
            });
            continue;
        }
        let mut x = Expected {
            name: name.clone(),
            written_as: None,
            kind,
            parent: None,
            dhcp: p.dhcp,
            addresses: Vec::new(),
            default_route: None,
            mtu: p.mtu.as_ref().map(|(m, _)| *m),
            members: Vec::new(),
            bond_mode: p.mode.as_ref().map(|(m, _)| *m),
            bond_miimon: p.miimon.as_ref().map(|(m, _)| *m),
            declared_at: BTreeMap::new(),
        };
        x.declared_at.insert(String::new(), nat);
        for (k, v) in [
            ("mtu", &p.mtu.as_ref().map(|v| v.1.clone())),
            ("mode", &p.mode.as_ref().map(|v| v.1.clone())),
            ("miimon", &p.miimon.as_ref().map(|v| v.1.clone())),
        ] {
            if let Some(at) = v {
                x.declared_at.insert(k.into(), at.clone());
            }
        }
        for ((ip, len), at) in &p.addresses {
            x.addresses.push((*ip, *len));
            x.declared_at
                .insert(format!("address:{ip}/{len}"), at.clone());
        }
        let v4 = p
            .gateways
            .iter()
            .find(|(g, _)| g.is_ipv4())
            .or(p.gateways.first());
        if let Some((g, at)) = v4 {
            x.default_route = Some(Some(*g));
            x.declared_at.insert("route".into(), at.clone());
        }
        if kind == Kind::Vlan {
            match &p.parent {
                Some((par, _)) => {
                    let par = profiles
                        .iter()
                        .find(|q| &q.uuid == par)
                        .and_then(|q| name_of(q).map(|n| n.0))
                        .unwrap_or_else(|| par.clone());
                    x.parent = Some(par);
                }
                None => unch.push(Unchecked {
                    at: tat.clone(),
                    what: format!("VLAN {name} has no vlan.parent: its parent is not checked"),
                }),
            }
        }
        if let Some((c, at)) = &p.controller {
            let c = profiles
                .iter()
                .find(|q| &q.uuid == c)
                .and_then(|q| name_of(q).map(|n| n.0))
                .unwrap_or_else(|| c.clone());
            ports.push((name.clone(), (c, at.clone())));
        }
        out.insert(name, x);
    }
    for (port, (c, at)) in ports {
        match out.get_mut(&c) {
            Some(b) if b.kind == Kind::LinuxBond => {
                b.members.push(port.clone());
                b.declared_at.insert(format!("member:{port}"), at);
            }
            Some(b) if b.kind == Kind::LinuxBridge => {}
            _ => unch.push(Unchecked {
                at,
                what: format!("{port}'s controller {c} is no bond or bridge profile NetworkManager loads: not checked"),
            }),
        }
    }
    let nad = exposure::no_auto_default(conf)?;
    let covered = |i: &preflight_model::Interface| {
        profiles.iter().any(|p| {
            p.ty.as_ref()
                .is_some_and(|(t, _)| kind_of(t) == Some(Kind::Interface))
                && p.ifname.as_ref().is_none_or(|(n, _)| *n == i.name)
                && p.mac.as_ref().is_none_or(|(m, _)| {
                    i.mac.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(m))
                })
        })
    };
    let dhcp_exposure = exposure::exposures(snap, &nad, conf_where, covered, &mut unch);
    Ok(Expectations {
        source: source.to_owned(),
        interfaces: out.into_values().collect(),
        unchecked: unch,
        dhcp_exposure,
        ..Expectations::default()
    })
}

#[cfg(test)]
#[path = "tests/networkmanager.rs"]
mod tests;
