//! Gate answers rendered once per change of their scope. An answer's JSON
//! is kept with the scope's version ([`ScopeKey`]) and its validity (the
//! earliest deadline among the scope's members); every caller gets the same
//! bytes (shared, not copied) until a change touches the scope or the
//! validity runs out, whichever comes first. A miss renders under the
//! fleet's read lock, which other readers share, and serialises after
//! letting go of it. When a deadline has passed that the sweeper has not
//! processed yet, the answer is redone after processing it (under the write
//! lock): a cached go is never served for a node that went stale.
//!
//! The cache holds at most [`MAX_ENTRIES`] selectors; past that it starts
//! again empty, so selectors a client makes up cannot grow it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::Bytes;
use preflight_model::report::{Blocker, GateAnswer, Waiver};
use preflight_model::Verdict;
use serde::Serialize;
use tokio::time::Instant;

use crate::fleet::{FleetError, ScopeKey, Selector};
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

/// [`GateAnswer`] as it goes on the wire, borrowed, with `ready` left out
/// when the caller did not ask for it (`?ready=false`). The fields and
/// their order are those of [`GateAnswer`] (a test compares them).
#[derive(Serialize)]
struct Wire<'a> {
    verdict: Verdict,
    scope: &'a str,
    nodes: usize,
    blockers: &'a [Blocker],
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<&'a [String]>,
    blocked: &'a [String],
    waived: &'a [Waiver],
    #[serde(with = "preflight_model::time::rfc3339")]
    generated_at: SystemTime,
}

fn render(a: &GateAnswer, ready: bool) -> Rendered {
    let wire = Wire {
        verdict: a.verdict,
        scope: &a.scope,
        nodes: a.nodes,
        blockers: &a.blockers,
        ready: ready.then_some(a.ready.as_slice()),
        blocked: &a.blocked,
        waived: &a.waived,
        generated_at: a.generated_at,
    };
    Rendered {
        verdict: a.verdict,
        body: Bytes::from(serde_json::to_vec(&wire).expect("an answer serializes")),
    }
}

enum Looked {
    Hit(Rendered),
    Miss(Option<ScopeKey>, GateAnswer, Instant),
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
            let (answer, until) = f.gate_until(sel, now, SystemTime::now(), ready)?;
            Ok(if until > now {
                Looked::Miss(key, answer, until)
            } else {
                Looked::OutOfDate
            })
        })?;
        let (key, answer, until) = match looked {
            Looked::Hit(r) => return Ok(r),
            Looked::Miss(key, answer, until) => (key, answer, until),
            // Process the deadlines that passed, then answer under the same
            // lock: nothing can fall due between the two.
            Looked::OutOfDate => service.caught_up(|f, now| {
                let key = f.scope_key(sel);
                f.gate_until(sel, now, SystemTime::now(), ready)
                    .map(|(a, until)| (key, a, until))
            })?,
        };
        let rendered = render(&answer, ready);
        if let Some(key) = key {
            self.put(sel, ready, key, until, &rendered);
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use preflight_model::report::GateAnswer;
    use preflight_model::Verdict;

    #[test]
    fn the_wire_form_is_the_answer_with_or_without_ready() {
        let a = GateAnswer {
            verdict: Verdict::NoGo,
            scope: "rack=r1".into(),
            nodes: 2,
            blockers: vec![],
            ready: vec!["a".into()],
            blocked: vec!["b".into()],
            waived: vec![],
            generated_at: SystemTime::UNIX_EPOCH,
        };
        let full = super::render(&a, true);
        assert_eq!(
            std::str::from_utf8(&full.body).expect("utf-8"),
            serde_json::to_string(&a).expect("serializes"),
            "same fields, same order"
        );
        let short: serde_json::Value =
            serde_json::from_slice(&super::render(&a, false).body).expect("json");
        let mut expected = serde_json::to_value(&a).expect("serializes");
        expected.as_object_mut().expect("object").remove("ready");
        assert_eq!(short, expected);
    }
}
