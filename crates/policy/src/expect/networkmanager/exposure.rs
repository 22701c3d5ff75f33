//! NetworkManager's automatic DHCP: an Ethernet device no profile could be
//! activated on gets a "Wired connection N" profile asking for DHCP unless
//! NetworkManager.conf's `[main] no-auto-default` covers it. A NIC that lost
//! its profile in an update silently asks for an address.

use preflight_model::excerpt::excerpt;
use preflight_model::{Interface, Snapshot};

use super::super::{ExpectError, Unchecked};
use super::keyfile;

/// A physical NIC NetworkManager would give an automatic DHCP profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhcpExposure {
    /// The NIC.
    pub nic: String,
    /// `file:line` deciding it (the `no-auto-default` line, else the
    /// configuration read or looked for).
    pub at: String,
    /// Why, as a sentence.
    pub why: String,
}

/// `no-auto-default` as the configuration files leave it.
#[derive(Debug, Default)]
pub(super) struct NoAutoDefault {
    specs: Vec<String>,
    /// Where it was last set.
    at: Option<String>,
}

/// Reads `no-auto-default` from NetworkManager.conf and its conf.d files,
/// in the order NetworkManager reads them (a later file overrides; `+=`
/// appends and `-=` removes, as NetworkManager.conf(5) says).
pub(super) fn no_auto_default(conf: &[(String, String)]) -> Result<NoAutoDefault, ExpectError> {
    let mut out = NoAutoDefault::default();
    for (path, text) in conf {
        for e in keyfile::parse(path, text)? {
            if e.group != "main" {
                continue;
            }
            let items = keyfile::list(&e.value);
            match e.key.as_str() {
                "no-auto-default" => out.specs = items,
                "no-auto-default+" => out.specs.extend(items),
                "no-auto-default-" => out.specs.retain(|s| !items.contains(s)),
                _ => continue,
            }
            out.at = Some(e.at.clone());
        }
    }
    Ok(out)
}

/// A physical NIC as NetworkManager's auto-default sees one: no
/// rtnetlink kind (veth, bond, bridge, ... have one), not loopback, a MAC.
fn physical(i: &Interface) -> bool {
    i.kind.is_none() && i.name != "lo" && i.mac.as_deref().is_some_and(|m| m != "00:00:00:00:00:00")
}

/// `*` and `?` globbing, as `interface-name:` specs use it.
fn glob(p: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(p.as_bytes(), s.as_bytes())
}

/// Whether a device spec (NetworkManager.conf(5) "Device List Format")
/// covers `i`: `Some(false)` when it surely does not, `None` when preflight
/// cannot evaluate it.
fn spec_covers(spec: &str, i: &Interface) -> Option<bool> {
    let mac_eq = |m: &str| {
        i.mac
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(m.trim()))
    };
    if spec == "*" {
        return Some(true);
    }
    if let Some(n) = spec.strip_prefix("interface-name:") {
        return Some(match n.strip_prefix('=') {
            Some(exact) => exact == i.name,
            None => glob(n.strip_prefix('~').unwrap_or(n), &i.name),
        });
    }
    if let Some(m) = spec.strip_prefix("mac:") {
        return Some(mac_eq(m));
    }
    // A bare hardware address is a `mac:` spec.
    if spec.len() == 17 && spec.bytes().filter(|b| *b == b':').count() == 5 {
        return Some(mac_eq(spec));
    }
    None
}

/// The physical NICs of `snap` no profile covers (`covered` says which
/// are) that `no-auto-default` does not exclude; specs preflight cannot
/// evaluate are unchecked and, failing closed, exclude nothing.
pub(super) fn exposures(
    snap: &Snapshot,
    nad: &NoAutoDefault,
    conf_where: &str,
    covered: impl Fn(&Interface) -> bool,
    unch: &mut Vec<Unchecked>,
) -> Vec<DhcpExposure> {
    let at = nad.at.clone().unwrap_or_else(|| conf_where.to_owned());
    for s in &nad.specs {
        if s != "*" && spec_covers(s, &Interface::default()).is_none() {
            unch.push(Unchecked {
                at: at.clone(),
                what: format!(
                    "no-auto-default entry `{}` is not one preflight evaluates (only *, mac:, interface-name: and bare MACs): it is taken to exclude no NIC",
                    excerpt(s)
                ),
            });
        }
    }
    let mut out = Vec::new();
    for i in snap.interfaces.values() {
        if !physical(i) || covered(i) {
            continue;
        }
        if nad.specs.iter().any(|s| spec_covers(s, i) == Some(true)) {
            continue;
        }
        let why = match &nad.at {
            Some(_) => format!(
                "no profile applies to {} and no-auto-default does not list it",
                i.name
            ),
            None => format!(
                "no profile applies to {} and no-auto-default is not set",
                i.name
            ),
        };
        out.push(DhcpExposure {
            nic: i.name.clone(),
            at: at.clone(),
            why,
        });
    }
    out
}
