//! preflight's TOML configuration file. One file serves every command
//! (`[policy]`, `[expect]`, `[agent]`, `[aggregator]`); each section is
//! parsed, validated and resolved (token files, default paths) by the crate
//! that owns it. This module only reads the file, hands each section to its
//! owner and puts the results together. Errors carry file, line,
//! key and reason, and the binary exits 64 on them.

use std::path::Path;

use preflight_agent::config::RawAgentSection;
use preflight_agent::AgentConfig;
use preflight_aggregator::config::RawAggregatorSection;
use preflight_aggregator::server::AggregatorConfig;
use preflight_model::config::ConfigError;
use preflight_policy::{PolicyConfig, RawPolicyConfig};
use serde::Deserialize;

pub use preflight_agent::config::DEFAULT_LISTEN as DEFAULT_AGENT_LISTEN;
pub use preflight_aggregator::config::DEFAULT_LISTEN as DEFAULT_AGGREGATOR_LISTEN;

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    policy: RawPolicyConfig,
    #[serde(default)]
    agent: RawAgentSection,
    #[serde(default)]
    aggregator: RawAggregatorSection,
    #[serde(default)]
    expect: preflight_policy::config::RawExpect,
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

pub use preflight_agentd::BadConfig;

/// Reads and validates a configuration file; `None` gives the defaults.
pub fn load(path: Option<&Path>) -> Result<Config, BadConfig> {
    let (path, src) = preflight_agentd::config::read(path)?;
    parse(&path, &src)
}

/// Validates configuration text (`path` is only used in messages), then
/// resolves it (token files, default paths).
pub fn parse(path: &Path, src: &str) -> Result<Config, BadConfig> {
    let raw: RawConfig = preflight_agentd::config::toml_from_str(path, src)?;
    compose(path, raw).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.line(src),
        key: Some(e.key),
        reason: e.reason,
    })
}

fn compose(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let policy = raw.policy.validate("policy")?;
    let configured = raw
        .expect
        .validate("expect", &format!("{} [expect]", path.display()))?;
    let agent = raw.agent.validate("agent")?;
    let aggregator = raw.aggregator.validate("aggregator")?;
    let agent = agent.resolve("agent", policy.clone(), configured)?;
    let aggregator = aggregator.resolve("aggregator")?;
    Ok(Config {
        policy,
        agent,
        aggregator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_agent::config::DEFAULT_HEARTBEAT;

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
        let e = parse(p, "[agent]\naggregators = [\"ftp://x:1\"]\n").expect_err("ftp");
        assert_eq!(e.key.as_deref(), Some("agent.aggregators[0]"));
        let e =
            parse(p, "[aggregator]\nlisten = \"0.0.0.0:9100\"\n").expect_err("no TLS off loopback");
        assert_eq!(e.key.as_deref(), Some("aggregator.tls"));
        let e = parse(
            p,
            "[aggregator]\nlisten = \"0.0.0.0:9100\"\ninsecure_plaintext = true\n",
        )
        .expect_err("no tokens off loopback");
        assert_eq!(e.key.as_deref(), Some("aggregator.auth"));
        let e = parse(
            p,
            "[aggregator]\nlisten = \"0.0.0.0:9100\"\ninsecure_plaintext = true\nauth = \"none\"\n",
        )
        .expect_err("none off loopback");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("aggregator.auth"), Some(4))
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
             [aggregator]\nlisten = \"0.0.0.0:9100\"\ninsecure_plaintext = true\nfleet_report_token = true\nreport_token = \"r\"\nadmin_token = \"a\"\nsettle = \"0s\"\nclosed_inventory = true\nscopes = [\"role=compute\"]\n\
             [[aggregator.node]]\nname = \"compute-0\"\nlabels = { role = \"compute\" }\n",
        )
        .expect("valid");
        assert_eq!(c.agent.node, "compute-0");
        assert_eq!(c.agent.aggregators.len(), 1);
        assert!(c.aggregator.fleet.closed_inventory);
        assert_eq!(c.aggregator.inventory.len(), 1);
        assert!(c.aggregator.tls.is_none());
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

    /// The example configuration in docs/operations.md is accepted as
    /// written, only its files moved into a temp dir (and made): an
    /// operator who copies it gets a service that starts, not exit 64.
    #[test]
    fn the_runbook_example_is_accepted() {
        let doc = include_str!("../../../docs/operations.md");
        let start = doc
            .find("# /etc/preflight/preflight.toml")
            .expect("the example in docs/operations.md");
        let example = &doc[start..];
        let example = &example[..example.find("```").expect("the example's end")];
        let dir = std::env::temp_dir().join(format!("preflight-runbook-{}", std::process::id()));
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("temp dir");
        // A real CA certificate: the agent reads its `[agent.tls] ca` at
        // start, and a file that is not one is refused.
        preflight_tests::certs::ca(&tls, "ca");
        std::fs::copy(tls.join("ca.pem"), tls.join("cert.pem")).expect("cert");
        std::fs::copy(tls.join("ca.key"), tls.join("key.pem")).expect("key");
        let node_token = "runbook-node-token-0123456789abcdef";
        std::fs::write(dir.join("node.token"), node_token).expect("node token");
        std::fs::write(
            dir.join("node-tokens"),
            format!(
                "compute-0 {}\n",
                preflight_aggregator::auth::hex(&preflight_aggregator::auth::token_digest(
                    node_token
                ))
            ),
        )
        .expect("node tokens");
        std::fs::write(
            dir.join("admin.token"),
            "runbook-admin-token-0123456789abcdef",
        )
        .expect("admin token");
        let text = example.replace("/etc/preflight/", &format!("{}/", dir.display()));
        let c = parse(&dir.join("preflight.toml"), &text);
        std::fs::remove_dir_all(&dir).expect("clean up");
        let c = c.unwrap_or_else(|e| panic!("docs/operations.md's example is refused: {e}"));
        assert_eq!(c.agent.node, "compute-0");
        assert!(c.aggregator.tls.is_some(), "TLS off loopback");
        assert!(c.aggregator.fleet.closed_inventory);
    }
}
