//! What every configuration section shares: the one error type a section's
//! validation returns ([`ConfigError`]: key, where, why), the duration and
//! count parsers every section uses, and secrets given inline or as a file.
//! Sections (`[policy]`, `[agent]`, `[aggregator]`) live beside the crate
//! that owns them; the binary reads the file and turns an error's byte span
//! into a line number.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that is wrong, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`policy.flapping.window`, `agent.aggregators[0]`).
    pub key: String,
    /// Byte range of the value in the source text; the binary turns it into
    /// a line. `None` when the key has no value in the file (a default, or a
    /// map checked as a whole).
    pub span: Option<Range<usize>>,
    /// What was expected.
    pub reason: String,
}

/// A value read from the file with its byte span (`toml::Spanned`).
pub use serde_spanned::Spanned;

/// An error on `key` at the value `v`.
pub fn at<T>(key: impl Into<String>, v: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, Some(v.span()), reason)
}

/// A duration value between `min` and `max`, `default` when absent.
///
/// # Errors
/// Not a duration, or out of range, naming `key` and the value's span.
pub fn duration_at(
    key: String,
    v: Option<&Spanned<String>>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |v| {
        parse_duration_in(v.get_ref(), min, max).map_err(|r| at(key, v, r))
    })
}

impl ConfigError {
    /// An error on `key`, at `span`.
    pub fn new(
        key: impl Into<String>,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            span,
            reason: reason.into(),
        }
    }

    /// The 1-based line of the value in `src`, when the error has a span.
    #[must_use]
    pub fn line(&self, src: &str) -> Option<usize> {
        self.span.as_ref().map(|s| line_of(src, s.start))
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The 1-based line of byte `offset` in `src`.
#[must_use]
pub fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset.min(src.len()))
        .unwrap_or(src)
        .matches('\n')
        .count()
        + 1
}

/// Parses a duration such as `60s`, `5m`, `1h30m`, `250ms`: the one parser
/// for configuration files and command-line flags.
///
/// # Errors
/// A human-readable reason when the text is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30s`, `5m`, `250ms`"))
}

/// Parses a duration and checks it lies in `min..=max`.
///
/// # Errors
/// Not a duration, or out of range (the message names the range).
pub fn parse_duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// A secret (bearer token) as configured: inline, or the path of a file
/// holding it. Reading the file is the resolve step, not validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Given in the configuration (trimmed, not empty).
    Inline(String),
    /// A file to read, with the span of its path for errors.
    File {
        /// The file.
        path: PathBuf,
        /// Where the path was written.
        span: Option<Range<usize>>,
    },
}

impl Secret {
    /// Checks the inline and file forms of one secret (`key` and `key_file`).
    ///
    /// # Errors
    /// Both forms given, or an empty inline token.
    pub fn from_parts(
        key: &str,
        inline: Option<&str>,
        file: Option<(&str, Range<usize>)>,
    ) -> Result<Option<Self>, ConfigError> {
        match (inline, file) {
            (Some(_), Some((_, span))) => Err(ConfigError::new(
                key,
                Some(span),
                "give the token inline or as a file, not both",
            )),
            (Some(t), None) if t.trim().is_empty() => {
                Err(ConfigError::new(key, None, "token is empty"))
            }
            (Some(t), None) => Ok(Some(Self::Inline(t.trim().to_owned()))),
            (None, Some((p, span))) => Ok(Some(Self::File {
                path: PathBuf::from(p),
                span: Some(span),
            })),
            (None, None) => Ok(None),
        }
    }

    /// The token: inline as it is, or read from its file (trimmed).
    ///
    /// # Errors
    /// The file cannot be read or holds only whitespace.
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Self::Inline(t) => Ok(t.clone()),
            Self::File { path, span } => {
                let t = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        key,
                        span.clone(),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(ConfigError::new(
                        key,
                        span.clone(),
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(t.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_durations_and_secrets() {
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a", 99), 1);
        assert_eq!(parse_duration(" 5m ").ok(), Some(Duration::from_secs(300)));
        assert!(parse_duration("1 fortnight").is_err());
        let e = parse_duration_in("0s", Duration::from_secs(1), Duration::from_secs(2))
            .expect_err("too short");
        assert_eq!(e, "must be between 1s and 2s");
        assert!(Secret::from_parts("t", Some("x"), Some(("f", 0..1))).is_err());
        assert!(Secret::from_parts("t", Some(" "), None).is_err());
        assert_eq!(
            Secret::from_parts("t", Some(" x "), None).expect("ok"),
            Some(Secret::Inline("x".into()))
        );
        let missing = Secret::File {
            path: "/nonexistent/token".into(),
            span: Some(3..4),
        };
        let e = missing.resolve("agent.token").expect_err("no file");
        assert_eq!((e.key.as_str(), e.span), ("agent.token", Some(3..4)));
    }
}
