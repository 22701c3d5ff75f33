//! Helpers the per-stack readers (networkd, ifupdown, netplan,
//! NetworkManager) share, so that a bound or a rule is written once and the
//! stacks cannot drift apart on it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use preflight_model::BondMode;

use super::{ExpectError, Expected, Kind, Unchecked};

/// Longest line preflight reads of a key-file or unit file: far above any
/// real assignment.
pub(super) const MAX_LINE_BYTES: usize = 4096;

/// An error naming `file:line`, what on it is wrong, and why.
pub(super) fn err(file: &str, line: usize, what: &str, reason: String) -> ExpectError {
    ExpectError {
        file: format!("{file}:{line}"),
        path: what.to_owned(),
        reason,
    }
}

/// Refuses line `n` of `file` when it is over [`MAX_LINE_BYTES`].
pub(super) fn check_line_len(file: &str, n: usize, raw: &str) -> Result<(), ExpectError> {
    if raw.len() > MAX_LINE_BYTES {
        return Err(err(
            file,
            n,
            "line",
            format!(
                "{} bytes, more than the {MAX_LINE_BYTES} bytes preflight reads of a line",
                raw.len()
            ),
        ));
    }
    Ok(())
}

/// An expected `name` of `kind` with nothing declared on it yet.
pub(super) fn blank(name: &str, kind: Kind) -> Expected {
    Expected {
        name: name.to_owned(),
        written_as: None,
        kind,
        parent: None,
        dhcp: false,
        addresses: Vec::new(),
        default_route: None,
        mtu: None,
        members: Vec::new(),
        bond_mode: None,
        bond_miimon: None,
        declared_at: BTreeMap::new(),
    }
}

/// Adds the declared `addresses` and the default route to `x`, each with
/// where it was declared. Only one default route is checked (the first IPv4
/// gateway, else the first); each other gateway is reported in `unch` with
/// the text `second` gives it.
pub(super) fn add_addresses_and_gateway(
    x: &mut Expected,
    addresses: &[((IpAddr, u8), String)],
    gateways: &[(IpAddr, String)],
    unch: &mut Vec<Unchecked>,
    second: impl Fn(&IpAddr) -> String,
) {
    for ((ip, len), at) in addresses {
        x.addresses.push((*ip, *len));
        x.declared_at
            .insert(format!("address:{ip}/{len}"), at.clone());
    }
    let v4 = gateways
        .iter()
        .find(|(g, _)| g.is_ipv4())
        .or_else(|| gateways.first());
    if let Some((g, at)) = v4 {
        x.default_route = Some(Some(*g));
        x.declared_at.insert("route".into(), at.clone());
    }
    for (g, at) in gateways.iter().filter(|(g, _)| Some(g) != v4.map(|v| &v.0)) {
        unch.push(Unchecked {
            at: at.clone(),
            what: second(g),
        });
    }
}

/// Sets the declared MTU, bond mode and miimon on `x`, each with where it
/// was declared.
pub(super) fn add_bond_settings(
    x: &mut Expected,
    mtu: Option<&(u32, String)>,
    mode: Option<&(BondMode, String)>,
    miimon: Option<&(u32, String)>,
) {
    if let Some((m, at)) = mtu {
        x.mtu = Some(*m);
        x.declared_at.insert("mtu".into(), at.clone());
    }
    if let Some((m, at)) = mode {
        x.bond_mode = Some(*m);
        x.declared_at.insert("mode".into(), at.clone());
    }
    if let Some((m, at)) = miimon {
        x.bond_miimon = Some(*m);
        x.declared_at.insert("miimon".into(), at.clone());
    }
}

/// Whether `name` matches the shell glob `pattern`: `*`, `?`, `[set]`,
/// `[!set]`, `[a-z]`; with `escapes`, `\` makes the next character literal
/// (fnmatch(3)), else `\` is an ordinary character.
pub(super) fn glob(pattern: &str, name: &str, escapes: bool) -> bool {
    fn go(p: &[char], s: &[char], escapes: bool) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..], escapes)),
            Some(('?', rest)) => !s.is_empty() && go(rest, &s[1..], escapes),
            Some(('[', rest)) => {
                let Some((&c, tail)) = s.split_first() else {
                    return false;
                };
                let (neg, body) = match rest.first() {
                    Some('!' | '^') => (true, &rest[1..]),
                    _ => (false, rest),
                };
                // `]` first in the set is a member, not the end.
                let Some(end) = body.iter().skip(1).position(|&x| x == ']').map(|e| e + 1) else {
                    return c == '[' && go(rest, tail, escapes);
                };
                let set = &body[..end];
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&body[end + 1..], tail, escapes)
            }
            Some(('\\', rest)) if escapes && !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&rest[1..], &s[1..], escapes)
            }
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..], escapes),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s, escapes)
}
