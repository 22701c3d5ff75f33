//! preflight's TOML configuration file: raw serde form (unknown keys are
//! errors), validated into typed settings. Errors carry file, line, key and
//! reason, and the binary exits 64 on them. One file serves every command:
//! `[policy]`, `[agent]`, `[aggregator]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use preflight_agent::{AgentConfig, BaseUrl};
use preflight_aggregator::api::Tokens;
use preflight_aggregator::fleet::{FleetConfig, Selector};
use preflight_aggregator::server::AggregatorConfig;
use preflight_policy::{PolicyConfig, RawPolicyConfig};
use serde::Deserialize;
use toml::Spanned;

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    policy: RawPolicyConfig,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    aggregator: RawAggregator,
    #[serde(default)]
    expect: preflight_policy::config::RawExpect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    node: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    aggregators: Vec<Spanned<String>>,
    token: Option<String>,
    token_file: Option<Spanned<String>>,
    heartbeat: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    resync: Option<Spanned<String>>,
    os_net_config: Option<Spanned<String>>,
    nic_mapping: Option<Spanned<String>>,
    #[serde(default)]
    probes: Vec<Spanned<String>>,
    probe_gateways: Option<bool>,
    probe_gateways_arp: Option<bool>,
    probe_interval: Option<Spanned<String>>,
    probe_timeout: Option<Spanned<String>>,
    probe_fail_after: Option<Spanned<i64>>,
    probe_recover_after: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregator {
    listen: Option<Spanned<String>>,
    database: Option<String>,
    ttl: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    max_waiver: Option<Spanned<String>>,
    #[serde(default)]
    closed_inventory: bool,
    report_token: Option<String>,
    report_token_file: Option<Spanned<String>>,
    admin_token: Option<String>,
    admin_token_file: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy settings.
    pub policy: PolicyConfig,
    /// Agent settings.
    pub agent: AgentConfig,
    /// Aggregator settings.
    pub aggregator: AggregatorConfig,
}

/// Default heartbeat of agents.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Default aggregator address.
pub const DEFAULT_AGGREGATOR_LISTEN: &str = "127.0.0.1:9100";
/// Default agent address.
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:9101";

/// A configuration file that cannot be used: exit 64.
#[derive(Debug)]
pub struct BadConfig {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for BadConfig {}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// This host's name, from the kernel.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Reads and validates a configuration file; `None` gives the defaults.
pub fn load(path: Option<&Path>) -> Result<Config, BadConfig> {
    let Some(path) = path else {
        return parse(Path::new("(defaults)"), "");
    };
    let src = std::fs::read_to_string(path).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: None,
        key: None,
        reason: format!("cannot read: {e}"),
    })?;
    parse(path, &src)
}

struct Ctx<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, key: &str, v: Option<&Spanned<T>>, reason: impl Into<String>) -> BadConfig {
        BadConfig {
            file: self.path.to_owned(),
            line: v.map(|v| line_of(self.src, v.span().start)),
            key: Some(key.to_owned()),
            reason: reason.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        v: Option<&Spanned<String>>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, BadConfig> {
        let Some(v) = v else { return Ok(default) };
        let d = preflight_policy::config::parse_duration(v.get_ref())
            .map_err(|r| self.err(key, Some(v), r))?;
        if d < min || d > max {
            return Err(self.err(
                key,
                Some(v),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    fn addr(
        &self,
        key: &str,
        v: Option<&Spanned<String>>,
        default: &str,
    ) -> Result<SocketAddr, BadConfig> {
        let text = v.map_or(default, |v| v.get_ref().as_str());
        text.parse().map_err(|e| {
            self.err(
                key,
                v,
                format!("`{text}` is not an address:port ({e}); e.g. 0.0.0.0:9100"),
            )
        })
    }

    fn secret(
        &self,
        key: &str,
        inline: Option<&String>,
        file: Option<&Spanned<String>>,
    ) -> Result<Option<String>, BadConfig> {
        match (inline, file) {
            (Some(_), Some(f)) => {
                Err(self.err(key, Some(f), "give the token inline or as a file, not both"))
            }
            (Some(t), None) if t.trim().is_empty() => {
                Err(self.err::<String>(key, None, "token is empty"))
            }
            (Some(t), None) => Ok(Some(t.trim().to_owned())),
            (None, Some(f)) => {
                let t = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                    self.err(key, Some(f), format!("cannot read {}: {e}", f.get_ref()))
                })?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(self.err(key, Some(f), format!("{} is empty", f.get_ref())));
                }
                Ok(Some(t))
            }
            (None, None) => Ok(None),
        }
    }
}

fn count(
    cx: &Ctx<'_>,
    key: &str,
    v: Option<&Spanned<i64>>,
    default: u32,
) -> Result<u32, BadConfig> {
    let Some(v) = v else { return Ok(default) };
    u32::try_from(*v.get_ref())
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| cx.err(key, Some(v), "must be an integer from 1 to 100"))
}

/// Validates configuration text (`path` is only used in messages).
pub fn parse(path: &Path, src: &str) -> Result<Config, BadConfig> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.span().map(|s| line_of(src, s.start)),
        key: None,
        reason: e.message().trim().to_owned(),
    })?;
    let cx = Ctx { path, src };
    let to_bad = |e: preflight_policy::ConfigError| BadConfig {
        file: path.to_owned(),
        line: e.span.map(|s| line_of(src, s.start)),
        key: Some(e.key),
        reason: e.reason,
    };
    let policy = raw.policy.validate("policy").map_err(to_bad)?;
    let configured = raw
        .expect
        .validate("expect", &format!("{} [expect]", path.display()))
        .map_err(to_bad)?;

    // [agent]
    let a = raw.agent;
    // An explicit name must be valid here; the host name is checked only by
    // the commands that report under it (`agent`, `up`), so that `inspect`
    // still works on a host whose name is unusable, e.g. "(none)".
    let node = a.node.as_ref().map_or_else(
        || {
            std::env::var("PREFLIGHT_NODE")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(hostname)
        },
        |n| n.get_ref().clone(),
    );
    if a.node.is_some() {
        preflight_aggregator::fleet::check_node_name(&node)
            .map_err(|e| cx.err("agent.node", a.node.as_ref(), e.to_string()))?;
    }
    preflight_aggregator::fleet::check_labels(&a.labels)
        .map_err(|e| cx.err::<String>("agent.labels", None, e.to_string()))?;
    let mut aggregators = Vec::new();
    for (i, u) in a.aggregators.iter().enumerate() {
        aggregators.push(
            BaseUrl::parse(u.get_ref())
                .map_err(|e| cx.err(&format!("agent.aggregators[{i}]"), Some(u), e.to_string()))?,
        );
    }
    let heartbeat = cx.duration(
        "agent.heartbeat",
        a.heartbeat.as_ref(),
        DEFAULT_HEARTBEAT,
        Duration::from_secs(1),
        Duration::from_secs(600),
    )?;
    let agent = AgentConfig {
        node,
        labels: a.labels,
        aggregators,
        token: cx.secret("agent.token", a.token.as_ref(), a.token_file.as_ref())?,
        heartbeat,
        listen: Some(cx.addr("agent.listen", a.listen.as_ref(), DEFAULT_AGENT_LISTEN)?),
        policy: policy.clone(),
        expectations: match (&a.os_net_config, &a.nic_mapping) {
            (Some(p), m) => Some(preflight_agent::expectations::Source::new(
                PathBuf::from(p.get_ref()),
                m.as_ref().map(|m| PathBuf::from(m.get_ref())),
            )),
            (None, Some(m)) => {
                return Err(cx.err("agent.nic_mapping", Some(m), "needs agent.os_net_config"))
            }
            (None, None) => preflight_agent::expectations::default_path()
                .map(|p| preflight_agent::expectations::Source::new(p, None)),
        },
        probes: a
            .probes
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.get_ref()
                    .parse()
                    .map_err(|e: preflight_probe::BadTarget| {
                        cx.err(&format!("agent.probes[{i}]"), Some(t), e.to_string())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        probe_gateways: a.probe_gateways.unwrap_or(true),
        probe_gateways_arp: a.probe_gateways_arp.unwrap_or(true),
        configured_expectations: configured,
        ovsdb: Some(preflight_ovsdb::SocketPaths::default()),
        probe: preflight_probe::ProbeConfig {
            interval: cx.duration(
                "agent.probe_interval",
                a.probe_interval.as_ref(),
                Duration::from_secs(2),
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            timeout: cx.duration(
                "agent.probe_timeout",
                a.probe_timeout.as_ref(),
                Duration::from_secs(1),
                Duration::from_millis(10),
                Duration::from_secs(60),
            )?,
            fail_after: count(
                &cx,
                "agent.probe_fail_after",
                a.probe_fail_after.as_ref(),
                3,
            )?,
            recover_after: count(
                &cx,
                "agent.probe_recover_after",
                a.probe_recover_after.as_ref(),
                2,
            )?,
            window: 30,
        },
        resync: cx.duration(
            "agent.resync",
            a.resync.as_ref(),
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::from_secs(3600),
        )?,
    };

    // [aggregator]
    let g = raw.aggregator;
    let listen = cx.addr(
        "aggregator.listen",
        g.listen.as_ref(),
        DEFAULT_AGGREGATOR_LISTEN,
    )?;
    let tokens = Tokens {
        report: cx.secret(
            "aggregator.report_token",
            g.report_token.as_ref(),
            g.report_token_file.as_ref(),
        )?,
        admin: cx.secret(
            "aggregator.admin_token",
            g.admin_token.as_ref(),
            g.admin_token_file.as_ref(),
        )?,
    };
    let auth = g.auth.as_ref().map_or("token", |a| a.get_ref().as_str());
    match auth {
        "token" => {
            if (tokens.report.is_none() || tokens.admin.is_none()) && !listen.ip().is_loopback() {
                return Err(cx.err(
                    "aggregator.auth",
                    g.auth.as_ref(),
                    format!("listening on {listen} needs report_token and admin_token (or their _file forms); set auth = \"none\" only on a loopback address"),
                ));
            }
        }
        "none" => {
            if !listen.ip().is_loopback() {
                return Err(cx.err(
                    "aggregator.auth",
                    g.auth.as_ref(),
                    format!("auth = \"none\" is allowed only on a loopback address, not {listen}"),
                ));
            }
        }
        other => {
            return Err(cx.err(
                "aggregator.auth",
                g.auth.as_ref(),
                format!("`{other}`: expected \"token\" or \"none\""),
            ))
        }
    }
    let ttl = cx.duration(
        "aggregator.ttl",
        g.ttl.as_ref(),
        DEFAULT_HEARTBEAT * 3,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    let settle = cx.duration(
        "aggregator.settle",
        g.settle.as_ref(),
        Duration::from_secs(30),
        Duration::ZERO,
        Duration::from_secs(3600),
    )?;
    let max_waiver = cx.duration(
        "aggregator.max_waiver",
        g.max_waiver.as_ref(),
        Duration::from_secs(7 * 86_400),
        Duration::from_secs(60),
        Duration::from_secs(90 * 86_400),
    )?;
    let mut scopes = Vec::new();
    for (i, s) in g.scopes.iter().enumerate() {
        scopes.push(
            Selector::parse(s.get_ref())
                .map_err(|e| cx.err(&format!("aggregator.scopes[{i}]"), Some(s), e.to_string()))?,
        );
    }
    let mut inventory = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        preflight_aggregator::fleet::check_node_name(n.name.get_ref())
            .and_then(|()| preflight_aggregator::fleet::check_labels(&n.labels))
            .map_err(|e| {
                cx.err(
                    &format!("aggregator.node[{i}]"),
                    Some(&n.name),
                    e.to_string(),
                )
            })?;
        if inventory.iter().any(|(name, _)| name == n.name.get_ref()) {
            return Err(cx.err(
                &format!("aggregator.node[{i}].name"),
                Some(&n.name),
                "listed twice",
            ));
        }
        inventory.push((n.name.get_ref().clone(), n.labels.clone()));
    }
    let aggregator = AggregatorConfig {
        listen,
        database: PathBuf::from(g.database.unwrap_or_else(|| "preflight.db".into())),
        fleet: FleetConfig {
            ttl,
            settle,
            closed_inventory: g.closed_inventory,
            max_waiver,
        },
        tokens,
        scopes,
        inventory,
    };
    Ok(Config {
        policy,
        agent,
        aggregator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_key_and_reason() {
        let p = Path::new("/etc/preflight/preflight.toml");
        let e =
            parse(p, "[policy.flapping]\nwindow = \"1 fortnight\"\n").expect_err("bad duration");
        let text = e.to_string();
        assert!(
            text.starts_with("/etc/preflight/preflight.toml:2: key `policy.flapping.window`: "),
            "{text}"
        );
        let e = parse(p, "\n\n[polcy]\n").expect_err("unknown table");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unknown field `polcy`"), "{}", e.reason);
        let e = parse(p, "[policy]\nseverity = 3\n").expect_err("wrong type");
        assert_eq!(e.line, Some(2));
        let e = parse(p, "[agent]\nheartbeat = \"0s\"\n").expect_err("too short");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("agent.heartbeat"), Some(2))
        );
        let e = parse(p, "[agent]\naggregators = [\"https://x:1\"]\n").expect_err("https");
        assert_eq!(e.key.as_deref(), Some("agent.aggregators[0]"));
        let e = parse(p, "[aggregator]\nlisten = \"0.0.0.0:9100\"\n")
            .expect_err("no tokens off loopback");
        assert_eq!(e.key.as_deref(), Some("aggregator.auth"));
        let e = parse(
            p,
            "[aggregator]\nlisten = \"0.0.0.0:9100\"\nauth = \"none\"\n",
        )
        .expect_err("none off loopback");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("aggregator.auth"), Some(3))
        );
        let e = parse(p, "[aggregator]\nscopes = [\"role\"]\n").expect_err("bad scope");
        assert_eq!(e.key.as_deref(), Some("aggregator.scopes[0]"));
        let e = parse(
            p,
            "[[expect.interface]]\nname = \"bond0\"\naddresses = [\"192.0.2.300/24\"]\n",
        )
        .expect_err("bad address");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("expect.interface[0].addresses[0]"), Some(3))
        );
        let e = parse(
            p,
            "[[expect.interface]]\nname = \"bond0\"\nkind = \"team\"\n",
        )
        .expect_err("bad kind");
        assert_eq!(e.key.as_deref(), Some("expect.interface[0].kind"));
        let e = parse(p, "[[aggregator.node]]\nname = \"a b\"\n").expect_err("bad node");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("aggregator.node[0]"), Some(2))
        );
    }

    #[test]
    fn defaults_and_a_full_file() {
        let c = parse(Path::new("x.toml"), "").expect("empty is fine");
        assert_eq!(c.policy, PolicyConfig::default());
        assert_eq!(c.agent.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(c.aggregator.fleet.ttl, DEFAULT_HEARTBEAT * 3);
        let c = parse(
            Path::new("x.toml"),
            "[agent]\nnode = \"compute-0\"\nlabels = { role = \"compute\" }\naggregators = [\"http://10.0.0.5:9100\"]\ntoken = \"t\"\nheartbeat = \"5s\"\n\
             [aggregator]\nlisten = \"0.0.0.0:9100\"\nreport_token = \"r\"\nadmin_token = \"a\"\nsettle = \"0s\"\nclosed_inventory = true\nscopes = [\"role=compute\"]\n\
             [[aggregator.node]]\nname = \"compute-0\"\nlabels = { role = \"compute\" }\n",
        )
        .expect("valid");
        assert_eq!(c.agent.node, "compute-0");
        assert_eq!(c.agent.aggregators.len(), 1);
        assert!(c.aggregator.fleet.closed_inventory);
        assert_eq!(c.aggregator.inventory.len(), 1);
        assert_eq!(c.aggregator.tokens.admin.as_deref(), Some("a"));
        let c = parse(
            Path::new("x.toml"),
            "[[expect.interface]]\nname = \"bond0\"\nkind = \"linux_bond\"\naddresses = [\"192.0.2.10/24\"]\ndefault_gateway = \"192.0.2.1\"\nmembers = [\"eth0\", \"eth1\"]\nbond_mode = \"active-backup\"\nmiimon = 100\nmtu = 9000\n",
        )
        .expect("valid [expect]");
        let e = c.agent.configured_expectations.expect("expectations");
        assert_eq!(e.interfaces[0].members, ["eth0", "eth1"]);
        assert_eq!(
            e.interfaces[0].default_route,
            Some(Some("192.0.2.1".parse().expect("ip")))
        );
    }
}
