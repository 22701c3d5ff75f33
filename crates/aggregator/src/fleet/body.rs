//! An answer's JSON as it is written under the fleet's lock: its own bytes
//! and the kept range texts (`ready`) it shares with the fleet.

use bytes::Bytes;

/// An answer's JSON as it is written under the fleet's lock: its own bytes
/// and, between them, kept range texts shared with the fleet (not copied).
/// [`Body::join`] makes the bytes, once the lock is released: at 100,000
/// nodes that copy is megabytes, and every report would wait for it.
/// Writing a kept text costs a reference count and one entry; the own
/// bytes are one buffer.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// The own bytes, in order.
    pub(super) cur: Vec<u8>,
    /// Kept texts, each with the length of `cur` when it was written.
    kept: Vec<(usize, Bytes)>,
}

impl Body {
    /// A body that starts with `cur`, with room for `kept` kept texts.
    pub(super) fn new(cur: Vec<u8>, kept: usize) -> Self {
        Self {
            cur,
            kept: Vec::with_capacity(kept),
        }
    }

    /// Appends a kept text without copying it.
    pub(super) fn kept(&mut self, text: &Bytes) {
        self.kept.push((self.cur.len(), text.clone()));
    }

    /// The answer's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.kept.iter().map(|(_, t)| t.len()).sum::<usize>() + self.cur.len()
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON's pieces in order, none copied: slices of the own bytes
    /// and the kept texts, empty ones left out.
    #[must_use]
    pub fn pieces(self) -> Vec<Bytes> {
        let cur = Bytes::from(self.cur);
        let mut out = Vec::with_capacity(self.kept.len() * 2 + 1);
        let mut from = 0;
        for (at, text) in self.kept {
            // No slice for nothing between two kept texts: each slice costs
            // a reference count.
            if at > from {
                out.push(cur.slice(from..at));
            }
            out.push(text);
            from = at;
        }
        if from < cur.len() {
            out.push(cur.slice(from..));
        }
        out.retain(|p| !p.is_empty());
        out
    }

    /// The whole JSON, one copy of every piece (none without kept texts).
    #[must_use]
    pub fn join(self) -> Vec<u8> {
        if self.kept.is_empty() {
            return self.cur;
        }
        let mut out = Vec::with_capacity(self.len());
        let mut from = 0;
        for (at, text) in &self.kept {
            out.extend_from_slice(&self.cur[from..*at]);
            out.extend_from_slice(text);
            from = *at;
        }
        out.extend_from_slice(&self.cur[from..]);
        out
    }
}
