//! systemd's unit-file syntax as networkd reads it: `[Section]` headers,
//! `Key=Value` assignments, `#`/`;` comments, a trailing backslash joining
//! the next line. A main file and its drop-ins read as one sequence of
//! sections, main file first, so a later assignment adds to or overrides an
//! earlier one as systemd's parser does.

use super::super::ExpectError;

/// Longest line preflight reads: far above any real assignment.
pub(super) const MAX_LINE_BYTES: usize = 4096;

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

fn err(file: &str, line: usize, what: &str, reason: String) -> ExpectError {
    ExpectError {
        file: format!("{file}:{line}"),
        path: what.to_owned(),
        reason,
    }
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
        if raw.len() > MAX_LINE_BYTES {
            return Err(err(
                file,
                n,
                "line",
                format!(
                    "{} bytes, more than the {MAX_LINE_BYTES} bytes preflight reads of a line",
                    raw.len()
                ),
            ));
        }
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
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some(('[', rest)) => {
                let Some((&c, tail)) = s.split_first() else {
                    return false;
                };
                let (neg, body) = match rest.first() {
                    Some('!' | '^') => (true, &rest[1..]),
                    _ => (false, rest),
                };
                // `]` first in the set is a member, not the end.
                let Some(end) = body.iter().skip(1).position(|&x| x == ']').map(|e| e + 1) else {
                    return c == '[' && go(rest, tail);
                };
                let set = &body[..end];
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&body[end + 1..], tail)
            }
            Some(('\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&rest[1..], &s[1..])
            }
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s)
}

/// Whether `p` holds glob characters (else it names one interface).
pub(super) fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '\\'])
}
