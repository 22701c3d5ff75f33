//! Surviving a failover of the shared PostgreSQL. With asynchronous
//! standbys (or a synchronous one that was cut), a waiver removal this
//! replica acknowledged can be missing on the standby that is promoted, and
//! the next reload would read the waiver as in force again: a go an
//! operator had revoked. So every removal made here, and every end made
//! through another replica that a reload brought here, is remembered until
//! the waiver would have expired anyway, and a reload (or a start) that
//! finds one of them in force in the store ends it there again (audited as
//! re-applied after a failover) instead of taking it into the fleet. The
//! memory is written to a local file (`removals`, in `[aggregator]
//! state_dir`) before a removal is acknowledged, so that replicas that all
//! restart before a reload re-applied the end still know it (see
//! docs/operations.md, "Failover of the database").
//!
//! Also here: whether acknowledged changes are on a synchronous standby
//! (the `preflight_aggregator_store_synchronous` gauge, the `/readyz`
//! detail, and a warning when they are not).

use std::time::SystemTime;

use preflight_model::report::Waiver;

use super::removals::{ms, time, Entry};
use super::{lock, PendingEnd, Service, ServiceError};
use crate::store::{Store, StoreError};

/// A waiver removal made through (or followed by) this replica.
pub(super) type Removal = Entry;

impl Removal {
    /// The removal of `w` by `actor`.
    pub(super) fn of(w: &Waiver, actor: &str) -> Self {
        Self {
            id: w.id,
            created_at: ms(w.created_at),
            expires_at: ms(w.expires_at),
            actor: actor.to_owned(),
        }
    }

    /// The waiver's id and creation time (ms): what names it on any
    /// primary.
    pub(super) fn key(&self) -> (i64, i64) {
        (self.id, self.created_at)
    }

    /// Whether `w` (read from the store) is the waiver removed here: the
    /// same id and creation time (an id alone could be handed out again by
    /// a new primary whose sequence lost the last values).
    pub(super) fn is(&self, w: &Waiver) -> bool {
        self.id == w.id && self.created_at == ms(w.created_at)
    }
}

impl Service {
    /// Remembers that `waiver` was removed here by `actor` (in memory:
    /// [`Service::write_removals`] makes it durable); returns the removal.
    pub(super) fn remember_removal(&self, waiver: &Waiver, actor: &str) -> Removal {
        let r = Removal::of(waiver, actor);
        lock(&self.removed)
            .entry(r.key())
            .or_insert_with(|| r.clone());
        r
    }

    /// Whether `w` was removed through this replica (and must not be
    /// taken into the fleet from the store).
    pub(super) fn removed_here(&self, w: &Waiver) -> bool {
        lock(&self.removed).contains_key(&(w.id, ms(w.created_at)))
    }

    /// Appends `new` (and the removals an earlier write failed to add) to
    /// the file of removals and syncs it; without a file (a service
    /// restored without one), nothing to do: `Ok(false)`. Blocking. On
    /// failure `new` is kept for [`Service::retry_removals`].
    ///
    /// # Errors
    /// The file and the error, as a message.
    pub(super) fn write_removals(&self, new: Vec<Removal>) -> Result<bool, String> {
        let mut log = lock(&self.removal_log);
        let Some(log) = log.as_mut() else {
            return Ok(false);
        };
        let mut unwritten = lock(&self.unwritten);
        for r in new {
            if !unwritten
                .iter()
                .any(|x| x.id == r.id && x.created_at == r.created_at)
            {
                unwritten.push(r);
            }
        }
        if unwritten.is_empty() {
            return Ok(true);
        }
        let now = ms(crate::clock::wall());
        let owed: std::collections::HashSet<(i64, i64)> =
            unwritten.iter().map(Removal::key).collect();
        let live: Vec<Removal> = lock(&self.removed)
            .values()
            .filter(|r| r.expires_at > now && !owed.contains(&r.key()))
            .cloned()
            .collect();
        log.append(&unwritten, &live).map_err(|e| e.to_string())?;
        unwritten.clear();
        Ok(true)
    }

    /// [`Service::write_removals`] on the blocking pool; a failure is
    /// logged.
    pub(super) async fn persist_removals(&self, new: Vec<Removal>) -> Result<bool, String> {
        let s = self.clone();
        let r = tokio::task::spawn_blocking(move || s.write_removals(new))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = &r {
            tracing::error!(error = %e, "cannot write the waiver removal to the local file; retried every second");
        }
        r
    }

    /// Writes the removals an earlier write could not (every second, from
    /// [`Service::sweep`]).
    pub(super) async fn retry_removals(&self) {
        if self.unwritten_removals() > 0 && self.persist_removals(Vec::new()).await.is_ok() {
            tracing::info!("the waiver removals owed to the local file are written");
        }
    }

    /// How many removals wait to be written to the local file.
    pub(super) fn unwritten_removals(&self) -> usize {
        lock(&self.unwritten).len()
    }

    /// Takes the waivers in force in the store that this replica removed
    /// out of `active`, and ends them in the store again. Removals of
    /// waivers past their expiry are forgotten (the store does not count
    /// those in force). An end the store refuses is owed like any other
    /// ([`Service::sweep`] retries it).
    pub(super) fn reapply_removals(
        &self,
        store: &mut Store,
        active: Vec<Waiver>,
        wall: SystemTime,
    ) -> Vec<Waiver> {
        let in_force: std::collections::HashSet<(i64, i64)> =
            active.iter().map(|w| (w.id, ms(w.created_at))).collect();
        let lost: Vec<Removal> = {
            let mut removed = lock(&self.removed);
            removed.retain(|_, r| time(r.expires_at) > wall);
            in_force
                .iter()
                .filter_map(|k| removed.get(k).cloned())
                .collect()
        };
        if lost.is_empty() {
            return active;
        }
        for r in &lost {
            let Some(w) = active.iter().find(|w| r.is(w)) else {
                continue;
            };
            self.reapply_removal(store, w, &r.actor, wall);
        }
        active
            .into_iter()
            .filter(|w| !lost.iter().any(|r| r.is(w)))
            .collect()
    }

    /// Ends `w`, in force in the store but removed here by `actor`, in the
    /// store again (audited as re-applied after a failover). An end the
    /// store refuses is owed like any other ([`Service::sweep`] retries
    /// it).
    pub(super) fn reapply_removal(
        &self,
        store: &mut Store,
        w: &Waiver,
        actor: &str,
        wall: SystemTime,
    ) {
        tracing::warn!(
            waiver = w.id,
            node = %w.node,
            "the database has a waiver in force that this aggregator removed (a failover to a standby that lacked the removal); removing it again"
        );
        if let Err(e) = store.reapply_end(w, actor, wall) {
            tracing::error!(waiver = w.id, error = %e, "cannot end the waiver again; it stays out of force here and is retried");
            if !self.end_pending(w.id) {
                self.defer_end(PendingEnd {
                    waiver: w.clone(),
                    actor: actor.to_owned(),
                    action: "waiver.remove",
                    at: wall,
                });
            }
        }
    }

    /// Records whether acknowledged changes are on a synchronous standby:
    /// the gauge, and a warning when that turns false (or is first found
    /// false). An error counts as false.
    pub(super) fn note_synchronous(&self, r: Result<bool, StoreError>) -> bool {
        let now = r.as_ref().is_ok_and(|s| *s);
        self.metrics.store_synchronous.set(i64::from(now));
        let before = lock(&self.synchronous).replace(now);
        if !now && before != Some(false) {
            match r {
                Ok(_) => tracing::warn!(
                    "the PostgreSQL primary has no synchronous standby streaming: a waiver removal acknowledged now can be lost by a failover (this aggregator re-applies the removals it made; see docs/operations.md, \"Failover of the database\")"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot tell whether the PostgreSQL primary has a synchronous standby; counted as not"),
            }
        } else if now && before == Some(false) {
            tracing::info!("the PostgreSQL primary has a synchronous standby again");
        }
        now
    }

    /// Whether acknowledged changes are on a synchronous standby (always
    /// for SQLite), asked of the store now (for `/readyz`).
    ///
    /// # Errors
    /// Store failure.
    pub async fn store_synchronous(&self) -> Result<bool, ServiceError> {
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || lock(&store).synchronous())
            .await
            .map_err(|e| ServiceError::Store(e.to_string()))?;
        let failed = r.as_ref().err().map(ToString::to_string);
        let now = self.note_synchronous(r);
        match failed {
            Some(e) => Err(ServiceError::Store(e)),
            None => Ok(now),
        }
    }
}
