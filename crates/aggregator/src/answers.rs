//! Gate answers rendered once per change of their scope. An answer's JSON
//! is kept with the scope's version ([`ScopeKey`]) and its validity (the
//! earliest deadline among the scope's members); every caller gets the same
//! bytes (shared, not copied) until a change touches the scope or the
//! validity runs out, whichever comes first. A miss writes the JSON under
//! the fleet's read lock, which other readers share ([`crate::fleet::Fleet::gate_json`]:
//! kept per-node fragments and ranges, no per-member lookups); its pieces
//! are kept as they are and sent in frames ([`AnswerBody`]), never joined. When a deadline has passed
//! that the sweeper has not processed yet (checked before rendering), the
//! question processes it under the write lock, briefly, and renders under
//! the read lock again; only when deadlines keep falling due in between
//! does it render under the write lock. A cached go is never served for a
//! node that went stale.
//!
//! The cache holds at most [`MAX_ENTRIES`] selectors; past that it starts
//! again empty, so selectors a client makes up cannot grow it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Bytes;
use http_body::{Frame, SizeHint};
use preflight_model::Verdict;
use tokio::time::Instant;

use crate::fleet::{FleetError, GateJson, ScopeKey, Selector};
use crate::service::Service;

/// Selectors (each with and without the ready list) kept at once.
pub const MAX_ENTRIES: usize = 1024;

/// Times a question ticks and renders under the read lock again before it
/// renders under the write lock.
const CATCH_UP_TRIES: usize = 3;

/// One rendered answer.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The verdict (the HTTP status follows it).
    pub verdict: Verdict,
    /// The JSON body.
    pub body: AnswerBody,
}

/// Bytes an answer's small pieces are joined into at a time ([`Frames`]).
pub const FRAME: usize = 64 * 1024;

/// A piece this long or longer is sent as it is, not copied into a frame
/// ([`Frames`]): a range of blockers (kilobytes) goes from where it is kept
/// to the socket (with `writev` on plain TCP), while names, commas and
/// short ranges are joined so that a write carries tens of kilobytes.
pub const ALONE: usize = 8 * 1024;

/// An answer's JSON as it was rendered: its pieces, shared with the kept
/// ranges of the fleet and with every caller, never joined into one buffer.
/// At 100,000 nodes an answer is megabytes; joining it cost a fresh
/// allocation and a copy before the first byte went out. [`Frames`] sends
/// the long pieces as they are and copies the short ones into frames of
/// about [`FRAME`] bytes as the connection takes them, so the client reads
/// the start while the end is being copied.
#[derive(Debug, Clone)]
pub struct AnswerBody {
    pieces: Arc<[Bytes]>,
    len: usize,
}

impl AnswerBody {
    /// An answer from its pieces, in order; one of at most [`FRAME`]
    /// bytes is joined once here, so that every caller is sent the same
    /// bytes without a copy.
    #[must_use]
    pub fn new(pieces: Vec<Bytes>) -> Self {
        let len = pieces.iter().map(Bytes::len).sum();
        let pieces: Arc<[Bytes]> = if len <= FRAME && pieces.len() > 1 {
            Arc::new([Bytes::from(pieces.concat())])
        } else {
            pieces.into()
        };
        Self { pieces, len }
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole JSON in one buffer (a copy unless it is one piece).
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        match &*self.pieces {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => many.concat().into(),
        }
    }

    /// The answer as an HTTP body with its exact length.
    #[must_use]
    pub fn frames(&self) -> Frames {
        Frames {
            pieces: Arc::clone(&self.pieces),
            next: 0,
            left: self.len as u64,
        }
    }
}

/// An [`AnswerBody`] being sent: a piece of [`ALONE`] bytes or more goes
/// out alone, as it is; consecutive shorter ones are copied into frames of
/// at least [`FRAME`] bytes (shorter before a long piece and at the end).
#[derive(Debug)]
pub struct Frames {
    pieces: Arc<[Bytes]>,
    next: usize,
    left: u64,
}

impl Frames {
    fn next_frame(&mut self) -> Option<Bytes> {
        let first = self.pieces.get(self.next)?;
        self.next += 1;
        let mut end = self.next;
        let mut size = first.len();
        // A long piece goes out alone, as it is.
        while size < FRAME && first.len() < ALONE {
            match self.pieces.get(end) {
                Some(p) if p.len() < ALONE => {
                    size += p.len();
                    end += 1;
                }
                _ => break,
            }
        }
        let frame = if end == self.next {
            first.clone()
        } else {
            let mut buf = Vec::with_capacity(size);
            buf.extend_from_slice(first);
            for p in &self.pieces[self.next..end] {
                buf.extend_from_slice(p);
            }
            self.next = end;
            Bytes::from(buf)
        };
        self.left -= frame.len() as u64;
        Some(frame)
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().next_frame().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

struct Entry {
    key: ScopeKey,
    until: Instant,
    rendered: Rendered,
}

/// The kept answers, by selector and whether they list the ready nodes.
#[derive(Default)]
pub struct GateCache {
    entries: Mutex<HashMap<(Selector, bool), Entry>>,
}

enum Looked {
    Hit(Rendered),
    Miss(Option<ScopeKey>, GateJson),
    OutOfDate,
}

impl GateCache {
    fn get(&self, sel: &Selector, ready: bool, key: &ScopeKey, now: Instant) -> Option<Rendered> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let e = entries.get(&(sel.clone(), ready))?;
        (e.key == *key && now < e.until).then(|| e.rendered.clone())
    }

    fn put(&self, sel: &Selector, ready: bool, key: ScopeKey, until: Instant, r: &Rendered) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&(sel.clone(), ready)) {
            entries.clear();
        }
        entries.insert(
            (sel.clone(), ready),
            Entry {
                key,
                until,
                rendered: r.clone(),
            },
        );
    }

    /// Entries kept (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for `sel`, from the cache when its scope has not changed
    /// and no deadline of its members has come; rendered (and kept)
    /// otherwise. Rendering runs under the fleet's read lock; the kept
    /// pieces of the answer are joined after it is released.
    ///
    /// # Errors
    /// A scope no node matches ([`FleetError::UnknownScope`]).
    pub fn answer(
        &self,
        service: &Service,
        sel: &Selector,
        ready: bool,
    ) -> Result<Rendered, FleetError> {
        for _ in 0..CATCH_UP_TRIES {
            let now = Instant::now();
            let looked = service.read(|f| {
                let key = f.scope_key(sel);
                if let Some(hit) = key.as_ref().and_then(|k| self.get(sel, ready, k, now)) {
                    return Ok::<_, FleetError>(Looked::Hit(hit));
                }
                // A deadline passed that the sweeper has not processed: the
                // answer would be out of date, so do not render it twice.
                if f.next_change().is_some_and(|at| at <= now) {
                    return Ok(Looked::OutOfDate);
                }
                let answer = f.gate_json(sel, now, SystemTime::now(), ready)?;
                Ok(if answer.until > now {
                    Looked::Miss(key, answer)
                } else {
                    Looked::OutOfDate
                })
            })?;
            match looked {
                Looked::Hit(r) => return Ok(r),
                Looked::Miss(key, answer) => return Ok(self.keep(sel, ready, key, answer)),
                // Process the deadlines that passed (under the write lock,
                // briefly), then render under the read lock again.
                Looked::OutOfDate => service.caught_up(|_, _| ()),
            }
        }
        // Deadlines keep falling due between the two locks: answer under
        // the write lock, where nothing can fall due between the tick and
        // the answer.
        let (key, answer) = service.caught_up(|f, now| {
            let key = f.scope_key(sel);
            f.gate_json(sel, now, SystemTime::now(), ready)
                .map(|a| (key, a))
        })?;
        Ok(self.keep(sel, ready, key, answer))
    }

    /// Keeps a rendered answer under its scope's version.
    fn keep(&self, sel: &Selector, ready: bool, key: Option<ScopeKey>, a: GateJson) -> Rendered {
        let rendered = Rendered {
            verdict: a.verdict,
            body: AnswerBody::new(a.body.pieces()),
        };
        if let Some(key) = key {
            self.put(sel, ready, key, a.until, &rendered);
        }
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::{AnswerBody, Bytes, ALONE, FRAME};
    use http_body::Body as _;

    /// Every frame of `body`, checking the announced length as it goes.
    fn frames(body: &AnswerBody) -> Vec<Bytes> {
        let mut f = body.frames();
        let mut out = Vec::new();
        loop {
            let left = f.size_hint().exact().expect("an exact length");
            assert_eq!(f.is_end_stream(), left == 0);
            let Some(frame) = f.next_frame() else { break };
            assert_eq!(f.size_hint().exact(), Some(left - frame.len() as u64));
            out.push(frame);
        }
        assert!(f.is_end_stream());
        out
    }

    #[test]
    fn frames_carry_long_pieces_as_they_are_and_join_the_short_ones() {
        // Commas, names, short ranges, ranges of blockers, and one piece
        // larger than a frame.
        let mut pieces = Vec::new();
        for i in 0..5000u32 {
            let size = [1, 17, 900, 4000, 1, ALONE - 1, ALONE, 20_000][i as usize % 8];
            pieces.push(Bytes::from(vec![b'a' + (i % 26) as u8; size]));
        }
        pieces.insert(2500, Bytes::from(vec![b'!'; 3 * FRAME]));
        let body = AnswerBody::new(pieces.clone());
        let whole = pieces.concat();
        assert_eq!(body.len(), whole.len());
        let sent = frames(&body);
        assert_eq!(sent.concat(), whole);
        assert_eq!(&body.to_bytes()[..], &whole[..]);
        // Every long piece went out as it was (not copied), in a frame of
        // its own; every other frame joins short pieces, up to about a
        // frame (six of them between two long ones here: 13,110 bytes).
        let long = pieces.iter().filter(|p| p.len() >= ALONE).count();
        let as_kept = |f: &Bytes| {
            body.pieces
                .iter()
                .any(|p| p.len() >= ALONE && p.as_ptr() == f.as_ptr() && p.len() == f.len())
        };
        let passed = sent.iter().filter(|f| as_kept(f)).count();
        assert_eq!(passed, long, "long pieces are sent without a copy");
        let joined: Vec<usize> = sent
            .iter()
            .filter(|f| !as_kept(f))
            .map(Bytes::len)
            .collect();
        assert!(joined.iter().all(|&n| n < FRAME + ALONE), "{joined:?}");
        assert_eq!(
            joined.len(),
            long / 2 + 1,
            "one frame per run of short pieces"
        );
    }

    #[test]
    fn an_empty_or_single_piece_answer_is_sent_as_it_is() {
        assert!(frames(&AnswerBody::new(Vec::new())).is_empty());
        let one = Bytes::from_static(b"{\"verdict\":\"go\"}");
        let body = AnswerBody::new(vec![one.clone()]);
        let sent = frames(&body);
        assert_eq!(sent, vec![one.clone()]);
        assert_eq!(sent[0].as_ptr(), one.as_ptr());
        assert_eq!(body.to_bytes().as_ptr(), one.as_ptr());
    }
}
