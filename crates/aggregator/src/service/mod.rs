//! The one place that changes the fleet and the store together. Every change
//! is written to the store first and applied to the in-memory fleet only once
//! the store has it, and a change the fleet accepted ahead of its store write
//! (a new node from its first report) is rolled back when the write fails: a
//! restart never resurrects or loses what an answer already said. The store
//! is blocking (SQLite, or PostgreSQL through its synchronous client), so
//! every call into it runs on `spawn_blocking`. With a store shared by
//! several replicas, changes made through the others are followed by
//! [`crate::replicas`], which calls [`Service::reload`] (in `reload`; the
//! report path is in `report`).
//!
//! Handlers hold a [`Service`] and never sequence store, fleet and rollback
//! themselves; reads of the fleet go through [`Service::read`]. The fleet
//! sits behind a read-write lock: gate answers read it side by side; a
//! report copies its state before it joins the applier's queue (`apply`):
//! reports are applied in batches by whichever handler gets the write lock,
//! which is taken only when nobody holds the lock (for up to
//! `apply::PATIENCE`), so a gate question does not queue behind a report
//! that queues behind another question.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use preflight_model::names::{check_labels, node_key};
use preflight_model::report::Waiver;
use tokio::time::Instant;

use crate::fleet::{Fleet, FleetError};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, NodeWriter, PendingReport, Store, StoreError};

mod apply;
mod failover;
mod maintenance;
mod reload;
mod removals;
mod report;

pub use self::maintenance::{LEASE_TICK, MAX_LEASE_TEXT};
pub use self::reload::ReloadCounts;
pub use self::removals::{LogError, RemovalLog, MAX_REMOVALS};

/// Why a change or a store read failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The fleet refused it (nothing was written).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The store could not be read or written (the fleet is unchanged).
    #[error("{0}")]
    Store(String),
    /// The change is in force in memory, but the store could not record it
    /// yet (it is retried; until then a restart would undo it).
    #[error("{0}")]
    Unrecorded(String),
}

/// A waiver's end that is in force in memory and waits for the store.
#[derive(Debug, Clone)]
struct PendingEnd {
    waiver: Waiver,
    actor: String,
    action: &'static str,
    at: SystemTime,
}

/// The fleet in memory, the store behind it, and the channel to the
/// report writer. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Service {
    fleet: Arc<RwLock<Fleet>>,
    store: Arc<Mutex<Store>>,
    reports_tx: Sender<PendingReport>,
    /// Reports waiting for the write lock, applied in batches.
    applier: apply::Applier,
    /// Group commit of agent-registered nodes (PostgreSQL only).
    nodes: Option<NodeWriter>,
    metrics: Metrics,
    /// Waiver ends the store refused: retried by [`Service::sweep`].
    pending_ends: Arc<Mutex<Vec<PendingEnd>>>,
    /// Waivers removed through this replica, never taken back from the
    /// store (`failover`), by id and creation time (ms).
    removed: Arc<Mutex<HashMap<(i64, i64), failover::Removal>>>,
    /// The local file those removals are written to (`None`: memory only).
    removal_log: Arc<Mutex<Option<RemovalLog>>>,
    /// Removals the file could not take yet: retried by [`Service::sweep`].
    unwritten: Arc<Mutex<Vec<failover::Removal>>>,
    /// Whether the store is shared with other replicas (PostgreSQL), where
    /// a failover can lose what it acknowledged.
    shared: bool,
    /// Whether acknowledged changes were last found on a synchronous
    /// standby (`None`: not asked yet).
    synchronous: Arc<Mutex<Option<bool>>>,
    /// Waivers that expired in a tick a reader ([`Service::caught_up`]) or
    /// a report batch ran: the sweeper records them.
    expiries: Arc<apply::Expiries>,
}

/// How often owed waiver expiries are retried while the store is down.
pub const EXPIRY_RETRY: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock poisons it; the data is still the last
    // consistent state we wrote, so keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

impl Service {
    /// Opens the store and rebuilds the in-memory fleet from it: the
    /// configured inventory (written to the store), the stored inventory,
    /// waivers with the time they have left (see
    /// [`crate::clock::waiver_left`]: a wall clock that is behind never
    /// revives one; those that fell due while the aggregator was down are
    /// ended and audited now), last reports for display with the boot ids
    /// each node's agent left behind (their replays stay refused), but every node
    /// silent until it reports again (fail-closed after a restart). `scopes` get
    /// kept counts. Returns the receiver for [`Service::spawn_report_writer`].
    /// The waiver removals it acknowledges are kept in memory only: see
    /// [`Service::restore_with_log`].
    ///
    /// # Errors
    /// Store errors, invalid inventory.
    pub fn restore(
        store: Store,
        fleet: Fleet,
        inventory: &[(String, BTreeMap<String, String>)],
        scopes: &[crate::fleet::Selector],
        metrics: Metrics,
    ) -> Result<(Self, Receiver<PendingReport>), RestoreError> {
        Self::restore_with_log(store, fleet, inventory, scopes, metrics, None)
    }

    /// [`Service::restore`] with the file of acknowledged waiver removals
    /// (`log`, opened with [`RemovalLog::open`]): the removals it holds
    /// are never taken back from the store, and a waiver the store has in
    /// force that one of them removed (a failover to a standby that lacked
    /// the removal, before any replica re-applied it) is ended there again
    /// now; every removal acknowledged from now on is written to it first.
    ///
    /// # Errors
    /// Store errors, invalid inventory.
    pub fn restore_with_log(
        mut store: Store,
        mut fleet: Fleet,
        inventory: &[(String, BTreeMap<String, String>)],
        scopes: &[crate::fleet::Selector],
        metrics: Metrics,
        mut log: Option<RemovalLog>,
    ) -> Result<(Self, Receiver<PendingReport>), RestoreError> {
        let removed: HashMap<(i64, i64), failover::Removal> = log
            .as_mut()
            .map(RemovalLog::take_loaded)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.key(), r))
            .collect();
        let mut reapplied = Vec::new();
        let now = Instant::now();
        let wall = crate::clock::wall();
        // Node names are kept in lower case (`node_key`), whatever case an
        // older version stored or the configuration spells them in.
        let key = |n: &str| node_key(n).map_err(FleetError::from);
        let mut configured = std::collections::HashSet::new();
        for (name, labels) in inventory {
            let name = key(name)?;
            fleet.upsert_node(&name, labels.clone(), now, wall)?;
            store.upsert_node(&name, labels, "config", wall)?;
            configured.insert(name);
        }
        for (name, labels) in store.nodes()? {
            let name = key(&name)?;
            if !configured.contains(&name) {
                fleet.upsert_node(&name, labels, now, wall)?;
            }
        }
        for name in store.agent_nodes()? {
            let name = key(&name)?;
            if !configured.contains(&name) {
                fleet.mark_agent_labelled(&name);
            }
        }
        let mut last_up = None;
        for r in store.reports()? {
            last_up = last_up.max(Some(r.received_at));
            let node = key(&r.node)?;
            fleet.restore_retired_boots(&node, &r.retired_boots);
            fleet.restore_report(&node, r.boot_id, r.seq, r.state, r.received_at);
        }
        let boot = crate::clock::BootAnchor::now();
        for (mut w, anchor) in store.open_waivers()? {
            if let Some(r) = removed.get(&(w.id, removals::ms(w.created_at))) {
                // Removed here before a restart, yet in force in the store.
                reapplied.push((w, r.actor.clone()));
                continue;
            }
            let restored = crate::clock::restore_waiver(
                w.created_at,
                w.expires_at,
                anchor.as_ref(),
                boot.as_ref(),
                wall,
                last_up,
            );
            match restored {
                crate::clock::Restored::Ended { at, why } => {
                    tracing::info!(waiver = w.id, node = %w.node, "waiver ended at start: {why}");
                    store.end_waiver(&w, "aggregator", "waiver.expire", at)?;
                }
                crate::clock::Restored::Left(left) => {
                    w.node = key(&w.node)?;
                    if fleet.status(&w.node).is_some() {
                        fleet.add_waiver(w, left, now);
                    }
                }
            }
        }
        for s in scopes {
            fleet.track_scope(s);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let nodes = store.shared().map(NodeWriter::spawn);
        let shared = nodes.is_some();
        let fleet = Arc::new(RwLock::new(fleet));
        let expiries = Arc::<apply::Expiries>::default();
        let applier = apply::Applier::new(fleet.clone(), Arc::clone(&expiries));
        let service = Self {
            nodes,
            fleet,
            store: Arc::new(Mutex::new(store)),
            reports_tx: tx,
            applier,
            metrics,
            pending_ends: Arc::default(),
            removed: Arc::new(Mutex::new(removed)),
            removal_log: Arc::new(Mutex::new(log)),
            unwritten: Arc::default(),
            shared,
            synchronous: Arc::default(),
            expiries,
        };
        {
            let mut store = lock(&service.store);
            for (w, actor) in &reapplied {
                service.reapply_removal(&mut store, w, actor, wall);
            }
        }
        let sync = lock(&service.store).synchronous();
        service.note_synchronous(sync);
        Ok((service, rx))
    }

    /// Runs `f` on the fleet under its read lock (other reads run side by
    /// side; changes wait).
    pub fn read<R>(&self, f: impl FnOnce(&Fleet) -> R) -> R {
        f(&read(&self.fleet))
    }

    /// Runs `f` on the fleet once every deadline that has passed is
    /// processed (as the sweeper would a moment later), under the write
    /// lock: for a reader that found the fleet behind the clock. Waivers
    /// that expire here are handed to the sweeper to record.
    pub fn caught_up<R>(&self, f: impl FnOnce(&Fleet, Instant) -> R) -> R {
        let mut fleet = write(&self.fleet);
        let now = Instant::now();
        self.expiries.tick(&mut fleet, now);
        f(&fleet, now)
    }

    /// Runs a store call on the blocking pool; a failure is counted, logged
    /// and returned as [`ServiceError::Store`].
    async fn store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, ServiceError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&mut lock(&store))).await {
            Ok(r) => self.recorded(r),
            Err(e) => self.recorded(Err(e.to_string())),
        }
    }

    /// Counts and logs a store call's outcome.
    fn recorded<R, E: ToString>(&self, r: Result<R, E>) -> Result<R, ServiceError> {
        let e = match r {
            Ok(r) => {
                self.metrics.store_up.set(1);
                return Ok(r);
            }
            Err(e) => e.to_string(),
        };
        self.metrics.store_up.set(0);
        self.metrics.store_errors.inc();
        tracing::error!(error = %e, "store error");
        Err(ServiceError::Store(e))
    }

    /// Adds or relabels a node (store, then fleet).
    ///
    /// # Errors
    /// Bad name or labels (nothing written), store failure.
    pub async fn put_node(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        let name = &node_key(name).map_err(FleetError::from)?;
        check_labels(&labels).map_err(FleetError::from)?;
        let wall = crate::clock::wall();
        let (n, l) = (name.clone(), labels.clone());
        self.store(move |s| s.upsert_node(&n, &l, "api", wall))
            .await?;
        write(&self.fleet).upsert_node(name, labels, Instant::now(), wall)?;
        Ok(())
    }

    /// Removes a node (store, then fleet).
    ///
    /// # Errors
    /// No such node, store failure.
    pub async fn delete_node(&self, name: &str) -> Result<(), ServiceError> {
        let name = &node_key(name).map_err(FleetError::from)?;
        if read(&self.fleet).status(name).is_none() {
            return Err(FleetError::NoSuchNode(name.to_owned()).into());
        }
        let n = name.to_owned();
        self.store(move |s| s.remove_node(&n, "api", crate::clock::wall()))
            .await?;
        write(&self.fleet).remove_node(name)?;
        Ok(())
    }

    /// Checks a waiver, stores it (which assigns its id), then activates it.
    ///
    /// # Errors
    /// Invalid waiver (nothing written), store failure.
    pub async fn add_waiver(&self, mut w: Waiver) -> Result<Waiver, ServiceError> {
        w.node = node_key(&w.node).map_err(FleetError::from)?;
        // The clock the handler derived the expiry from, so that a duration
        // of exactly the cap is accepted.
        read(&self.fleet).check_waiver(&w, w.created_at)?;
        let asked = Instant::now();
        let w = self.store(move |s| s.insert_waiver(w)).await?;
        // Its length as granted, counted on the monotonic clock from the
        // request: a wall-clock step does not stretch it.
        let left = w
            .expires_at
            .duration_since(w.created_at)
            .unwrap_or_default();
        write(&self.fleet).add_waiver(w.clone(), left, asked);
        Ok(w)
    }

    /// Ends an active waiver on behalf of `actor`: out of the fleet at once
    /// (fail towards no-go: an operator can always revoke), then written to
    /// the local file of removals (`failover`) and recorded in the store.
    /// When the store refuses, or with a shared store the file, the end
    /// stays in force, is retried by [`Service::sweep`], and is reported
    /// as [`ServiceError::Unrecorded`].
    ///
    /// # Errors
    /// No such waiver; the store could not record the end (yet).
    pub async fn remove_waiver(&self, id: i64, actor: String) -> Result<(), ServiceError> {
        let removed = write(&self.fleet).remove_waiver(id, Instant::now());
        let w = match removed {
            Ok(w) => w,
            // Granted through another replica a moment ago, before this
            // one followed: the shared store decides. A 404 here would tell
            // an operator the waiver is gone while the other replica's gate
            // still counts it.
            Err(FleetError::NoSuchWaiver(_)) if self.shared => {
                let now = crate::clock::wall();
                self.store(move |s| s.active_waivers(now))
                    .await?
                    .into_iter()
                    .find(|w| w.id == id)
                    .ok_or(FleetError::NoSuchWaiver(id))?
            }
            Err(e) => return Err(e.into()),
        };
        // In memory at once; written to the local file before the answer,
        // so that neither a restart nor a failover that loses the store's
        // record brings it back.
        let removal = self.remember_removal(&w, &actor);
        let written = self.persist_removals(vec![removal]).await;
        let end = PendingEnd {
            waiver: w,
            actor,
            action: "waiver.remove",
            at: crate::clock::wall(),
        };
        let e = end.clone();
        let stored = self
            .store(move |s| s.end_waiver(&e.waiver, &e.actor, e.action, e.at))
            .await;
        match (stored, written) {
            // Another replica ended it first: a 404 like any unknown id.
            (Ok(false), _) => Err(FleetError::NoSuchWaiver(id).into()),
            (Ok(true), Ok(_)) => Ok(()),
            // A SQLite file is the one record, and has it: no failover
            // can lose it.
            (Ok(true), Err(_)) if !self.shared => Ok(()),
            (Ok(true), Err(f)) => Err(ServiceError::Unrecorded(format!(
                "waiver {id} is removed and no longer applies, and the database recorded it, but it could not be written to the local file of removals ({f}); retried every second, and until then a failover of the database that loses the removal would bring the waiver back"
            ))),
            (Err(e), written) => {
                self.defer_end(end);
                let local = match written {
                    Ok(true) => "; it is in the local file of removals, so a restart of this aggregator keeps it removed".to_owned(),
                    Ok(false) => ", and until then a restart of this aggregator would bring it back".to_owned(),
                    Err(f) => format!(", nor could the local file of removals ({f}); until one of them has it a restart of this aggregator would bring it back"),
                };
                Err(ServiceError::Unrecorded(format!(
                    "waiver {id} is removed and no longer applies, but the store could not record it ({e}); retried every second{local}"
                )))
            }
        }
    }

    fn defer_end(&self, end: PendingEnd) {
        let mut p = lock(&self.pending_ends);
        p.push(end);
        self.metrics
            .waiver_ends_unrecorded
            .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
    }

    /// Retries recording the waiver ends the store refused, oldest first;
    /// stops at the first failure.
    async fn record_pending_ends(&self) {
        loop {
            let Some(end) = lock(&self.pending_ends).first().cloned() else {
                return;
            };
            let e = end.clone();
            let done = self
                .store(move |s| s.end_waiver(&e.waiver, &e.actor, e.action, e.at))
                .await;
            if done.is_err() {
                return;
            }
            let mut p = lock(&self.pending_ends);
            p.retain(|x| x.waiver.id != end.waiver.id);
            self.metrics
                .waiver_ends_unrecorded
                .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
        }
    }

    fn end_pending(&self, id: i64) -> bool {
        lock(&self.pending_ends).iter().any(|e| e.waiver.id == id)
    }

    /// The newest `limit` audit entries.
    ///
    /// # Errors
    /// Store failure.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, ServiceError> {
        self.store(move |s| s.audit(limit)).await
    }

    /// Records a refused credential in the audit log (`actor` used it for
    /// `node`). A store failure is logged: the refusal stands either way.
    pub async fn audit_refusal(&self, actor: &str, action: &'static str, node: &str) {
        tracing::warn!(actor, node, action, "credential refused for this node");
        let detail = serde_json::json!({ "node": node, "credential": actor });
        let actor = actor.to_owned();
        let _ = self
            .store(move |s| s.append_audit(SystemTime::now(), &actor, action, &detail))
            .await;
    }

    /// Whether the store takes writes and has recorded every waiver end
    /// (readiness).
    ///
    /// # Errors
    /// Store failure, or waiver ends still unrecorded.
    pub async fn check_store(&self) -> Result<(), ServiceError> {
        self.store(Store::ping).await?;
        let pending = lock(&self.pending_ends).len();
        if pending > 0 {
            return Err(ServiceError::Store(format!(
                "{pending} waiver end(s) not yet recorded in the store"
            )));
        }
        let unwritten = self.unwritten_removals();
        if unwritten > 0 {
            return Err(ServiceError::Store(format!(
                "{unwritten} waiver removal(s) not yet written to the local file of removals"
            )));
        }
        Ok(())
    }

    /// Where the store is shared with other replicas: its settings (for
    /// [`crate::replicas::spawn_follower`]).
    #[must_use]
    pub fn shared_store(&self) -> Option<crate::store::PgSettings> {
        lock(&self.store).shared().cloned()
    }

    /// Processes TTL, settle and waiver deadlines as they come due, forever;
    /// expired waivers are recorded in the store and the audit log. An
    /// expiry the store cannot take (database down) still ends the waiver
    /// in memory at once, and is owed: the store's catch-up
    /// ([`Store::expire_due`]) is tried every [`EXPIRY_RETRY`] until it
    /// succeeds. It also runs once at start, for waivers that expired while
    /// no replica was running.
    pub async fn sweep(self) {
        let mut owed = true;
        let mut last_try: Option<Instant> = None;
        loop {
            let next = read(&self.fleet).next_deadline();
            let max = Instant::now() + Duration::from_secs(1);
            tokio::select! {
                () = tokio::time::sleep_until(next.map_or(max, |n| n.min(max))) => {}
                () = self.expiries.handed() => {}
            }
            // Under load the report applier has processed what fell due
            // (it ticks with every batch): no need to take the lock.
            let due = read(&self.fleet)
                .next_deadline()
                .is_some_and(|at| at <= Instant::now());
            let mut expired = if due {
                write(&self.fleet).tick(Instant::now())
            } else {
                Vec::new()
            };
            expired.extend(self.expiries.take());
            self.record_pending_ends().await;
            self.retry_removals().await;
            for w in expired {
                let end = PendingEnd {
                    waiver: w,
                    actor: "aggregator".into(),
                    action: "waiver.expire",
                    at: crate::clock::wall(),
                };
                let e = end.clone();
                let recorded = self
                    .store(move |s| s.end_waiver(&e.waiver, &e.actor, e.action, e.at))
                    .await;
                if recorded.is_err() {
                    tracing::error!(
                        waiver = end.waiver.id,
                        "cannot record waiver expiry; retried"
                    );
                    self.defer_end(end);
                    owed = true;
                }
            }
            if owed && last_try.is_none_or(|t| t.elapsed() >= EXPIRY_RETRY) {
                last_try = Some(Instant::now());
                match self.store(|s| s.expire_due(crate::clock::wall())).await {
                    Ok(n) => {
                        owed = false;
                        if n > 0 {
                            tracing::info!(
                                waivers = n,
                                "recorded waiver expiries missed while the store was unavailable"
                            );
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "waiver expiries still owed"),
                }
            }
        }
    }
}

/// Why the fleet could not be rebuilt from the store and the configuration.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configured or stored inventory is invalid.
    #[error("inventory: {0}")]
    Inventory(#[from] FleetError),
}
