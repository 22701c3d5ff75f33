//! The GLib key-file syntax NetworkManager's keyfiles and NetworkManager.conf
//! use: `[group]` headers, `key=value` lines, `#` comments. No line
//! continuation (unlike systemd's units), so a trailing `\` is part of the
//! value.

use preflight_model::excerpt::excerpt;

use super::super::ExpectError;

use super::super::common::{check_line_len, err};

/// One `key=value` with its position.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub group: String,
    pub key: String,
    pub value: String,
    /// `file:line`.
    pub at: String,
}

/// Parses `text` of `file` into its entries in file order.
///
/// # Errors
/// A line over [`MAX_LINE_BYTES`](super::super::common::MAX_LINE_BYTES), a
/// malformed group header, a line that is no assignment, or an assignment
/// before any group: each names `file:line`.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<Entry>, ExpectError> {
    let mut out = Vec::new();
    let mut group: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        check_line_len(file, n, raw)?;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(
                    file,
                    n,
                    "group",
                    format!("`{}` is not a group header (`[name]`)", excerpt(t)),
                ));
            };
            group = Some(name.to_owned());
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(err(
                file,
                n,
                "line",
                format!(
                    "`{}` is neither a group header nor a key=value assignment",
                    excerpt(t)
                ),
            ));
        };
        let Some(g) = &group else {
            return Err(err(
                file,
                n,
                k.trim(),
                "an assignment before any [group]".to_owned(),
            ));
        };
        out.push(Entry {
            group: g.clone(),
            key: k.trim().to_owned(),
            value: v.trim().to_owned(),
            at: format!("{file}:{n}"),
        });
    }
    Ok(out)
}

/// A GLib list value: items separated by `,` or `;`, blanks dropped.
pub(super) fn list(v: &str) -> Vec<String> {
    v.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
