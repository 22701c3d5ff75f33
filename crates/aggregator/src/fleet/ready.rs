//! A tracked scope's ready list (its go members, by name) kept rendered in
//! chunks, so that an answer copies a few hundred pieces instead of reading
//! every member's name: at 100,000 nodes, reading each name (a pointer to
//! follow, a likely cache miss) cost more than the rest of the answer.
//!
//! The members' names are split into ranges of at most [`MAX_CHUNK`]
//! members each, keyed by the first name of the range. A range's rendered
//! text (`"a","b"`, the go members in it) is made when an answer first
//! needs it and dropped when a member of the range is added, removed or
//! flips between go and not go; every other range is reused as it is. A
//! range that grows past [`MAX_CHUNK`] splits in two; ranges never merge
//! (members leave rarely, and an empty range renders as nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

/// Most members in one range before it splits in two.
pub(super) const MAX_CHUNK: usize = 256;

#[derive(Debug, Default)]
struct Chunk {
    /// Members whose name falls in this range (go or not).
    members: usize,
    rendered: OnceLock<Box<[u8]>>,
}

/// The ranges, by their first name; the first range starts at `""`, so
/// every name falls in one.
#[derive(Debug)]
pub(super) struct ReadyChunks {
    chunks: BTreeMap<String, Chunk>,
}

impl Default for ReadyChunks {
    fn default() -> Self {
        Self {
            chunks: [(String::new(), Chunk::default())].into_iter().collect(),
        }
    }
}

fn write_name(out: &mut Vec<u8>, n: &str) {
    super::render::name(out, n);
}

impl ReadyChunks {
    /// Ranges for a scope built at once (`Fleet::track_scope`).
    pub(super) fn build(members: &BTreeSet<String>) -> Self {
        let mut me = Self::default();
        let half = MAX_CHUNK / 2;
        for (i, m) in members.iter().enumerate() {
            if i % half == 0 && i > 0 {
                me.chunks.insert(m.clone(), Chunk::default());
            }
            me.chunk_mut(m).members += 1;
        }
        me
    }

    fn chunk_mut(&mut self, name: &str) -> &mut Chunk {
        self.chunks
            .range_mut::<str, _>((Bound::Unbounded, Bound::Included(name)))
            .next_back()
            .map(|(_, c)| c)
            .expect("the first range starts at the empty name")
    }

    /// `name`'s go status changed: its range is rendered again.
    pub(super) fn changed(&mut self, name: &str) {
        self.chunk_mut(name).rendered.take();
    }

    /// `name` was removed from the members.
    pub(super) fn removed(&mut self, name: &str) {
        let c = self.chunk_mut(name);
        c.members = c.members.saturating_sub(1);
        c.rendered.take();
    }

    /// `name` was added to `members` (which now holds it).
    pub(super) fn inserted(&mut self, name: &str, members: &BTreeSet<String>) {
        let c = self.chunk_mut(name);
        c.members += 1;
        c.rendered.take();
        if c.members <= MAX_CHUNK {
            return;
        }
        let count = c.members;
        let start = self
            .chunks
            .range::<str, _>((Bound::Unbounded, Bound::Included(name)))
            .next_back()
            .map(|(k, _)| k.clone())
            .expect("found above");
        // Names are unique and the first one is the range's start, so the
        // middle one is greater than it: a new key.
        let middle = members
            .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
            .nth(count / 2)
            .expect("the range holds `count` members")
            .clone();
        self.chunk_mut(&start).members = count / 2;
        self.chunks.insert(
            middle,
            Chunk {
                members: count - count / 2,
                rendered: OnceLock::new(),
            },
        );
    }

    /// Writes the go members, comma-separated, in name order.
    pub(super) fn write(
        &self,
        out: &mut Vec<u8>,
        members: &BTreeSet<String>,
        not_go: &BTreeMap<String, Option<Arc<[u8]>>>,
    ) {
        let mut first = true;
        let mut it = self.chunks.iter().peekable();
        while let Some((start, chunk)) = it.next() {
            let end = it
                .peek()
                .map_or(Bound::Unbounded, |(k, _)| Bound::Excluded(k.as_str()));
            let range = (Bound::Included(start.as_str()), end);
            let text = chunk.rendered.get_or_init(|| {
                let mut t = Vec::new();
                let mut skip = not_go.range::<str, _>(range).peekable();
                for m in members.range::<str, _>(range) {
                    if skip.peek().is_some_and(|(n, _)| *n == m) {
                        skip.next();
                        continue;
                    }
                    if !t.is_empty() {
                        t.push(b',');
                    }
                    write_name(&mut t, m);
                }
                t.into_boxed_slice()
            });
            if !text.is_empty() {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(text);
            }
        }
    }
}
