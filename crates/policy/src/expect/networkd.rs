//! Reads systemd-networkd's `.netdev` and `.network` files into
//! [`Expectations`], resolving `[Match]` against the node's links the way
//! networkd does: for each link the first `.network` in lexical file order
//! whose every match key holds. Finding the files (search path, precedence,
//! masking, drop-ins) is the agent's; this module only reads their text, so
//! it is tested on plain values.
//!
//! What networkd would do but preflight cannot tell (a `[Match]` on
//! `Path=` or `Driver=`, a key it does not model) is an [`Unchecked`]
//! naming `file:line` (EXPECTATION_UNCHECKED), never a silent pass.

use std::collections::BTreeMap;

use preflight_model::excerpt::excerpt;
use preflight_model::Snapshot;

use super::{common, ExpectError, Expectations, Expected, Kind, Unchecked};

mod ini;
mod units;

use units::{Netdev, Network};

/// Most files (main files and drop-ins together) preflight reads.
pub const MAX_NETWORKD_FILES: usize = 1024;
/// Largest file preflight reads.
pub const MAX_NETWORKD_FILE_BYTES: usize = 64 * 1024;

/// One unit file networkd would read, after precedence and masking, with
/// its drop-ins in the order networkd applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkdFile {
    /// Path (in messages).
    pub path: String,
    /// Its text.
    pub text: String,
    /// `NAME.d/*.conf` drop-ins: (path, text), in lexical order of name.
    pub dropins: Vec<(String, String)>,
}

/// A link networkd could configure: one the kernel has, or one the files
/// name (a `.netdev`, an exact `Name=`).
struct Link {
    name: String,
    mac: Option<String>,
}

fn matches(n: &Network, l: &Link) -> bool {
    let name_ok = n
        .names
        .as_ref()
        .is_none_or(|(pats, neg, _)| pats.iter().any(|p| ini::glob(p, &l.name)) != *neg);
    let mac_ok = n.macs.as_ref().is_none_or(|(macs, _)| {
        l.mac
            .as_ref()
            .is_some_and(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(m)))
    });
    name_ok && mac_ok
}

fn kind_of(k: &str) -> Option<Kind> {
    Some(match k {
        "bond" => Kind::LinuxBond,
        "vlan" => Kind::Vlan,
        "bridge" => Kind::LinuxBridge,
        _ => return None,
    })
}

/// Reads `files` (already in networkd's order) as expectations for the
/// links of `snap`; `source` names where they came from.
///
/// # Errors
/// Too many or too large files, a syntax error or a value networkd would
/// refuse, each naming `file:line`.
pub fn from_networkd(
    source: &str,
    files: &[NetworkdFile],
    snap: &Snapshot,
) -> Result<Expectations, ExpectError> {
    let count: usize = files.iter().map(|f| 1 + f.dropins.len()).sum();
    if count > MAX_NETWORKD_FILES {
        return Err(ExpectError {
            file: source.to_owned(),
            path: String::new(),
            reason: format!("{count} files, more than the {MAX_NETWORKD_FILES} preflight reads"),
        });
    }
    let mut unch: Vec<Unchecked> = Vec::new();
    let mut netdevs: BTreeMap<String, Netdev> = BTreeMap::new();
    let mut networks: Vec<Network> = Vec::new();
    for f in files {
        let mut secs = Vec::new();
        for (path, text) in
            std::iter::once((&f.path, &f.text)).chain(f.dropins.iter().map(|(p, t)| (p, t)))
        {
            if text.len() > MAX_NETWORKD_FILE_BYTES {
                return Err(ExpectError {
                    file: path.clone(),
                    path: String::new(),
                    reason: format!(
                        "{} bytes, more than the {MAX_NETWORKD_FILE_BYTES} bytes preflight reads of a file",
                        text.len()
                    ),
                });
            }
            ini::parse(path, text, &mut secs)?;
        }
        if f.path.ends_with(".netdev") {
            let d = units::netdev(&secs, &mut unch)?;
            let missing = |what: &str| ExpectError {
                file: f.path.clone(),
                path: format!("[NetDev] {what}"),
                reason: "missing: networkd ignores a .netdev without it".to_owned(),
            };
            let (name, at) = d.name.clone().ok_or_else(|| missing("Name"))?;
            let (kind, kat) = d.kind.as_ref().ok_or_else(|| missing("Kind"))?;
            if kind_of(kind).is_none() {
                unch.push(Unchecked {
                    at: kat.clone(),
                    what: format!(
                        "{name} is a `{}` netdev: only its existence is checked",
                        excerpt(kind)
                    ),
                });
            }
            if netdevs.contains_key(&name) {
                unch.push(Unchecked {
                    at,
                    what: format!("{name} is already declared by an earlier .netdev; networkd ignores this one"),
                });
                continue;
            }
            netdevs.insert(name, d);
        } else if f.path.ends_with(".network") {
            let n = units::network(&f.path, &secs, &mut unch)?;
            if !n.has_match {
                // networkd refuses such a file ("add Name=* to match all").
                unch.push(Unchecked {
                    at: format!("{}:1", f.path),
                    what: "has no [Match] keys: networkd ignores the file".to_owned(),
                });
                continue;
            }
            networks.push(n);
        } else {
            unch.push(Unchecked {
                at: format!("{}:1", f.path),
                what: "is neither a .netdev nor a .network: not read".to_owned(),
            });
        }
    }
    // Every link networkd could configure.
    let mut links: Vec<Link> = snap
        .interfaces
        .values()
        .map(|i| Link {
            name: i.name.clone(),
            mac: i.mac.as_ref().map(|m| m.to_ascii_lowercase()),
        })
        .collect();
    let named = netdevs.keys().cloned().chain(networks.iter().flat_map(|n| {
        n.names
            .iter()
            .filter(|(_, neg, _)| !neg)
            .flat_map(|(p, _, _)| p.iter().filter(|p| !ini::is_glob(p)).cloned())
    }));
    for name in named.collect::<Vec<_>>() {
        if !links.iter().any(|l| l.name == name) {
            links.push(Link { name, mac: None });
        }
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    // The .network each link gets: the first that surely matches. One
    // whose match preflight cannot evaluate, met first, is unchecked.
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for l in &links {
        for (i, n) in networks.iter().enumerate() {
            if !matches(n, l) {
                continue;
            }
            if let Some((key, at)) = &n.unsupported_match {
                unch.push(Unchecked {
                    at: at.clone(),
                    what: format!("{key} decides whether {} applies to {}: preflight cannot evaluate it, so what it configures on {} is not checked", n.file, l.name, l.name),
                });
                break;
            }
            applied.insert(l.name.clone(), i);
            break;
        }
    }
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    // Bonds and bridges exist whether or not a .network names them.
    for (name, d) in &netdevs {
        let Some(kind) = d.kind.as_ref().and_then(|(k, _)| kind_of(k)) else {
            continue;
        };
        if kind == Kind::Vlan {
            continue; // created only on a link whose .network has VLAN=
        }
        out.insert(name.clone(), netdev_expected(common::blank(name, kind), d));
    }
    for (link, &i) in &applied {
        let n = &networks[i];
        let mut x = out.remove(link).unwrap_or_else(|| {
            if let Some(d) = netdevs.get(link) {
                let k = d.kind.as_ref().and_then(|(k, _)| kind_of(k));
                return netdev_expected(common::blank(link, k.unwrap_or(Kind::Interface)), d);
            }
            let mut x = common::blank(link, Kind::Interface);
            if let Some((_, _, at)) = &n.names {
                x.declared_at.insert(String::new(), at.clone());
            } else if let Some((_, at)) = &n.macs {
                x.declared_at.insert(String::new(), at.clone());
            }
            x
        });
        x.dhcp = n.dhcp;
        common::add_addresses_and_gateway(&mut x, &n.addresses, &n.gateways, &mut unch, |g| {
            format!("a second default gateway ({g}) on {link}: only the first is checked")
        });
        if let Some((m, at)) = &n.mtu {
            x.mtu = Some(*m);
            x.declared_at.insert("mtu".into(), at.clone());
        }
        for (v, at) in &n.vlans {
            match netdevs
                .get(v)
                .filter(|d| d.kind.as_ref().is_some_and(|(k, _)| k == "vlan"))
            {
                Some(d) => {
                    let y = netdev_expected(common::blank(v, Kind::Vlan), d);
                    out.entry(v.clone()).or_insert(y);
                }
                None => unch.push(Unchecked {
                    at: at.clone(),
                    what: format!("VLAN={v} names no vlan .netdev: networkd creates nothing"),
                }),
            }
        }
        if let Some((b, at)) = &n.bond {
            match out.get_mut(b).filter(|e| e.kind == Kind::LinuxBond) {
                Some(bond) => {
                    bond.members.push(link.clone());
                    bond.declared_at
                        .insert(format!("member:{link}"), at.clone());
                }
                None => unch.push(Unchecked {
                    at: at.clone(),
                    what: format!(
                        "Bond={b} names no bond .netdev: networkd enslaves {link} to nothing"
                    ),
                }),
            }
        }
        out.insert(link.clone(), x);
    }
    for (name, d) in &netdevs {
        let vlan = d.kind.as_ref().is_some_and(|(k, _)| k == "vlan");
        if vlan && !out.contains_key(name) {
            if let Some((_, at)) = &d.name {
                unch.push(Unchecked {
                    at: at.clone(),
                    what: format!("VLAN {name} is declared but no .network that applies to a link names it with VLAN=: networkd does not create it"),
                });
            }
        }
    }
    Ok(Expectations {
        source: source.to_owned(),
        interfaces: out.into_values().collect(),
        unchecked: unch,
        ..Expectations::default()
    })
}

fn netdev_expected(mut x: Expected, d: &Netdev) -> Expected {
    if let Some((_, at)) = &d.name {
        x.declared_at.insert(String::new(), at.clone());
    }
    common::add_bond_settings(&mut x, d.mtu.as_ref(), d.mode.as_ref(), d.miimon.as_ref());
    x
}

#[cfg(test)]
#[path = "tests/networkd.rs"]
mod tests;
