//! Reads ifupdown's and ifupdown2's `/etc/network/interfaces` into
//! [`Expectations`], as interfaces(5) describes the format: `auto` /
//! `allow-auto` / `allow-hotplug` lines choose what is brought up,
//! `iface NAME [inet|inet6 METHOD]` stanzas say how, option lines follow
//! their stanza. Following `source` and `source-directory` is the agent's
//! (it reads the files); this module reads the texts it is handed, in the
//! order ifupdown reads them, so it is tested on plain values.
//!
//! What ifupdown would do but preflight does not model (`up` commands, a
//! `mapping`, an option it does not know) is an [`Unchecked`] naming
//! `file:line` (EXPECTATION_UNCHECKED), never a silent pass.

use preflight_model::excerpt::excerpt;
use preflight_model::{BondMode, Snapshot};
use std::collections::BTreeMap;

use super::{common, ExpectError, Expectations, Expected, Kind, Unchecked};

mod stanza;

use stanza::{Decl, Line};

/// Most files (the main file and every included one) preflight reads.
pub const MAX_IFUPDOWN_FILES: usize = 256;
/// Largest file preflight reads.
pub const MAX_IFUPDOWN_FILE_BYTES: usize = 256 * 1024;
/// Deepest chain of `source` / `source-directory` preflight follows.
pub const MAX_IFUPDOWN_DEPTH: usize = 16;
/// Longest (joined) line preflight reads.
pub const MAX_IFUPDOWN_LINE_BYTES: usize = 4096;

/// One file ifupdown reads, in the order it reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfupdownFile {
    /// Path (in messages).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// A `source` or `source-directory` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// `source-directory` (else `source`).
    pub directory: bool,
    /// The path or glob as written.
    pub pattern: String,
    /// `file:line`.
    pub at: String,
}

fn err(at: String, what: &str, reason: String) -> ExpectError {
    ExpectError {
        file: at,
        path: what.to_owned(),
        reason,
    }
}

/// The logical lines of `text` (comments dropped, backslash continuations
/// joined) with the number of the line each starts on.
fn lines(file: &str, text: &str) -> Result<Vec<(usize, String)>, ExpectError> {
    if text.len() > MAX_IFUPDOWN_FILE_BYTES {
        return Err(err(
            file.to_owned(),
            "",
            format!(
                "{} bytes, more than the {MAX_IFUPDOWN_FILE_BYTES} bytes preflight reads of a file",
                text.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = match pending.take() {
            Some((s, mut acc)) => {
                acc.push_str(raw);
                (s, acc)
            }
            // A comment is a line of its own: `#` elsewhere is text.
            None if raw.trim_start().starts_with('#') => continue,
            None => (i + 1, raw.to_owned()),
        };
        if line.len() > MAX_IFUPDOWN_LINE_BYTES {
            return Err(err(
                format!("{file}:{start}"),
                "line",
                format!("more than the {MAX_IFUPDOWN_LINE_BYTES} bytes preflight reads of a line"),
            ));
        }
        if line.ends_with('\\') {
            line.pop();
            pending = Some((start, line));
            continue;
        }
        if !line.trim().is_empty() {
            out.push((start, line.trim().to_owned()));
        }
    }
    if let Some((s, l)) = pending {
        out.push((s, l.trim().to_owned()));
    }
    Ok(out)
}

/// The `source` and `source-directory` lines of one file, in order.
///
/// # Errors
/// The file or a line past the bounds, or an include without a path.
pub fn ifupdown_includes(file: &str, text: &str) -> Result<Vec<Include>, ExpectError> {
    let mut out = Vec::new();
    for (n, l) in lines(file, text)? {
        let mut w = l.split_whitespace();
        let directory = match w.next() {
            Some("source") => false,
            Some("source-directory") => true,
            _ => continue,
        };
        let Some(pattern) = w.next() else {
            return Err(err(
                format!("{file}:{n}"),
                if directory {
                    "source-directory"
                } else {
                    "source"
                },
                "names no path".to_owned(),
            ));
        };
        out.push(Include {
            directory,
            pattern: pattern.to_owned(),
            at: format!("{file}:{n}"),
        });
    }
    Ok(out)
}

/// Reads `files` (the main file and the included ones, in ifupdown's
/// order) as expectations; `source` names where they came from.
///
/// # Errors
/// Too many or too large files, a malformed stanza or a value ifupdown
/// would refuse, each naming `file:line`.
pub fn from_ifupdown(
    source: &str,
    files: &[IfupdownFile],
    _snap: &Snapshot,
) -> Result<Expectations, ExpectError> {
    if files.len() > MAX_IFUPDOWN_FILES {
        return Err(err(
            source.to_owned(),
            "",
            format!(
                "{} files, more than the {MAX_IFUPDOWN_FILES} preflight reads",
                files.len()
            ),
        ));
    }
    let mut unch: Vec<Unchecked> = Vec::new();
    // Brought up by `ifup -a` (or hotplug): name → where it says so.
    let mut auto: BTreeMap<String, String> = BTreeMap::new();
    let mut decls: BTreeMap<String, Decl> = BTreeMap::new();
    for f in files {
        let mut ls: Vec<Line> = Vec::new();
        for (n, text) in lines(&f.path, &f.text)? {
            ls.push(Line {
                at: format!("{}:{n}", f.path),
                text,
            });
        }
        stanza::read(&ls, &mut auto, &mut decls, &mut unch)?;
    }
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let blank = |name: &str| common::blank(name, Kind::Interface);
    // Members a bond stanza lists, and those that name their bond with
    // `bond-master` (ifenslave's other spelling).
    let mut members: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (name, d) in &decls {
        if let Some((list, at)) = &d.members {
            for m in list {
                members
                    .entry(name.clone())
                    .or_default()
                    .push((m.clone(), at.clone()));
            }
        }
        if let Some((b, at)) = &d.master {
            members
                .entry(b.clone())
                .or_default()
                .push((name.clone(), at.clone()));
        }
    }
    // A bond brought up brings up its members (ifenslave, ifupdown2).
    let mut up = auto.clone();
    for (b, ms) in &members {
        if auto.contains_key(b) {
            for (m, at) in ms {
                up.entry(m.clone()).or_insert_with(|| at.clone());
            }
        }
    }
    for (name, auto_at) in &up {
        let Some(d) = decls.get(name) else {
            // ifup -a refuses a name without a stanza; expected all the
            // same (fail closed), declared where `auto` names it.
            let mut x = blank(name);
            x.declared_at.insert(String::new(), auto_at.clone());
            out.insert(name.clone(), x);
            continue;
        };
        if d.loopback {
            continue;
        }
        let mut x = blank(name);
        x.declared_at.insert(String::new(), d.at.clone());
        x.dhcp = d.dhcp;
        x.kind = if d.is_bond() || members.contains_key(name) {
            Kind::LinuxBond
        } else if d.vlan_raw.is_some() || stanza::dotted_vlan(name) {
            Kind::Vlan
        } else {
            Kind::Interface
        };
        common::add_addresses_and_gateway(&mut x, &d.addresses, &d.gateways, &mut unch, |g| {
            format!("a second gateway ({g}) on {name}: only the first is checked")
        });
        common::add_bond_settings(&mut x, d.mtu.as_ref(), d.mode.as_ref(), d.miimon.as_ref());
        for (m, at) in members.get(name).into_iter().flatten() {
            if !x.members.contains(m) {
                x.members.push(m.clone());
                x.declared_at.insert(format!("member:{m}"), at.clone());
            }
        }
        out.insert(name.clone(), x);
    }
    for (name, d) in &decls {
        if up.contains_key(name) || d.loopback {
            continue;
        }
        if d.master.is_some() || members.values().flatten().any(|(m, _)| m == name) {
            continue; // a bond member: its bond brings it up
        }
        unch.push(Unchecked {
            at: d.at.clone(),
            what: format!(
                "iface {} has no auto or allow-hotplug line: ifup -a does not bring it up, so it is not checked",
                excerpt(name)
            ),
        });
    }
    for (b, ms) in &members {
        if !out.contains_key(b) {
            if let Some((_, at)) = ms.first() {
                unch.push(Unchecked {
                    at: at.clone(),
                    what: format!(
                        "bond {} is not brought up by ifup -a (no auto or allow-hotplug line): its members are not checked",
                        excerpt(b)
                    ),
                });
            }
        }
    }
    Ok(Expectations {
        source: source.to_owned(),
        interfaces: out.into_values().collect(),
        unchecked: unch,
        files: files.iter().map(|f| f.path.clone()).collect(),
        ..Expectations::default()
    })
}

/// `bond-mode`: a name or number, as the bonding driver takes it.
fn bond_mode(v: &str, at: &str) -> Result<BondMode, ExpectError> {
    BondMode::parse(v).ok_or_else(|| {
        err(
            at.to_owned(),
            "bond-mode",
            format!("`{}` is not a bonding mode (balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb or 0-6)", excerpt(v)),
        )
    })
}

/// Whether `name` matches the shell glob `pattern` (`*`, `?`, `[set]`,
/// `[!set]`); a leading `.` is matched only by a leading `.`, as the shell
/// globs that `source` follows do.
#[must_use]
pub fn ifupdown_glob(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    common::glob(pattern, name, false)
}

/// Whether a path component holds glob characters.
#[must_use]
pub fn ifupdown_is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Whether `source-directory` reads a file of this name (run-parts'
/// rule: `^[a-zA-Z0-9_-]+$`).
#[must_use]
pub fn ifupdown_dir_entry(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
#[path = "tests/ifupdown.rs"]
mod tests;
