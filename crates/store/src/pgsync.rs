//! Acknowledged changes that survive losing the PostgreSQL primary. Waiver,
//! inventory and audit changes are committed with `synchronous_commit =
//! remote_apply`: with a synchronous standby configured
//! (`synchronous_standby_names`, Patroni's `synchronous_mode`) the commit
//! returns once a standby has applied it, so a failover to that standby
//! keeps it; without one PostgreSQL treats it as `on` (flushed on the
//! primary). A standby that is gone would hold the commit forever, so the
//! wait is bounded by [`SYNC_TIMEOUT`]: then the wait is cancelled, and the
//! change, though committed on the primary, is refused as
//! [`StoreError::NotSynchronous`]-like error text (never acknowledged).
//!
//! PostgreSQL answers a cancelled wait with a `WARNING` and a successful
//! `COMMIT`; the warning is the only sign, so every connection of a store
//! keeps the warnings it is sent ([`Notices`]).
//!
//! Also here: whether the primary has a synchronous standby at all
//! ([`PgStore::synchronous`]), and the re-applied end of a waiver whose
//! removal a failover lost ([`PgStore::reapply_end`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use postgres::{CancelToken, NoTls, Transaction};

use super::pgconf::PG_CHANNEL;
use preflight_model::report::Waiver;

use super::pgconf::PgSettings;
use super::pgtls::{client_config, SslMode};
use super::postgres::PgStore;
use super::rows::{waiver_detail, Audit};
use super::{millis, Store, StoreError};

/// Longest wait for a synchronous standby to apply a change before the
/// change is refused (well within the API's request timeout, and short
/// enough that a refused change does not hold the store for long).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Warnings the server sent on one connection, oldest first.
#[derive(Clone, Default)]
pub(super) struct Notices(Arc<Mutex<Vec<String>>>);

impl Notices {
    /// Makes connections of `cfg` keep their warnings here (other notices
    /// are only logged, as the driver would).
    pub(super) fn attach(&self, cfg: &mut postgres::Config) {
        let kept = self.0.clone();
        cfg.notice_callback(move |n| {
            if n.severity() == "WARNING" {
                let text = match n.detail() {
                    Some(d) => format!("{} ({d})", n.message()),
                    None => n.message().to_owned(),
                };
                kept.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(text);
            } else {
                tracing::debug!(
                    severity = n.severity(),
                    message = n.message(),
                    "PostgreSQL notice"
                );
            }
        });
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Asks the server to cancel what the connection of `token` runs.
fn cancel(settings: &PgSettings, token: &CancelToken) {
    let r = match settings.sslmode {
        SslMode::Disable => token.cancel_query(NoTls).map_err(|e| e.to_string()),
        mode => client_config(mode, settings.ca_file.as_ref()).and_then(|tls| {
            token
                .cancel_query(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .map_err(|e| e.to_string())
        }),
    };
    if let Err(e) = r {
        tracing::warn!(db = %settings.display, error = %e, "cannot cancel the wait for a synchronous standby");
    }
}

/// Commits `tx`, waiting at most `timeout` for synchronous standbys.
/// `Ok(None)`: committed and, where one is configured, on a synchronous
/// standby. `Ok(Some(why))`: committed on the primary only (the wait was
/// cancelled, or the server warned): the caller must not acknowledge it.
pub(super) fn commit_bounded(
    tx: Transaction<'_>,
    token: CancelToken,
    settings: &PgSettings,
    notices: &Notices,
    timeout: Duration,
) -> Result<Option<String>, postgres::Error> {
    let (done, wait) = mpsc::channel::<()>();
    let fired = Arc::new(AtomicBool::new(false));
    let timer = {
        let (fired, settings) = (fired.clone(), settings.clone());
        std::thread::Builder::new()
            .name("pg-sync-timer".into())
            .spawn(move || {
                if wait.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout) {
                    fired.store(true, Ordering::SeqCst);
                    cancel(&settings, &token);
                }
            })
    };
    notices.take();
    let r = tx.commit();
    drop(done);
    match timer {
        Ok(t) => {
            let _ = t.join();
        }
        // No timer: the commit was not bounded; refuse it rather than
        // acknowledge what may not be on a standby.
        Err(e) => {
            r?;
            return Ok(Some(format!("cannot start the commit timer: {e}")));
        }
    }
    r?;
    let warnings = notices.take();
    if fired.load(Ordering::SeqCst) || !warnings.is_empty() {
        let mut why = format!(
            "not yet on a synchronous standby after {} s (committed on the primary only, so a failover could lose it): not acknowledged",
            timeout.as_secs()
        );
        if !warnings.is_empty() {
            why.push_str(&format!("; the server said: {}", warnings.join("; ")));
        }
        return Ok(Some(why));
    }
    Ok(None)
}

impl PgStore {
    /// Runs `f` in one transaction that also announces `what` to every
    /// replica (delivered only if it commits), acknowledged only once on a
    /// synchronous standby where one is configured (see [`super::pgsync`]).
    pub(super) fn change<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        match self.change_bounded(what, f)? {
            (v, None) => Ok(v),
            (_, Some(why)) => Err(self.unsynced(what, why)),
        }
    }

    /// The error of a change committed on the primary only.
    pub(super) fn unsynced(&self, what: &str, why: String) -> StoreError {
        StoreError::Postgres {
            db: self.settings().display.clone(),
            message: format!("the {what} change is {why}"),
        }
    }

    /// [`PgStore::change`] that returns what `f` returned even when the
    /// commit did not reach a synchronous standby in time, with the reason
    /// (committed on the primary only).
    pub(super) fn change_bounded<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<(T, Option<String>), StoreError> {
        // The payload names the replica, whose own listener skips it: its
        // fleet already has the change, and a full reload per own write
        // (every new node) would stall it under load.
        let payload = format!("{what} {}", self.settings().origin);
        let (settings, notices) = (self.settings().clone(), self.notices.clone());
        self.run(|c| {
            let token = c.cancel_token();
            let mut tx = c.transaction()?;
            // Inventory and waivers are acknowledged only once on disk and
            // applied on a synchronous standby (where one is configured),
            // whatever the server's default. txid_current(): a transaction
            // that changed nothing (a row already ended) still waits for
            // the standby to have everything before it.
            tx.batch_execute(
                "SET LOCAL synchronous_commit TO remote_apply; SELECT txid_current()",
            )?;
            let v = f(&mut tx)?;
            tx.execute("SELECT pg_notify($1, $2)", &[&PG_CHANNEL, &payload])?;
            let unsynced = commit_bounded(tx, token, &settings, &notices, SYNC_TIMEOUT)?;
            Ok((v, unsynced))
        })
    }

    pub(super) fn ping(&mut self) -> Result<(), StoreError> {
        // A transaction that gets an id writes its commit to the WAL, and
        // waits like a waiver change for a synchronous standby: not ready
        // while such changes would be refused.
        let (settings, notices) = (self.settings().clone(), self.notices.clone());
        let unsynced = self.run(|c| {
            let token = c.cancel_token();
            let mut tx = c.transaction()?;
            tx.batch_execute(
                "SET LOCAL synchronous_commit TO remote_apply; SELECT txid_current()",
            )?;
            commit_bounded(tx, token, &settings, &notices, SYNC_TIMEOUT)
        })?;
        match unsynced {
            None => Ok(()),
            Some(why) => Err(self.unsynced("readiness test", why)),
        }
    }

    /// Whether an acknowledged change is on a synchronous standby: the
    /// primary names synchronous standbys and one of them streams in
    /// `sync` or `quorum` state. Without the `pg_monitor` role (or
    /// superuser) `pg_stat_replication` hides the state and this says
    /// `false`: the warning errs on the side of telling.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn synchronous(&mut self) -> Result<bool, StoreError> {
        self.run(|c| {
            c.query_one(
                "SELECT current_setting('synchronous_standby_names') <> ''
                   AND EXISTS (SELECT 1 FROM pg_stat_replication
                               WHERE sync_state IN ('sync', 'quorum'))",
                &[],
            )
            .map(|r| r.get(0))
        })
    }

    /// Ends `w` again where the database has it in force after this replica
    /// removed it (a failover lost the removal), audited as `waiver.remove`
    /// with the reason. Returns whether a row was ended.
    pub(super) fn reapply_end(
        &mut self,
        w: &Waiver,
        actor: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut detail = waiver_detail(w);
        detail["reapplied"] = serde_json::json!(
            "re-applied after a failover: this replica had removed it, the new primary had it in force"
        );
        let audit = Audit::new(at, actor, "waiver.remove", &detail);
        self.change("waivers", |tx| {
            let ended = tx.execute(
                "UPDATE waivers SET ended_at=$1, ended_by=$2 WHERE id=$3 AND created_at=$4 AND ended_at IS NULL",
                &[&millis(at), &actor, &w.id, &millis(w.created_at)],
            )?;
            if ended == 0 {
                return Ok(false);
            }
            Self::audit_tx(tx, &audit)?;
            Ok(true)
        })
    }

    /// Ends waiver `id`, created here but refused (committed on the primary
    /// only): other replicas were told of it on commit and must not keep
    /// it. Not waited for on standbys (it is refused there too, and a
    /// failover drops the waiver with it), so it is visible at once.
    pub(super) fn end_refused(&mut self, id: i64, at: SystemTime) -> Result<(), StoreError> {
        let detail = serde_json::json!({
            "id": id,
            "reason": "refused: not on a synchronous standby in time",
        });
        let audit = Audit::new(at, "aggregator", "waiver.remove", &detail);
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit TO local")?;
            tx.execute(
                "UPDATE waivers SET ended_at=$1, ended_by='aggregator' WHERE id=$2 AND ended_at IS NULL",
                &[&millis(at), &id],
            )?;
            Self::audit_tx(&mut tx, &audit)?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&PG_CHANNEL, &"waivers refused"],
            )?;
            tx.commit()
        })
    }
}

impl Store {
    /// Whether acknowledged changes survive a failover: for PostgreSQL,
    /// [`PgStore::synchronous`]; a SQLite file has no standby to fail over
    /// to, and its commits are on its disk: `true`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn synchronous(&mut self) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(p) => p.synchronous(),
        }
    }

    /// Ends `w` again, by `actor`, where the store has it in force though
    /// this replica removed it (see [`PgStore`]'s failover notes); audited
    /// as `waiver.remove`, re-applied. Returns whether a row was ended.
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn reapply_end(
        &mut self,
        w: &Waiver,
        actor: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.end_waiver(w, actor, "waiver.remove", at),
            Store::Postgres(p) => p.reapply_end(w, actor, at),
        }
    }
}
