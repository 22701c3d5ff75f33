//! Policy settings: a raw serde form that rejects unknown keys, validated into
//! a typed [`PolicyConfig`] whose fields cannot be wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use preflight_model::Severity;
use serde::Deserialize;

use crate::codes::{self, Code};

/// Policy section as written in TOML (`[policy]` of preflight's config file).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyConfig {
    /// Severity per finding code: `critical`, `warning` or `off`.
    #[serde(default)]
    pub severity: BTreeMap<String, toml::Spanned<String>>,
    /// Why a code's severity is changed, per finding code: shown in every
    /// finding of that code. Lowering a code that means "cannot tell" about
    /// something an operator may watch by other means (BOND_HEALTH_UNKNOWN)
    /// requires one.
    #[serde(default)]
    pub reasons: BTreeMap<String, toml::Spanned<String>>,
    /// Flap detection.
    #[serde(default)]
    pub flapping: RawFlapping,
    /// Bond rules.
    #[serde(default)]
    pub bond: RawBond,
    /// Link rules.
    #[serde(default)]
    pub links: RawLinks,
}

/// `[policy.flapping]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlapping {
    /// Window, as a duration (`60s`, `5m`).
    pub window: Option<toml::Spanned<String>>,
    /// Carrier changes within the window that count as flapping.
    pub max_changes: Option<toml::Spanned<i64>>,
}

/// `[policy.bond]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBond {
    /// Fewer ports than this is BOND_DEGRADED.
    pub min_ports: Option<toml::Spanned<i64>>,
}

/// `[policy.links]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinks {
    /// Interface name patterns (`*` wildcard) that LINK_NO_CARRIER and
    /// LINK_FLAPPING ignore.
    #[serde(default)]
    pub ignore: Vec<toml::Spanned<String>>,
}

/// Validated policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Effective severity per code; `None` disables the code.
    pub severity: BTreeMap<Code, Option<Severity>>,
    /// Why a code's severity was changed (`[policy.reasons]`).
    pub reasons: BTreeMap<Code, String>,
    /// Flap window.
    pub flap_window: Duration,
    /// Carrier changes in the window that make LINK_FLAPPING.
    pub flap_max_changes: u32,
    /// Minimum ports of a bond.
    pub bond_min_ports: u32,
    /// Name patterns ignored by link rules.
    pub ignore_links: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            severity: codes::ALL
                .iter()
                .map(|c| (*c, Some(c.default_severity())))
                .collect(),
            reasons: BTreeMap::new(),
            flap_window: Duration::from_secs(60),
            flap_max_changes: 4,
            bond_min_ports: 2,
            ignore_links: Vec::new(),
        }
    }
}

pub use preflight_model::config::{at, duration_at, parse_duration, ConfigError};

/// Longest `[policy.reasons]` entry: it is repeated in every finding of its
/// code, so it stays a sentence.
pub const MAX_REASON_BYTES: usize = 300;

impl RawPolicyConfig {
    /// Validates into a [`PolicyConfig`]; `prefix` is the table's dotted path
    /// (`policy`) for error messages.
    ///
    /// # Errors
    /// The first invalid value, with its key and why.
    pub fn validate(self, prefix: &str) -> Result<PolicyConfig, ConfigError> {
        let mut cfg = PolicyConfig::default();
        for (name, value) in &self.severity {
            let key = format!("{prefix}.severity.{name}");
            let code = Code::parse(name)
                .filter(|c| c.is_finding())
                .ok_or_else(|| ConfigError {
                    key: key.clone(),
                    span: Some(value.span()),
                    reason: format!(
                        "unknown finding code; expected one of {}",
                        codes::ALL
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            let sev = match value.get_ref().as_str() {
                "critical" => Some(Severity::Critical),
                "warning" => Some(Severity::Warning),
                "off" => None,
                other => {
                    return Err(at(
                        key,
                        value,
                        format!(
                            "`{other}` is not a severity; expected `critical`, `warning` or `off`"
                        ),
                    ))
                }
            };
            if code.fail_closed() && sev != Some(Severity::Critical) {
                return Err(at(
                    key,
                    value,
                    format!("{name} means preflight cannot tell; it is always critical"),
                ));
            }
            if code.lowered_only_with_reason() && sev != Some(Severity::Critical) {
                if sev.is_none() {
                    return Err(at(
                        key,
                        value,
                        format!("{name} means preflight cannot tell; it can be lowered to `warning` with a reason, never turned off"),
                    ));
                }
                if !self.reasons.contains_key(name) {
                    return Err(at(
                        key,
                        value,
                        format!("{name} means preflight cannot tell; lowering it needs the reason under [{prefix}.reasons] (`{name} = \"why this is safe\"`)"),
                    ));
                }
            }
            cfg.severity.insert(code, sev);
        }
        for (name, value) in &self.reasons {
            let key = format!("{prefix}.reasons.{name}");
            let code = Code::parse(name)
                .filter(|c| self.severity.contains_key(name) && c.is_finding())
                .ok_or_else(|| {
                    at(
                        &key,
                        value,
                        format!("a reason goes with a severity set under [{prefix}.severity]; {name} has none there"),
                    )
                })?;
            let text = value.get_ref().trim();
            if text.is_empty()
                || text.len() > MAX_REASON_BYTES
                || text.chars().any(char::is_control)
            {
                return Err(at(
                    key,
                    value,
                    format!("must be a one-line reason of 1 to {MAX_REASON_BYTES} bytes"),
                ));
            }
            cfg.reasons.insert(code, text.to_owned());
        }
        if let Some(w) = &self.flapping.window {
            let key = format!("{prefix}.flapping.window");
            let d = parse_duration(w.get_ref()).map_err(|r| at(&key, w, r))?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
                return Err(at(key, w, "must be between 1s and 24h"));
            }
            cfg.flap_window = d;
        }
        if let Some(n) = &self.flapping.max_changes {
            cfg.flap_max_changes = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| {
                    at(
                        format!("{prefix}.flapping.max_changes"),
                        n,
                        "must be an integer from 1 to 100000",
                    )
                })?;
        }
        if let Some(n) = &self.bond.min_ports {
            cfg.bond_min_ports = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    at(
                        format!("{prefix}.bond.min_ports"),
                        n,
                        "must be an integer from 1 to 64",
                    )
                })?;
        }
        for (i, p) in self.links.ignore.iter().enumerate() {
            if p.get_ref().is_empty() || p.get_ref().len() > 64 {
                return Err(at(
                    format!("{prefix}.links.ignore[{i}]"),
                    p,
                    "must be an interface name pattern of 1 to 64 characters",
                ));
            }
            cfg.ignore_links.push(p.get_ref().clone());
        }
        Ok(cfg)
    }
}

impl PolicyConfig {
    /// `message` of a finding of `code`, ending with the operator's reason
    /// when `[policy.reasons]` gives one: it travels with each finding, so
    /// a gate or inspect reader sees why it is not critical.
    #[must_use]
    pub fn with_reason(&self, code: Code, severity: Severity, message: String) -> String {
        match self.reasons.get(&code) {
            Some(why) => format!(
                "{}. Policy sets {code} to {}: {why}",
                // Cut the rule's text, never the reason (bounded above).
                crate::bounded(message, crate::MAX_MESSAGE_BYTES - why.len() - 96),
                severity.as_str()
            ),
            None => message,
        }
    }

    /// Whether `name` matches one of the ignore patterns.
    #[must_use]
    pub fn ignored(&self, name: &str) -> bool {
        self.ignore_links.iter().any(|p| glob_match(p, name))
    }
}

/// `*` matches any run of characters; everything else matches itself.
#[must_use]
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<PolicyConfig, ConfigError> {
        let raw: RawPolicyConfig = toml::from_str(src).map_err(|e| ConfigError {
            key: String::new(),
            span: e.span(),
            reason: e.message().to_owned(),
        })?;
        raw.validate("policy")
    }

    #[test]
    fn defaults_without_configuration() {
        let c = parse("").expect("empty is valid");
        assert_eq!(c, PolicyConfig::default());
        assert_eq!(c.severity[&Code::LinkFlapping], Some(Severity::Warning));
        assert_eq!(c.severity[&Code::BondPortDown], Some(Severity::Critical));
    }

    #[test]
    fn overrides_apply() {
        let c = parse(
            "[severity]\nLINK_FLAPPING = \"critical\"\nLINK_NO_CARRIER = \"off\"\n\
             [flapping]\nwindow = \"2m\"\nmax_changes = 10\n[bond]\nmin_ports = 1\n\
             [links]\nignore = [\"docker*\"]\n",
        )
        .expect("valid");
        assert_eq!(c.severity[&Code::LinkFlapping], Some(Severity::Critical));
        assert_eq!(c.severity[&Code::LinkNoCarrier], None);
        assert_eq!(c.flap_window, Duration::from_secs(120));
        assert_eq!(c.flap_max_changes, 10);
        assert_eq!(c.bond_min_ports, 1);
        assert!(c.ignored("docker0") && !c.ignored("eth0"));
    }

    #[test]
    fn bad_values_name_the_key_and_reason() {
        let cases = [
            (
                "[severity]\nBOND_PORT_DOWNN = \"warning\"\n",
                "policy.severity.BOND_PORT_DOWNN",
                "unknown finding code",
            ),
            (
                // A node-level code is the aggregator's, not configurable.
                "[severity]\nNODE_STALE = \"warning\"\n",
                "policy.severity.NODE_STALE",
                "unknown finding code",
            ),
            (
                "[severity]\nBOND_DOWN = \"fatal\"\n",
                "policy.severity.BOND_DOWN",
                "not a severity",
            ),
            (
                "[severity]\nSTATE_UNREADABLE = \"off\"\n",
                "policy.severity.STATE_UNREADABLE",
                "always critical",
            ),
            (
                "[flapping]\nwindow = \"soon\"\n",
                "policy.flapping.window",
                "not a duration",
            ),
            (
                "[flapping]\nmax_changes = 0\n",
                "policy.flapping.max_changes",
                "from 1 to",
            ),
            (
                "[bond]\nmin_ports = -2\n",
                "policy.bond.min_ports",
                "from 1 to 64",
            ),
        ];
        for (src, key, reason) in cases {
            let e = parse(src).expect_err(src);
            assert_eq!(e.key, key, "{src}");
            assert!(e.reason.contains(reason), "{src}: {}", e.reason);
            assert!(e.span.is_some());
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse("[flapping]\nwindw = \"60s\"\n").expect_err("typo");
        assert!(e.reason.contains("unknown field `windw`"), "{}", e.reason);
    }

    #[test]
    fn glob() {
        assert!(glob_match("eth*", "eth0"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("tap*x", "tap123x"));
        assert!(!glob_match("tap*x", "tap123"));
        assert!(glob_match("eth0", "eth0"));
        assert!(!glob_match("eth0", "eth01"));
    }
}

/// `[expect]`: preflight's own expected state, for nodes without an
/// os-net-config file (or in addition to it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    /// `[[expect.interface]]` entries.
    #[serde(default)]
    pub interface: Vec<RawExpectedInterface>,
}

/// One `[[expect.interface]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectedInterface {
    /// Interface name.
    pub name: toml::Spanned<String>,
    /// `interface` (default), `linux_bond`, `vlan`, `linux_bridge`, `ovs_bridge`, `ovs_bond`.
    pub kind: Option<toml::Spanned<String>>,
    /// Addresses are leased (no UNEXPECTED_DHCP).
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses, `192.0.2.10/24`.
    #[serde(default)]
    pub addresses: Vec<toml::Spanned<String>>,
    /// The default route goes via this gateway on this interface.
    pub default_gateway: Option<toml::Spanned<String>>,
    /// MTU.
    pub mtu: Option<toml::Spanned<i64>>,
    /// Bond members.
    #[serde(default)]
    pub members: Vec<String>,
    /// Bond mode.
    pub bond_mode: Option<toml::Spanned<String>>,
    /// Bond miimon in ms.
    pub miimon: Option<toml::Spanned<i64>>,
}

impl RawExpect {
    /// Validates into expectations (`None` when the section is empty).
    ///
    /// # Errors
    /// The first invalid value, with its key and why.
    pub fn validate(
        self,
        prefix: &str,
        source: &str,
    ) -> Result<Option<crate::expect::Expectations>, ConfigError> {
        use crate::expect::{Expected, Kind};
        if self.interface.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (i, x) in self.interface.into_iter().enumerate() {
            let key = |k: &str| format!("{prefix}.interface[{i}].{k}");
            if x.name.get_ref().is_empty() || x.name.get_ref().len() > 15 {
                return Err(at(
                    key("name"),
                    &x.name,
                    "an interface name has 1 to 15 characters",
                ));
            }
            let kind = match x.kind.as_ref().map(|k| k.get_ref().as_str()) {
                None | Some("interface") => Kind::Interface,
                Some("linux_bond") => Kind::LinuxBond,
                Some("vlan") => Kind::Vlan,
                Some("linux_bridge") => Kind::LinuxBridge,
                Some("ovs_bridge") => Kind::OvsBridge,
                Some("ovs_bond") => Kind::OvsBond,
                Some(other) => {
                    return Err(at(
                        key("kind"),
                        x.kind.as_ref().expect("matched Some"),
                        format!("`{other}`: expected interface, linux_bond, vlan, linux_bridge, ovs_bridge or ovs_bond"),
                    ))
                }
            };
            let mut addresses = Vec::new();
            for (j, a) in x.addresses.iter().enumerate() {
                let parsed = a
                    .get_ref()
                    .split_once('/')
                    .and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse::<u8>().ok()?)));
                addresses.push(parsed.ok_or_else(|| {
                    at(
                        format!("{}[{j}]", key("addresses")),
                        a,
                        format!("`{}` is not an address/prefix", a.get_ref()),
                    )
                })?);
            }
            let default_route = match &x.default_gateway {
                Some(g) => Some(Some(g.get_ref().parse().map_err(|_| {
                    at(
                        key("default_gateway"),
                        g,
                        format!("`{}` is not an address", g.get_ref()),
                    )
                })?)),
                None => None,
            };
            let mtu = match &x.mtu {
                Some(m) => Some(
                    u32::try_from(*m.get_ref())
                        .ok()
                        .filter(|v| (68..=65_536).contains(v))
                        .ok_or_else(|| at(key("mtu"), m, "must be an MTU from 68 to 65536"))?,
                ),
                None => None,
            };
            let bond_mode = match &x.bond_mode {
                Some(m) => Some(preflight_model::BondMode::parse(m.get_ref()).ok_or_else(|| {
                    at(key("bond_mode"), m, "expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb")
                })?),
                None => None,
            };
            let bond_miimon = match &x.miimon {
                Some(m) => Some(
                    u32::try_from(*m.get_ref())
                        .map_err(|_| at(key("miimon"), m, "must be 0 or more"))?,
                ),
                None => None,
            };
            out.push(Expected {
                name: x.name.into_inner(),
                written_as: None,
                kind,
                parent: None,
                dhcp: x.dhcp,
                addresses,
                default_route,
                mtu,
                members: x.members,
                bond_mode,
                bond_miimon,
                declared_at: std::collections::BTreeMap::new(),
            });
        }
        Ok(Some(crate::expect::Expectations {
            source: source.to_owned(),
            interfaces: out,
            unsupported: Vec::new(),
            unseen_bonds: Vec::new(),
            fallback: None,
            nics: crate::expect::NicPlan::default(),
            unchecked: Vec::new(),
            files: Vec::new(),
            dhcp_exposure: Vec::new(),
        }))
    }
}
