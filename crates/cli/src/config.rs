//! preflight's TOML configuration file: raw serde form (unknown keys are
//! errors), validated into typed settings. Errors carry file, line, key and
//! reason, and the binary exits 64 on them.

use std::path::{Path, PathBuf};

use preflight_policy::{PolicyConfig, RawPolicyConfig};
use serde::Deserialize;

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    policy: RawPolicyConfig,
}

/// Validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Policy settings.
    pub policy: PolicyConfig,
}

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

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, BadConfig> {
    let src = std::fs::read_to_string(path).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: None,
        key: None,
        reason: format!("cannot read: {e}"),
    })?;
    parse(path, &src)
}

/// Validates configuration text (`path` is only used in messages).
pub fn parse(path: &Path, src: &str) -> Result<Config, BadConfig> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.span().map(|s| line_of(src, s.start)),
        key: None,
        reason: e.message().trim().to_owned(),
    })?;
    let policy = raw.policy.validate("policy").map_err(|e| BadConfig {
        file: path.to_owned(),
        line: e.span.map(|s| line_of(src, s.start)),
        key: Some(e.key),
        reason: e.reason,
    })?;
    Ok(Config { policy })
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
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse(Path::new("x.toml"), "").expect("empty is fine");
        assert_eq!(c.policy, PolicyConfig::default());
    }
}
