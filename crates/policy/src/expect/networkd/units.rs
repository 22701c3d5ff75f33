//! The typed contents of `.netdev` and `.network` files: the keys preflight
//! checks, with the `file:line` of each; every other key becomes an
//! [`Unchecked`] naming where it is, never a silent pass.

use std::net::IpAddr;

use preflight_model::excerpt::excerpt;
use preflight_model::BondMode;

use super::super::{ExpectError, Unchecked};
use super::ini::{Entry, Section};

/// A value with where it was written.
pub(super) type At<T> = (T, String);

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
pub(super) const MAX_IFNAME: usize = 15;

/// A `.netdev`.
#[derive(Debug, Default)]
pub(super) struct Netdev {
    pub name: Option<At<String>>,
    pub kind: Option<At<String>>,
    pub mtu: Option<At<u32>>,
    pub mode: Option<At<BondMode>>,
    pub miimon: Option<At<u32>>,
}

/// A `.network`.
#[derive(Debug, Default)]
pub(super) struct Network {
    /// `file` (for messages when nothing else has a line).
    pub file: String,
    /// `[Match] Name=` patterns, whether negated, and the line.
    pub names: Option<(Vec<String>, bool, String)>,
    /// `[Match] MACAddress=`, lower case.
    pub macs: Option<At<Vec<String>>>,
    /// The first `[Match]` key preflight cannot evaluate.
    pub unsupported_match: Option<At<String>>,
    /// Whether any `[Match]` key was given at all.
    pub has_match: bool,
    pub bond: Option<At<String>>,
    pub vlans: Vec<At<String>>,
    pub addresses: Vec<At<(IpAddr, u8)>>,
    /// Default gateways (`Gateway=`, `[Route]` without a destination).
    pub gateways: Vec<At<IpAddr>>,
    pub dhcp: bool,
    pub mtu: Option<At<u32>>,
}

fn bad(e: &Entry, sec: &str, reason: String) -> ExpectError {
    ExpectError {
        file: e.at.clone(),
        path: format!("[{sec}] {}", excerpt(&e.key)),
        reason,
    }
}

fn unchecked(e: &Entry, sec: &str, why: &str) -> Unchecked {
    Unchecked {
        at: e.at.clone(),
        what: format!("[{sec}] {}={} {why}", excerpt(&e.key), excerpt(&e.value)),
    }
}

fn ifname(e: &Entry, sec: &str) -> Result<String, ExpectError> {
    let v = &e.value;
    if v.is_empty() || v.len() > MAX_IFNAME || v.contains(['/', ' ', ':']) || v == "." || v == ".."
    {
        return Err(bad(
            e,
            sec,
            format!(
                "`{}` is not an interface name (1-{MAX_IFNAME} bytes, no `/`, `:` or space)",
                excerpt(v)
            ),
        ));
    }
    Ok(v.clone())
}

/// `MTUBytes=`: bytes with an optional K, M or G (1024-based) suffix.
fn mtu(e: &Entry, sec: &str) -> Result<u32, ExpectError> {
    let v = e.value.trim();
    let (num, mul) = match v.char_indices().last() {
        Some((i, 'K' | 'k')) => (&v[..i], 1024),
        Some((i, 'M' | 'm')) => (&v[..i], 1024 * 1024),
        Some((i, 'G' | 'g')) => (&v[..i], 1024 * 1024 * 1024),
        Some((i, 'B' | 'b')) => (&v[..i], 1),
        _ => (v, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (68..=65_536).contains(n))
        .ok_or_else(|| {
            bad(
                e,
                sec,
                format!("`{}` is not an MTU (68-65536 bytes)", excerpt(v)),
            )
        })
}

/// A systemd time span in milliseconds (`100ms`, `1s`, `1s 500ms`; a bare
/// number is seconds).
fn millis(e: &Entry, sec: &str) -> Result<u32, ExpectError> {
    let fail = || {
        bad(
            e,
            sec,
            format!("`{}` is not a time span (`100ms`, `1s`)", excerpt(&e.value)),
        )
    };
    let mut total: u64 = 0;
    let mut rest = e.value.trim();
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(rest.len());
        let per_ms: (u64, u64) = match &rest[..unit_len] {
            "" | "s" | "sec" | "second" | "seconds" => (1000, 1),
            "ms" | "msec" => (1, 1),
            "us" | "usec" | "µs" => (1, 1000),
            "m" | "min" | "minute" | "minutes" => (60_000, 1),
            _ => return Err(fail()),
        };
        total = n
            .checked_mul(per_ms.0)
            .map(|v| v / per_ms.1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(fail)?;
        rest = rest[unit_len..].trim_start();
    }
    u32::try_from(total).map_err(|_| fail())
}

fn cidr(e: &Entry, sec: &str) -> Result<(IpAddr, u8), ExpectError> {
    let fail = || {
        bad(
            e,
            sec,
            format!(
                "`{}` is not an address with prefix length (10.0.0.5/24)",
                excerpt(&e.value)
            ),
        )
    };
    let (ip, len) = e.value.split_once('/').ok_or_else(fail)?;
    let ip: IpAddr = ip.trim().parse().map_err(|_| fail())?;
    let len: u8 = len.trim().parse().map_err(|_| fail())?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(fail());
    }
    Ok((ip, len))
}

/// Whether preflight reads section `s`; one it does not is listed once,
/// at its header (`X-` sections are for other tools: skipped, as networkd
/// skips them).
fn known_section(s: &Section, known: &[&str], unch: &mut Vec<Unchecked>) -> bool {
    if known.contains(&s.name.as_str()) {
        return true;
    }
    if !s.name.starts_with("X-") {
        unch.push(Unchecked {
            at: s.at.clone(),
            what: format!(
                "[{}] ({} keys) is not checked",
                excerpt(&s.name),
                s.entries.len()
            ),
        });
    }
    false
}

/// Reads a `.netdev`'s sections.
pub(super) fn netdev(secs: &[Section], unch: &mut Vec<Unchecked>) -> Result<Netdev, ExpectError> {
    let mut n = Netdev::default();
    for s in secs {
        let sec = s.name.as_str();
        if !known_section(s, &["Match", "NetDev", "Bond", "VLAN"], unch) {
            continue;
        }
        for e in &s.entries {
            let at = e.at.clone();
            match (sec, e.key.as_str()) {
                ("NetDev", "Name") => n.name = Some((ifname(e, sec)?, at)),
                ("NetDev", "Kind") => n.kind = Some((e.value.clone(), at)),
                ("NetDev", "MTUBytes") => n.mtu = Some((mtu(e, sec)?, at)),
                ("NetDev", "Description") => {}
                ("Bond", "Mode") => {
                    let m = BondMode::parse(&e.value).ok_or_else(|| {
                        bad(e, sec, format!("`{}` is not a bonding mode (balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb)", excerpt(&e.value)))
                    })?;
                    n.mode = Some((m, at));
                }
                ("Bond", "MIIMonitorSec") => n.miimon = Some((millis(e, sec)?, at)),
                ("Match", _) => unch.push(unchecked(
                    e,
                    sec,
                    "is a condition preflight does not evaluate: the device is expected regardless",
                )),
                (s, _) if s.starts_with("X-") => {}
                _ => unch.push(unchecked(e, sec, "is not checked")),
            }
        }
    }
    Ok(n)
}

/// Reads a `.network`'s sections.
pub(super) fn network(
    file: &str,
    secs: &[Section],
    unch: &mut Vec<Unchecked>,
) -> Result<Network, ExpectError> {
    let mut n = Network {
        file: file.to_owned(),
        ..Network::default()
    };
    for s in secs {
        let sec = s.name.as_str();
        if !known_section(s, &["Match", "Network", "Address", "Route", "Link"], unch) {
            continue;
        }
        // A `[Route]` is a default route only without a destination.
        let mut route_gw: Option<At<IpAddr>> = None;
        let mut route_default = true;
        for e in &s.entries {
            let at = e.at.clone();
            match (sec, e.key.as_str()) {
                ("Match", "Name") => {
                    n.has_match = true;
                    let mut v = e.value.as_str();
                    let neg = v.starts_with('!');
                    v = v.trim_start_matches('!');
                    let mut pats: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    // An empty assignment resets the list; later ones add.
                    if let Some((old, _, _)) = n.names.take().filter(|_| !pats.is_empty()) {
                        let mut all = old;
                        all.append(&mut pats);
                        pats = all;
                    }
                    n.names = (!pats.is_empty()).then_some((pats, neg, at));
                }
                ("Match", "MACAddress") => {
                    n.has_match = true;
                    let macs: Vec<String> = e
                        .value
                        .split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect();
                    if let Some(m) = macs.iter().find(|m| !super::super::valid_mac(m)) {
                        return Err(bad(
                            e,
                            sec,
                            format!("`{}` is not a MAC address", excerpt(m)),
                        ));
                    }
                    n.macs = Some((macs, at));
                }
                ("Match", _) => {
                    n.has_match = true;
                    n.unsupported_match
                        .get_or_insert((format!("[Match] {}", excerpt(&e.key)), at));
                }
                ("Network", "Bond") => n.bond = Some((ifname(e, sec)?, at)),
                ("Network", "VLAN") => n.vlans.push((ifname(e, sec)?, at)),
                ("Network" | "Address", "Address") => n.addresses.push((cidr(e, sec)?, at)),
                ("Network", "Gateway") | ("Route", "Gateway") if e.value.starts_with('_') => {
                    // `_dhcp4`, `_ipv6ra`: the gateway comes from the network.
                    unch.push(unchecked(
                        e,
                        sec,
                        "comes from DHCP or RA, not from the file",
                    ));
                }
                ("Network", "Gateway") => n.gateways.push((
                    e.value.parse().map_err(|_| {
                        bad(
                            e,
                            sec,
                            format!("`{}` is not an IP address", excerpt(&e.value)),
                        )
                    })?,
                    at,
                )),
                ("Route", "Gateway") => {
                    route_gw = Some((
                        e.value.parse().map_err(|_| {
                            bad(
                                e,
                                sec,
                                format!("`{}` is not an IP address", excerpt(&e.value)),
                            )
                        })?,
                        at,
                    ));
                }
                ("Route", "Destination") => {
                    route_default = matches!(e.value.as_str(), "0.0.0.0/0" | "::/0" | "");
                    if !route_default {
                        unch.push(unchecked(
                            e,
                            sec,
                            "is a route other than the default: only the default route is checked",
                        ));
                    }
                }
                ("Network", "DHCP") => {
                    n.dhcp = matches!(
                        e.value.as_str(),
                        "yes" | "true" | "on" | "1" | "ipv4" | "both"
                    );
                }
                ("Link", "MTUBytes") => n.mtu = Some((mtu(e, sec)?, at)),
                ("Network", "Description") => {}
                (s, _) if s.starts_with("X-") => {}
                _ => unch.push(unchecked(e, sec, "is not checked")),
            }
        }
        if let Some(g) = route_gw.filter(|_| route_default) {
            n.gateways.push(g);
        }
    }
    Ok(n)
}
