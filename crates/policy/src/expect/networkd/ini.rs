//! systemd's unit-file syntax as networkd reads it: `[Section]` headers,
//! `Key=Value` assignments, `#`/`;` comments, a trailing backslash joining
//! the next line. A main file and its drop-ins read as one sequence of
//! sections, main file first, so a later assignment adds to or overrides an
//! earlier one as systemd's parser does.

use super::super::common::{check_line_len, err, MAX_LINE_BYTES};
use super::super::ExpectError;

/// One `Key=Value` with its position.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub key: String,
    pub value: String,
    /// `file:line`.
    pub at: String,
}

/// One `[Section]` as written (repeated sections stay separate).
#[derive(Debug, Clone)]
pub(super) struct Section {
    pub name: String,
    /// `file:line` of the header.
    pub at: String,
    pub entries: Vec<Entry>,
}

/// Parses the text of `file` into its sections, appending to `out`.
///
/// # Errors
/// A line over [`MAX_LINE_BYTES`], a malformed section header, a line that
/// is no assignment, or an assignment before any section: each names
/// `file:line`.
pub(super) fn parse(file: &str, text: &str, out: &mut Vec<Section>) -> Result<(), ExpectError> {
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        check_line_len(file, n, raw)?;
        let (start, mut line) = match pending.take() {
            Some((s, mut acc)) => {
                // A comment inside a continuation is skipped, as systemd does.
                let t = raw.trim_start();
                if t.starts_with('#') || t.starts_with(';') {
                    pending = Some((s, acc));
                    continue;
                }
                acc.push(' ');
                acc.push_str(raw);
                (s, acc)
            }
            None => (n, raw.to_owned()),
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(err(
                file,
                start,
                "line",
                format!("continued past the {MAX_LINE_BYTES} bytes preflight reads of a line"),
            ));
        }
        if line.ends_with('\\') {
            line.pop();
            pending = Some((start, line));
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(
                    file,
                    start,
                    "section",
                    format!(
                        "`{}` is not a section header (`[Name]`)",
                        preflight_model::excerpt::excerpt(t)
                    ),
                ));
            };
            out.push(Section {
                name: name.to_owned(),
                at: format!("{file}:{start}"),
                entries: Vec::new(),
            });
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(err(
                file,
                start,
                "line",
                format!(
                    "`{}` is neither a section header nor a Key=Value assignment",
                    preflight_model::excerpt::excerpt(t)
                ),
            ));
        };
        let Some(sec) = out.last_mut() else {
            return Err(err(
                file,
                start,
                k.trim(),
                "an assignment before any [Section]".to_owned(),
            ));
        };
        sec.entries.push(Entry {
            key: k.trim().to_owned(),
            value: v.trim().to_owned(),
            at: format!("{file}:{start}"),
        });
    }
    Ok(())
}

/// fnmatch(3) as networkd's `Name=` uses it: `*`, `?`, `[set]`, `[!set]`,
/// `[a-z]`, `\` escaping the next character.
pub(super) fn glob(pattern: &str, name: &str) -> bool {
    super::super::common::glob(pattern, name, true)
}

/// Whether `p` holds glob characters (else it names one interface).
pub(super) fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '\\'])
}
