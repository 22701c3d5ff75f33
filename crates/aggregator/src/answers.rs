//! Gate answers rendered once per change of their scope. An answer's JSON
//! is kept with the scope's version ([`ScopeKey`]) and its validity (the
//! earliest deadline among the scope's members); every caller gets the same
//! bytes (shared, not copied) until a change touches the scope or the
//! validity runs out, whichever comes first. A miss writes the JSON under
//! the fleet's read lock, which other readers share ([`crate::fleet::Fleet::gate_json`]:
//! kept per-node fragments, no per-member lookups). When a deadline has passed that the sweeper has not
//! processed yet, the answer is redone after processing it (under the write
//! lock): a cached go is never served for a node that went stale.
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
    /// otherwise.
    ///
    /// # Errors
    /// A scope no node matches ([`FleetError::UnknownScope`]).
    pub fn answer(
        &self,
        service: &Service,
        sel: &Selector,
        ready: bool,
    ) -> Result<Rendered, FleetError> {
        let now = Instant::now();
        let looked = service.read(|f| {
            let key = f.scope_key(sel);
            if let Some(hit) = key.as_ref().and_then(|k| self.get(sel, ready, k, now)) {
                return Ok::<_, FleetError>(Looked::Hit(hit));
            }
            let answer = f.gate_json(sel, now, SystemTime::now(), ready)?;
            Ok(if answer.until > now {
                Looked::Miss(key, answer)
            } else {
                Looked::OutOfDate
            })
        })?;
        let (key, answer) = match looked {
            Looked::Hit(r) => return Ok(r),
            Looked::Miss(key, answer) => (key, answer),
            // Process the deadlines that passed, then answer under the same
            // lock: nothing can fall due between the two.
            Looked::OutOfDate => service.caught_up(|f, now| {
                let key = f.scope_key(sel);
                f.gate_json(sel, now, SystemTime::now(), ready)
                    .map(|a| (key, a))
            })?,
        };
        let rendered = Rendered {
            verdict: answer.verdict,
            body: Bytes::from(answer.body),
        };
        if let Some(key) = key {
            self.put(sel, ready, key, answer.until, &rendered);
        }
        Ok(rendered)
    }
}
