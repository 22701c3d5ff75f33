//! The agent's part of preflight's one TOML file: `[agent]`, `[policy]` and
//! `[expect]`, each validated by the crate that owns it, as `preflight
//! agent` reads them. An `[aggregator]` section may be present (one file can
//! serve both services) and is left to the aggregator to check; any other
//! top-level key is an error. Errors carry file, line, key and reason.

use std::path::{Path, PathBuf};

use preflight_agent::config::RawAgentSection;
use preflight_agent::AgentConfig;
use preflight_model::config::line_of;
use preflight_policy::config::RawExpect;
use preflight_policy::RawPolicyConfig;
use serde::Deserialize;

/// The file as the agent reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentFile {
    #[serde(default)]
    policy: RawPolicyConfig,
    #[serde(default)]
    agent: RawAgentSection,
    #[serde(default)]
    expect: RawExpect,
    // Not the agent's: skipped without being decoded.
    #[serde(default)]
    #[allow(dead_code)]
    aggregator: Option<serde::de::IgnoredAny>,
}

/// A configuration file that cannot be used: exit 64.
#[derive(Debug)]
pub struct BadConfig {
    /// The file (or `(defaults)`).
    pub file: PathBuf,
    /// The line of the bad value, when known.
    pub line: Option<usize>,
    /// The dotted key, when known.
    pub key: Option<String>,
    /// What was expected.
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

/// Reads the file at `path` (`None`: the defaults).
pub fn read(path: Option<&Path>) -> Result<(PathBuf, String), BadConfig> {
    let Some(path) = path else {
        return Ok((PathBuf::from("(defaults)"), String::new()));
    };
    let src = std::fs::read_to_string(path).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: None,
        key: None,
        reason: format!("cannot read: {e}"),
    })?;
    Ok((path.to_owned(), src))
}

/// Parses TOML text into `T`, a TOML error becoming a [`BadConfig`] with
/// its line (`path` is only used in messages).
pub fn toml_from_str<T: serde::de::DeserializeOwned>(
    path: &Path,
    src: &str,
) -> Result<T, BadConfig> {
    toml::from_str(src).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.span().map(|s| line_of(src, s.start)),
        key: None,
        reason: e.message().trim().to_owned(),
    })
}

/// Reads and validates the agent's sections of a configuration file
/// (`None` gives the defaults), then resolves them (token files, default
/// paths, the host name).
pub fn load(path: Option<&Path>) -> Result<AgentConfig, BadConfig> {
    let (path, src) = read(path)?;
    parse(&path, &src)
}

/// Validates and resolves configuration text (`path` is only used in
/// messages).
pub fn parse(path: &Path, src: &str) -> Result<AgentConfig, BadConfig> {
    let raw: RawAgentFile = toml_from_str(path, src)?;
    let composed = (|| {
        let policy = raw.policy.validate("policy")?;
        let configured = raw
            .expect
            .validate("expect", &format!("{} [expect]", path.display()))?;
        raw.agent
            .validate("agent")?
            .resolve("agent", policy, configured)
    })();
    composed.map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.line(src),
        key: Some(e.key),
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_reads_its_sections_and_leaves_the_aggregator_alone() {
        let p = Path::new("/etc/preflight/preflight.toml");
        let c = parse(
            p,
            "[agent]\nnode = \"compute-0\"\naggregators = [\"http://10.0.0.5:9100\"]\n\
             [policy.flapping]\nwindow = \"2m\"\n\
             [aggregator]\nlisten = \"0.0.0.0:9100\"\nwhatever = 1\n",
        )
        .expect("valid for the agent");
        assert_eq!(c.node, "compute-0");
        assert_eq!(c.aggregators.len(), 1);
        let e = parse(p, "[agent]\nheartbeat = \"0s\"\n").expect_err("too short");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("agent.heartbeat"), Some(2))
        );
        assert!(
            e.to_string()
                .starts_with("/etc/preflight/preflight.toml:2: key `agent.heartbeat`: "),
            "{e}"
        );
        let e = parse(p, "\n[agnet]\n").expect_err("unknown table");
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("unknown field `agnet`"), "{}", e.reason);
        let e = parse(
            p,
            "[[expect.interface]]\nname = \"bond0\"\naddresses = [\"192.0.2.300/24\"]\n",
        )
        .expect_err("bad address");
        assert_eq!(e.key.as_deref(), Some("expect.interface[0].addresses[0]"));
        let e = load(Some(Path::new("/nonexistent/preflight.toml"))).expect_err("no file");
        assert!(e.reason.starts_with("cannot read: "), "{}", e.reason);
    }
}
