//! Short excerpts of values that come from outside (a configuration file, an
//! OVSDB column) for messages. A message that quoted a value whole would
//! carry whatever size the value has: a 2 MB `mtu` string in a finding made
//! every report larger than the aggregator accepts, and the node looked
//! silent instead of misconfigured. Every such value is quoted through here.

use std::borrow::Cow;

/// Longest part of a value quoted in a message, in bytes.
pub const EXCERPT_BYTES: usize = 64;

/// `value` as it is when at most [`EXCERPT_BYTES`] long; otherwise its start
/// (cut on a character boundary), an ellipsis and its length:
/// `abc… (2097152 bytes)`.
#[must_use]
pub fn excerpt(value: &str) -> Cow<'_, str> {
    excerpt_of(value, value.len(), EXCERPT_BYTES)
}

/// Like [`excerpt`] with a limit of `max` bytes, for a value of which only
/// the start is at hand: `start` is the beginning of a value `len` bytes
/// long (a rendering that stopped early).
#[must_use]
pub fn excerpt_of(start: &str, len: usize, max: usize) -> Cow<'_, str> {
    if len <= max && start.len() == len {
        return Cow::Borrowed(start);
    }
    let mut cut = max.min(start.len());
    while !start.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}… ({len} bytes)", &start[..cut]))
}

/// Unicode's format characters (general category Cf: bidi marks,
/// embeddings, overrides and isolates, zero-width characters, the soft
/// hyphen, tags) and the line and paragraph separators (Zl, Zp), as of
/// Unicode 17. None of them draws a glyph of its own.
pub const INVISIBLE: &[(u32, u32)] = &[
    (0xad, 0xad),
    (0x600, 0x605),
    (0x61c, 0x61c),
    (0x6dd, 0x6dd),
    (0x70f, 0x70f),
    (0x890, 0x891),
    (0x8e2, 0x8e2),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x2028, 0x202e),
    (0x2060, 0x2064),
    (0x2066, 0x206f),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
];

/// Whether `c` is one of [`INVISIBLE`]: text from outside shows it
/// escaped (the terminal, JSON labels and the page share this one list).
#[must_use]
pub fn invisible(c: char) -> bool {
    let c = u32::from(c);
    INVISIBLE.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_and_long_ones_cut_with_their_length() {
        assert_eq!(excerpt("eth0"), "eth0");
        let long = "a".repeat(2 * 1024 * 1024);
        let e = excerpt(&long);
        assert_eq!(e, format!("{}… (2097152 bytes)", "a".repeat(EXCERPT_BYTES)));
        assert_eq!(excerpt(&"b".repeat(EXCERPT_BYTES)).len(), EXCERPT_BYTES);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is two bytes: a cut at an odd byte would fall inside one.
        let long = "é".repeat(100);
        let e = excerpt(&long);
        assert!(e.starts_with(&"é".repeat(EXCERPT_BYTES / 2)), "{e}");
        assert!(e.ends_with("… (200 bytes)"), "{e}");
        let odd = format!("x{long}");
        assert!(excerpt(&odd).ends_with("… (201 bytes)"));
    }

    #[test]
    fn a_partial_rendering_names_the_whole_length() {
        assert_eq!(excerpt_of("abcdef", 10_000, 3), "abc… (10000 bytes)");
        assert_eq!(excerpt_of("abc", 3, 8), "abc");
    }
}
