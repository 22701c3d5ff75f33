//! Surviving a failover of the shared PostgreSQL. With asynchronous
//! standbys (or a synchronous one that was cut), a waiver removal this
//! replica acknowledged can be missing on the standby that is promoted, and
//! the next reload would read the waiver as in force again: a go an
//! operator had revoked. So every removal made here, and every end made
//! through another replica that a reload brought here, is remembered until
//! the waiver would have expired anyway, and a reload that finds one of
//! them in force in the store ends it there again (audited as re-applied
//! after a failover) instead of taking it into the fleet. The memory is
//! this process's: one replica that keeps running is enough; replicas that
//! all restart before a reload re-applied the end forget it (see
//! docs/operations.md, "Failover of the database").
//!
//! Also here: whether acknowledged changes are on a synchronous standby
//! (the `preflight_aggregator_store_synchronous` gauge, the `/readyz`
//! detail, and a warning when they are not).

use std::time::{SystemTime, UNIX_EPOCH};

use preflight_model::report::Waiver;

use super::{lock, PendingEnd, Service, ServiceError};
use crate::store::{Store, StoreError};

/// A waiver removal made through this replica.
#[derive(Debug, Clone)]
pub(super) struct Removal {
    waiver: Waiver,
    actor: String,
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl Removal {
    /// Whether `w` (read from the store) is the waiver removed here: the
    /// same id and creation time (an id alone could be handed out again by
    /// a new primary whose sequence lost the last values).
    fn is(&self, w: &Waiver) -> bool {
        self.waiver.id == w.id && millis(self.waiver.created_at) == millis(w.created_at)
    }
}

impl Service {
    /// Remembers that `waiver` was removed here by `actor`.
    pub(super) fn remember_removal(&self, waiver: &Waiver, actor: &str) {
        lock(&self.removed).push(Removal {
            waiver: waiver.clone(),
            actor: actor.to_owned(),
        });
    }

    /// Whether `w` was removed through this replica (and must not be
    /// taken into the fleet from the store).
    pub(super) fn removed_here(&self, w: &Waiver) -> bool {
        lock(&self.removed).iter().any(|r| r.is(w))
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
        let lost: Vec<Removal> = {
            let mut removed = lock(&self.removed);
            removed.retain(|r| r.waiver.expires_at > wall);
            removed
                .iter()
                .filter(|r| active.iter().any(|w| r.is(w)))
                .cloned()
                .collect()
        };
        if lost.is_empty() {
            return active;
        }
        for r in &lost {
            tracing::warn!(
                waiver = r.waiver.id,
                node = %r.waiver.node,
                "the database has a waiver in force that this aggregator removed (a failover to a standby that lacked the removal); removing it again"
            );
            match store.reapply_end(&r.waiver, &r.actor, wall) {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(waiver = r.waiver.id, error = %e, "cannot end the waiver again; it stays out of force here and is retried");
                    if !self.end_pending(r.waiver.id) {
                        self.defer_end(PendingEnd {
                            waiver: r.waiver.clone(),
                            actor: r.actor.clone(),
                            action: "waiver.remove",
                            at: wall,
                        });
                    }
                }
            }
        }
        active
            .into_iter()
            .filter(|w| !lost.iter().any(|r| r.is(w)))
            .collect()
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
