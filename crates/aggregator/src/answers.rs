//! Gate answers rendered once per change of their scope. An answer's JSON
//! is kept with the scope's version ([`ScopeKey`]) and its validity (the
//! earliest deadline among the scope's members); every caller gets the same
//! bytes (shared, not copied) until a change touches the scope or the
//! validity runs out, whichever comes first. A miss writes the JSON under
//! the fleet's read lock, which other readers share ([`crate::fleet::Fleet::gate_json`]:
//! kept per-node fragments and ranges, no per-member lookups), and joins
//! its kept pieces after the lock is released. When a deadline has passed
//! that the sweeper has not processed yet (checked before rendering), the
//! question processes it under the write lock, briefly, and renders under
//! the read lock again; only when deadlines keep falling due in between
//! does it render under the write lock. A cached go is never served for a
//! node that went stale.
//!
//! The cache holds at most [`MAX_ENTRIES`] selectors; past that it starts
//! again empty, so selectors a client makes up cannot grow it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::Bytes;
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
    pub body: Bytes,
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

    /// Joins a rendered answer's pieces (outside the fleet's lock) and
    /// keeps it under its scope's version.
    fn keep(&self, sel: &Selector, ready: bool, key: Option<ScopeKey>, a: GateJson) -> Rendered {
        let rendered = Rendered {
            verdict: a.verdict,
            body: Bytes::from(a.body.join()),
        };
        if let Some(key) = key {
            self.put(sel, ready, key, a.until, &rendered);
        }
        rendered
    }
}
