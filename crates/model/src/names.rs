//! Node names and labels: what the agent may send and the aggregator
//! accepts. One rule, checked by the agent's configuration before a report
//! goes out, by the aggregator's configuration, and by the aggregator on
//! every report, inventory change and selector.

use std::collections::BTreeMap;

/// Longest node name (a DNS name).
pub const MAX_NODE_NAME: usize = 253;
/// Longest label key or value.
pub const MAX_LABEL: usize = 63;
/// Most labels on one node.
pub const MAX_LABELS: usize = 32;

/// A node name or label that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Node name not acceptable (at most 80 characters of it kept).
    BadNodeName(String),
    /// Label not acceptable (`k=v`, or a count).
    BadLabel(String),
    /// A node name with upper case where its kept form is expected (see
    /// [`node_key`]).
    NotLowerCase(String),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadNodeName(n) => write!(
                f,
                "invalid node name `{n}`: use 1-253 characters of A-Z a-z 0-9 . _ -"
            ),
            Self::NotLowerCase(n) => write!(
                f,
                "node name `{n}` has upper case: node names are case-insensitive (DNS names) and kept in lower case, `{}`",
                n.to_ascii_lowercase()
            ),
            Self::BadLabel(l) => write!(
                f,
                "invalid label `{l}`: keys and values are 1-63 characters of A-Z a-z 0-9 . _ - /"
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn valid_token(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c)
        })
}

/// Checks a node name.
///
/// # Errors
/// When it is empty, too long, or has other characters than `A-Za-z0-9._-`.
pub fn check_node_name(name: &str) -> Result<(), NameError> {
    if valid_token(name, MAX_NODE_NAME, &[]) {
        Ok(())
    } else {
        Err(NameError::BadNodeName(name.chars().take(80).collect()))
    }
}

/// A node name in the one form the aggregator keeps and compares it in:
/// node names are DNS names, so `NODE-A` and `node-a` are one node, kept
/// as `node-a` (certificate SANs are compared in lower case too).
///
/// # Errors
/// As [`check_node_name`].
pub fn node_key(name: &str) -> Result<String, NameError> {
    check_node_name(name)?;
    Ok(name.to_ascii_lowercase())
}

/// Checks that a node name is valid and already in its kept form
/// ([`node_key`]): where a name with upper case would otherwise become a
/// second node.
///
/// # Errors
/// As [`check_node_name`], or [`NameError::NotLowerCase`].
pub fn check_node_key(name: &str) -> Result<(), NameError> {
    check_node_name(name)?;
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(NameError::NotLowerCase(name.chars().take(80).collect()));
    }
    Ok(())
}

/// Whether `s` may be a label key or value (also each side of a selector's
/// `key=value` term).
#[must_use]
pub fn is_label_part(s: &str) -> bool {
    valid_token(s, MAX_LABEL, &['/'])
}

/// Checks labels.
///
/// # Errors
/// The first bad key or value, or too many labels.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    if labels.len() > MAX_LABELS {
        return Err(NameError::BadLabel(format!(
            "{} labels (at most {MAX_LABELS})",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if !is_label_part(k) || !is_label_part(v) {
            return Err(NameError::BadLabel(
                format!("{k}={v}").chars().take(140).collect(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(check_node_name("compute-0.example").is_ok());
        assert!(check_node_name("a b").is_err());
        assert!(check_node_name("").is_err());
        assert!(check_node_name(&"x".repeat(254)).is_err());
        assert_eq!(node_key("NODE-a.Example").as_deref(), Ok("node-a.example"));
        assert!(check_node_key("node-a").is_ok());
        assert_eq!(
            check_node_key("NODE-A").expect_err("upper case").to_string(),
            "node name `NODE-A` has upper case: node names are case-insensitive (DNS names) and kept in lower case, `node-a`"
        );
        let ok: BTreeMap<_, _> = [("role".to_owned(), "compute".to_owned())].into();
        assert!(check_labels(&ok).is_ok());
        let bad: BTreeMap<_, _> = [("role".to_owned(), "a b".to_owned())].into();
        assert_eq!(
            check_labels(&bad).expect_err("space").to_string(),
            "invalid label `role=a b`: keys and values are 1-63 characters of A-Z a-z 0-9 . _ - /"
        );
    }
}
