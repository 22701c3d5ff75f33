//! Parts of a tracked scope's answer kept rendered in ranges of names, so
//! that an answer copies a few hundred pieces instead of visiting every
//! node: at 100,000 nodes, reading each member's name (a pointer to follow,
//! a likely cache miss) cost more than the rest of the answer. Three lists
//! are kept this way: the ready list (go members, over the members), the
//! blockers and the blocked names (both over the not-go members).
//!
//! The names are split into ranges of at most [`MAX_CHUNK`] entries each
//! ([`MAX_BLOCKED_CHUNK`] for the blockers),
//! keyed by the first name of the range. A range's text is made when an
//! answer first needs it and dropped when an entry of the range is added,
//! removed or changed; every other range is reused as it is. A text
//! that counts seconds (a stale or settling node's blocker) is kept for at
//! most `TEXT_REFRESH`, as whole answers are. A range that grows past its
//! most splits in two; ranges never merge (an empty range renders as
//! nothing; there are at most about twice as many as the names ever seen
//! divided by the most).
//!
//! The sizes trade the answer's pieces against the work of one change.
//! Every piece costs an answer a reference count taken and dropped (a cache
//! miss each, at thousands of pieces) and a slot to copy from; a change
//! costs the next answer one range rendered again. At 100,000 nodes with 11% blocked, ranges of 64 names and 32
//! nodes made about 5,000 pieces (the ranges and the commas between them)
//! and cost a whole-fleet answer about 2.8 ms of CPU in reference counts,
//! piece lists and copies (perf, docs/benchmarks.md); 256 and 64, with the
//! commas kept inside the texts, make about 800.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use super::body::Body;

/// Most entries in one range of the ready list (and of the blocked names)
/// before it splits in two: a range's text is at most about 4 KiB.
pub(super) const MAX_CHUNK: usize = 256;

/// Most entries in one range of the blockers: a not-go node's blockers are
/// hundreds of bytes, a ready node's name ten, so the blockers' ranges are
/// smaller (at most about 16 KiB), and a change renders about as much again
/// either way.
pub(super) const MAX_BLOCKED_CHUNK: usize = 64;

/// A range's text, led by a comma unless empty ([`led_by_comma`]), and
/// until when it holds (`None`: until it changes).
type Text = (Bytes, Option<Instant>);

#[derive(Debug, Default)]
struct Chunk {
    /// Entries whose name falls in this range.
    entries: usize,
    text: Mutex<Option<Text>>,
}

impl Chunk {
    fn drop_text(&mut self) {
        *self.text.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The ranges, by their first name; the first range starts at `""`, so
/// every name falls in one.
#[derive(Debug)]
pub(super) struct Ranges {
    chunks: BTreeMap<String, Chunk>,
    /// Most entries in one range.
    max: usize,
}

impl Ranges {
    /// No entries yet; ranges split past `max` entries.
    pub(super) fn new(max: usize) -> Self {
        Self {
            chunks: [(String::new(), Chunk::default())].into_iter().collect(),
            max: max.max(2),
        }
    }
}

/// A range of names, for `BTreeMap::range` and `BTreeSet::range`.
pub(super) type NameRange<'a> = (Bound<&'a str>, Bound<&'a str>);

impl Ranges {
    /// Ranges over names given at once, in order.
    pub(super) fn build<'a>(max: usize, names: impl Iterator<Item = &'a String>) -> Self {
        let mut me = Self::new(max);
        let half = me.max / 2;
        for (i, m) in names.enumerate() {
            if i % half == 0 && i > 0 {
                me.chunks.insert(m.clone(), Chunk::default());
            }
            me.chunk_mut(m).1.entries += 1;
        }
        me
    }

    fn chunk_mut(&mut self, name: &str) -> (&String, &mut Chunk) {
        self.chunks
            .range_mut::<str, _>((Bound::Unbounded, Bound::Included(name)))
            .next_back()
            .expect("the first range starts at the empty name")
    }

    /// How many ranges there are.
    pub(super) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// The entry `name` changed: its range is rendered again.
    pub(super) fn changed(&mut self, name: &str) {
        self.chunk_mut(name).1.drop_text();
    }

    /// `name` left.
    pub(super) fn removed(&mut self, name: &str) {
        let c = self.chunk_mut(name).1;
        c.entries = c.entries.saturating_sub(1);
        c.drop_text();
    }

    /// `name` joined; `nth_from(start, n)` is the `n`th name (from 0) at or
    /// after `start` among the entries, which now hold `name`.
    pub(super) fn inserted(
        &mut self,
        name: &str,
        nth_from: impl FnOnce(&str, usize) -> Option<String>,
    ) {
        let max = self.max;
        let (start, c) = self.chunk_mut(name);
        c.entries += 1;
        c.drop_text();
        if c.entries <= max {
            return;
        }
        let count = c.entries;
        // Names are unique and the first one is at or after the range's
        // start, so the middle one is after it: a new key.
        let Some(middle) = nth_from(start, count / 2) else {
            return;
        };
        c.entries = count / 2;
        self.chunks.insert(
            middle,
            Chunk {
                entries: count - count / 2,
                text: Mutex::new(None),
            },
        );
    }

    /// Writes every range's text, comma-separated, in name order; a range
    /// without a current text is rendered by `render` (its text, and until
    /// when that holds) and kept. Returns the earliest such limit.
    pub(super) fn write(
        &self,
        out: &mut Body,
        now: Instant,
        render: impl Fn(NameRange<'_>) -> (Vec<u8>, Option<Instant>),
    ) -> Option<Instant> {
        let mut first = true;
        let mut until: Option<Instant> = None;
        let mut it = self.chunks.iter().peekable();
        while let Some((start, chunk)) = it.next() {
            let end = it
                .peek()
                .map_or(Bound::Unbounded, |(k, _)| Bound::Excluded(k.as_str()));
            let (text, valid) = {
                let mut kept = chunk.text.lock().unwrap_or_else(PoisonError::into_inner);
                match &*kept {
                    Some((t, v)) if v.is_none_or(|v| now < v) => (t.clone(), *v),
                    _ => {
                        let (t, v) = render((Bound::Included(start.as_str()), end));
                        let t = led_by_comma(t);
                        *kept = Some((t.clone(), v));
                        (t, v)
                    }
                }
            };
            if let Some(v) = valid {
                until = Some(until.map_or(v, |u| u.min(v)));
            }
            if !text.is_empty() {
                // Texts are kept with the comma that leads them: one piece
                // per range, none for its comma.
                out.kept(&if first { text.slice(1..) } else { text });
                first = false;
            }
        }
        until
    }
}

/// A range's text as it is kept: led by the comma that separates it from
/// the range before (none when empty).
fn led_by_comma(mut text: Vec<u8>) -> Bytes {
    if !text.is_empty() {
        text.insert(0, b',');
    }
    Bytes::from(text)
}
