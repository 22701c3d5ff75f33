//! The stanzas of one interfaces(5) file: `auto`/`allow-*` lines, `iface`
//! stanzas and their options, merged per interface name across stanzas
//! and files (an `inet` and an `inet6` stanza for one name, ifupdown2's
//! repeated stanzas).

use std::collections::BTreeMap;
use std::net::IpAddr;

use preflight_model::excerpt::excerpt;
use preflight_model::BondMode;

use super::super::{ExpectError, Unchecked};
use super::err;

/// A value with where it was written.
pub(super) type At<T> = (T, String);

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// One logical line with its position.
pub(super) struct Line {
    pub at: String,
    pub text: String,
}

/// What the stanzas of one interface declare.
#[derive(Debug, Default)]
pub(super) struct Decl {
    /// `file:line` of its first `iface` line.
    pub at: String,
    pub loopback: bool,
    pub dhcp: bool,
    pub addresses: Vec<At<(IpAddr, u8)>>,
    pub gateways: Vec<At<IpAddr>>,
    pub mtu: Option<At<u32>>,
    /// `bond-slaves` / `bond-members` / `slaves` (`none`: empty).
    pub members: Option<At<Vec<String>>>,
    /// `bond-master` on a member's stanza.
    pub master: Option<At<String>>,
    pub mode: Option<At<BondMode>>,
    pub miimon: Option<At<u32>>,
    pub vlan_raw: Option<At<String>>,
}

impl Decl {
    /// Whether the stanza makes a bond.
    pub fn is_bond(&self) -> bool {
        self.members.is_some() || self.mode.is_some() || self.miimon.is_some()
    }
}

/// Whether `name` is a VLAN by ifupdown's naming: `NAME.VID`.
pub(super) fn dotted_vlan(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(dev, id)| {
        !dev.is_empty() && id.parse::<u16>().is_ok_and(|v| (1..=4094).contains(&v))
    })
}

fn ifname(v: &str, at: &str, what: &str) -> Result<String, ExpectError> {
    if v.is_empty() || v.len() > MAX_IFNAME || v.contains(['/', ':']) || v == "." || v == ".." {
        return Err(err(
            at.to_owned(),
            what,
            format!(
                "`{}` is not an interface name (1-{MAX_IFNAME} bytes, no `/` or `:`)",
                excerpt(v)
            ),
        ));
    }
    Ok(v.to_owned())
}

fn number(
    v: &str,
    at: &str,
    what: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ExpectError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            err(
                at.to_owned(),
                what,
                format!(
                    "`{}` is not a number from {} to {}",
                    excerpt(v),
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A netmask as ifupdown takes it: dotted quad or a prefix length.
fn netmask(v: &str, at: &str, max: u8) -> Result<u8, ExpectError> {
    let fail = || {
        err(
            at.to_owned(),
            "netmask",
            format!("`{}` is not a netmask (255.255.255.0 or 24)", excerpt(v)),
        )
    };
    if let Ok(n) = v.parse::<u8>() {
        return (n <= max).then_some(n).ok_or_else(fail);
    }
    let m: std::net::Ipv4Addr = v.parse().map_err(|_| fail())?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(fail());
    }
    u8::try_from(bits.leading_ones()).map_err(|_| fail())
}

/// The stanza option lines are being read for.
enum Current {
    None,
    /// A `mapping` stanza: its lines are the mapping's (unchecked with it).
    Mapping,
    /// An `iface` stanza: the name, whether inet6, and addresses without a
    /// prefix waiting for a `netmask` line.
    Iface(String, bool, Vec<At<IpAddr>>, Option<u8>),
}

/// Ends a stanza: its addresses without prefix take the stanza's netmask.
fn close(cur: &mut Current, decls: &mut BTreeMap<String, Decl>, unch: &mut Vec<Unchecked>) {
    if let Current::Iface(name, _, bare, mask) = std::mem::replace(cur, Current::None) {
        let d = decls.entry(name.clone()).or_default();
        for (ip, at) in bare {
            match mask {
                Some(len) => d.addresses.push(((ip, len), at)),
                None => unch.push(Unchecked {
                    at,
                    what: format!("address {ip} on {} has no prefix length and its stanza no netmask: not checked", excerpt(&name)),
                }),
            }
        }
    }
}

/// Reads the lines of one file, adding to `auto` and `decls`.
#[allow(clippy::too_many_lines)] // one match over ifupdown's keywords
pub(super) fn read(
    lines: &[Line],
    auto: &mut BTreeMap<String, String>,
    decls: &mut BTreeMap<String, Decl>,
    unch: &mut Vec<Unchecked>,
) -> Result<(), ExpectError> {
    let mut cur = Current::None;
    for l in lines {
        let mut w = l.text.split_whitespace();
        let Some(key) = w.next() else { continue };
        let args: Vec<&str> = w.collect();
        let at = l.at.as_str();
        let un = |unch: &mut Vec<Unchecked>, why: &str| {
            unch.push(Unchecked {
                at: at.to_owned(),
                what: format!("`{}` {why}", excerpt(&l.text)),
            });
        };
        match key {
            "auto" | "allow-auto" | "allow-hotplug" => {
                close(&mut cur, decls, unch);
                for a in &args {
                    let n = ifname(a, at, key)?;
                    auto.entry(n).or_insert_with(|| at.to_owned());
                }
            }
            "iface" => {
                close(&mut cur, decls, unch);
                let Some(name) = args.first() else {
                    return Err(err(at.to_owned(), "iface", "names no interface".to_owned()));
                };
                let name = ifname(name, at, "iface")?;
                // ifupdown2 takes a bare `iface NAME`; ifupdown wants both.
                let family = args.get(1).copied().unwrap_or("inet");
                let method = args.get(2).copied().unwrap_or("manual");
                let d = decls.entry(name.clone()).or_default();
                if d.at.is_empty() {
                    d.at = at.to_owned();
                }
                let inet6 = match family {
                    "inet" => false,
                    "inet6" => true,
                    _ => {
                        un(unch, "is an address family preflight does not check");
                        cur = Current::Mapping;
                        continue;
                    }
                };
                match method {
                    "static" | "manual" => {}
                    "loopback" => d.loopback = true,
                    "dhcp" if !inet6 => d.dhcp = true,
                    "dhcp" | "auto" if inet6 => {
                        un(
                            unch,
                            "is configured from the network (DHCPv6/SLAAC): not checked",
                        );
                    }
                    _ => un(unch, "is a method preflight does not check"),
                }
                if args.len() > 3 {
                    un(
                        unch,
                        "has words after the method (`inherits`) preflight does not follow",
                    );
                }
                cur = Current::Iface(name, inet6, Vec::new(), None);
            }
            "mapping" => {
                close(&mut cur, decls, unch);
                un(
                    unch,
                    "is a mapping: which stanza applies is decided by its script, not checked",
                );
                cur = Current::Mapping;
            }
            "rename" => {
                close(&mut cur, decls, unch);
                un(unch, "renames interfaces: not checked");
            }
            "source" | "source-directory" => {
                // Followed by the agent, which hands over the files.
                close(&mut cur, decls, unch);
            }
            "no-auto-down" | "no-scripts" => close(&mut cur, decls, unch),
            k if k.starts_with("allow-") => {
                close(&mut cur, decls, unch);
                un(
                    unch,
                    "is brought up by another subsystem, not ifup -a: not checked",
                );
            }
            _ => {
                let Current::Iface(name, inet6, bare, mask) = &mut cur else {
                    if matches!(cur, Current::Mapping) {
                        continue;
                    }
                    return Err(err(
                        at.to_owned(),
                        key,
                        format!("option `{}` outside an iface stanza", excerpt(key)),
                    ));
                };
                let d = decls.entry(name.clone()).or_default();
                let one = |what: &str| -> Result<&str, ExpectError> {
                    match args.as_slice() {
                        [v] => Ok(v),
                        _ => Err(err(at.to_owned(), what, "takes one value".to_owned())),
                    }
                };
                match key {
                    "address" => {
                        for a in &args {
                            let fail = || {
                                err(
                                    at.to_owned(),
                                    "address",
                                    format!("`{}` is not an IP address (10.0.0.5/24)", excerpt(a)),
                                )
                            };
                            let (ip, len) = match a.split_once('/') {
                                Some((ip, len)) => (ip, Some(len)),
                                None => (*a, None),
                            };
                            let ip: IpAddr = ip.parse().map_err(|_| fail())?;
                            if ip.is_ipv6() != *inet6 {
                                return Err(err(
                                    at.to_owned(),
                                    "address",
                                    format!(
                                        "{ip} in an {} stanza",
                                        if *inet6 { "inet6" } else { "inet" }
                                    ),
                                ));
                            }
                            let max = if ip.is_ipv4() { 32 } else { 128 };
                            match len {
                                Some(len) => {
                                    let len = len
                                        .parse::<u8>()
                                        .ok()
                                        .filter(|l| *l <= max)
                                        .ok_or_else(fail)?;
                                    d.addresses.push(((ip, len), at.to_owned()));
                                }
                                None => bare.push((ip, at.to_owned())),
                            }
                        }
                    }
                    "netmask" => {
                        *mask = Some(netmask(one("netmask")?, at, if *inet6 { 128 } else { 32 })?);
                    }
                    "gateway" => {
                        let g: IpAddr = one("gateway")?.parse().map_err(|_| {
                            err(
                                at.to_owned(),
                                "gateway",
                                format!("`{}` is not an IP address", excerpt(&args.join(" "))),
                            )
                        })?;
                        d.gateways.push((g, at.to_owned()));
                    }
                    "mtu" => {
                        d.mtu = Some((number(one("mtu")?, at, "mtu", 68..=65_536)?, at.to_owned()))
                    }
                    "bond-slaves" | "bond-members" | "slaves" | "bond-ports" => {
                        if args.first().is_some_and(|a| matches!(*a, "glob" | "regex")) {
                            un(
                                unch,
                                "selects members by pattern (ifupdown2): members not checked",
                            );
                            continue;
                        }
                        let list = if args == ["none"] {
                            Vec::new()
                        } else {
                            args.iter()
                                .map(|a| ifname(a, at, key))
                                .collect::<Result<_, _>>()?
                        };
                        d.members = Some((list, at.to_owned()));
                    }
                    "bond-master" => d.master = Some((ifname(one(key)?, at, key)?, at.to_owned())),
                    "bond-mode" => d.mode = Some((super::bond_mode(one(key)?, at)?, at.to_owned())),
                    "bond-miimon" => {
                        d.miimon = Some((number(one(key)?, at, key, 0..=u32::MAX)?, at.to_owned()))
                    }
                    "bond-primary" => un(
                        unch,
                        "is not checked: preflight does not compare the bond's primary member",
                    ),
                    "vlan-raw-device" | "vlan_raw_device" => {
                        d.vlan_raw = Some((ifname(one(key)?, at, key)?, at.to_owned()));
                        un(unch, "is not checked: only that the VLAN exists is");
                    }
                    "vlan-id" => un(unch, "is not checked: only that the VLAN exists is"),
                    "up" | "post-up" | "pre-up" | "down" | "pre-down" | "post-down" => {
                        un(unch, "runs a command: what it does is not checked");
                    }
                    "description" => {}
                    _ => un(unch, "is not checked"),
                }
            }
        }
    }
    close(&mut cur, decls, unch);
    Ok(())
}
