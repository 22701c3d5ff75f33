//! Following a store shared with other replicas: [`Service::reload`] brings
//! the fleet's inventory and waivers in line with the store. The rows are
//! read and compared with the fleet under its read lock only, a few
//! thousand nodes at a time, so that reports and gate answers go on
//! meanwhile; the write lock is taken only when there is a difference, and
//! only the differences are applied, each checked again under that lock.
//! At 100,000 nodes comparing every node's labels under the write lock (as
//! this did before) stalled every report and gate answer for the whole
//! comparison, on every announcement.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant as StdInstant};

use preflight_model::report::Waiver;
use tokio::time::Instant;

use super::{lock, read, write, Service};
use crate::store::StoreError;

/// Nodes compared per hold of the read lock: short holds, so that a report
/// waiting for the write lock is not held up for the whole fleet.
const DIFF_CHUNK: usize = 4096;

/// What [`Service::reload`] or [`Service::reload_waivers`] changed and what
/// it cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Nodes added, relabeled or removed.
    pub nodes: usize,
    /// Waivers added or ended.
    pub waivers: usize,
    /// Nodes read from the store (0 for a reload of waivers only).
    pub stored_nodes: usize,
    /// Waivers in force read from the store.
    pub stored_waivers: usize,
    /// The whole reload: store read, comparison, changes.
    pub took: Duration,
    /// How long the fleet's write lock was held (zero: not taken).
    pub locked: Duration,
}

/// The changes a reload found, to apply under the write lock.
#[derive(Default)]
struct Diff {
    /// Nodes missing from the fleet or with other labels.
    nodes: Vec<(String, BTreeMap<String, String>)>,
    /// Nodes the last reload saw in the store that are gone from it.
    gone: Vec<String>,
    /// Waivers in the fleet that are no longer in force in the store.
    ended: Vec<i64>,
    /// Waivers in force in the store that the fleet does not have.
    added: Vec<Waiver>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.gone.is_empty()
            && self.ended.is_empty()
            && self.added.is_empty()
    }
}

impl Service {
    /// Brings the fleet's inventory and waivers in line with the store, for
    /// changes made through another replica: nodes added or relabeled,
    /// nodes removed (only those the last reload saw in the store, so a node
    /// whose first report is being written right now is not taken out),
    /// waivers added and ended. Reports are untouched: each replica has its
    /// own from the agents. `known` is the stored inventory of the last
    /// reload, updated here.
    ///
    /// # Errors
    /// Store failure (the fleet is unchanged).
    pub fn reload(&self, known: &mut HashSet<String>) -> Result<ReloadCounts, StoreError> {
        let t0 = StdInstant::now();
        // Waivers in the fleet before the store is read: only those can be
        // ended by what the read shows (one added here meanwhile was written
        // to the store after the read began, and is not in it).
        let before = self.waiver_ids();
        let wall = crate::clock::wall();
        let (nodes, waivers, sync) = {
            let mut s = lock(&self.store);
            let r = s.nodes().and_then(|n| Ok((n, s.active_waivers(wall)?)));
            self.metrics.store_up.set(i64::from(r.is_ok()));
            let (nodes, waivers) = r?;
            // A full reload follows every reconnect (a failover among
            // them): the removals a new primary lacks are applied again.
            let waivers = self.reapply_removals(&mut s, waivers, wall);
            (nodes, waivers, s.synchronous())
        };
        self.note_synchronous(sync);
        let stored: HashSet<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        let mut diff = Diff {
            gone: known.difference(&stored).cloned().collect(),
            ..Diff::default()
        };
        let counts = ReloadCounts {
            stored_nodes: nodes.len(),
            stored_waivers: waivers.len(),
            ..ReloadCounts::default()
        };
        let mut rows = nodes.into_iter().peekable();
        while rows.peek().is_some() {
            let fleet = read(&self.fleet);
            for (name, labels) in rows.by_ref().take(DIFF_CHUNK) {
                if fleet.labels(&name).is_none_or(|l| *l != labels) {
                    diff.nodes.push((name, labels));
                }
            }
        }
        *known = stored;
        let arriving: HashSet<&str> = diff.nodes.iter().map(|(n, _)| n.as_str()).collect();
        (diff.ended, diff.added) = self.diff_waivers(&before, waivers, &arriving);
        Ok(self.apply(diff, counts, wall, "all", t0))
    }

    /// [`Service::reload`] of the waivers only, for an announcement that
    /// only waivers changed: the inventory is not read.
    ///
    /// # Errors
    /// Store failure (the fleet is unchanged).
    pub fn reload_waivers(&self) -> Result<ReloadCounts, StoreError> {
        let t0 = StdInstant::now();
        let before = self.waiver_ids();
        let wall = crate::clock::wall();
        let waivers = {
            let mut s = lock(&self.store);
            let r = s.active_waivers(wall);
            self.metrics.store_up.set(i64::from(r.is_ok()));
            self.reapply_removals(&mut s, r?, wall)
        };
        let counts = ReloadCounts {
            stored_waivers: waivers.len(),
            ..ReloadCounts::default()
        };
        let (ended, added) = self.diff_waivers(&before, waivers, &HashSet::new());
        let diff = Diff {
            ended,
            added,
            ..Diff::default()
        };
        Ok(self.apply(diff, counts, wall, "waivers", t0))
    }

    fn waiver_ids(&self) -> HashSet<i64> {
        read(&self.fleet).waivers().iter().map(|w| w.id).collect()
    }

    /// Waivers to end (in the fleet since `before` the read, not in force
    /// in the store) and to add (in force, not in the fleet, on a node the
    /// fleet has or is `arriving`, and not ended here: with the end still
    /// owed to the store, or removed through this replica).
    fn diff_waivers(
        &self,
        before: &HashSet<i64>,
        active: Vec<Waiver>,
        arriving: &HashSet<&str>,
    ) -> (Vec<i64>, Vec<Waiver>) {
        let fleet = read(&self.fleet);
        let ids: HashSet<i64> = active.iter().map(|w| w.id).collect();
        let ended = before
            .iter()
            .copied()
            .filter(|id| !ids.contains(id) && fleet.waiver(*id).is_some())
            .collect();
        let added = active
            .into_iter()
            .filter(|w| {
                fleet.waiver(w.id).is_none()
                    && (fleet.status(&w.node).is_some() || arriving.contains(w.node.as_str()))
                    && !self.end_pending(w.id)
                    && !self.removed_here(w)
            })
            .collect();
        (ended, added)
    }

    /// Applies `diff` under the write lock, checking each change again
    /// (a report or a request may have changed the fleet since the
    /// comparison); does not take the lock when `diff` is empty. Counts
    /// what it changed and observes the reload of `scope` started at `t0`.
    fn apply(
        &self,
        diff: Diff,
        mut counts: ReloadCounts,
        wall: std::time::SystemTime,
        scope: &str,
        t0: StdInstant,
    ) -> ReloadCounts {
        if !diff.is_empty() {
            self.apply_locked(diff, &mut counts, wall);
        }
        counts.took = t0.elapsed();
        self.metrics
            .replica_reload
            .with_label_values(&[scope])
            .observe(counts.took.as_secs_f64());
        counts
    }

    fn apply_locked(&self, diff: Diff, counts: &mut ReloadCounts, wall: std::time::SystemTime) {
        let mut fleet = write(&self.fleet);
        let locked = StdInstant::now();
        let now = Instant::now();
        let mut followed = Vec::new();
        for (name, labels) in diff.nodes {
            if fleet.labels(&name).is_none_or(|l| *l != labels)
                && fleet.upsert_node(&name, labels, now, wall).is_ok()
            {
                counts.nodes += 1;
            }
        }
        for gone in &diff.gone {
            if fleet.remove_node(gone).is_ok() {
                counts.nodes += 1;
            }
        }
        for id in diff.ended {
            if let Ok(w) = fleet.remove_waiver(id, now) {
                // Ended through another replica: remembered here too, so
                // that a failover that loses the end does not revive it
                // even if that replica restarts meanwhile.
                followed.push(self.remember_removal(&w, "aggregator"));
                counts.waivers += 1;
            }
        }
        for w in diff.added {
            if fleet.waiver(w.id).is_none()
                && fleet.status(&w.node).is_some()
                && !self.end_pending(w.id)
                && !self.removed_here(&w)
            {
                let left = w.expires_at.duration_since(wall).unwrap_or_default();
                fleet.add_waiver(w, left, now);
                counts.waivers += 1;
            }
        }
        drop(fleet);
        counts.locked = locked.elapsed();
        self.metrics
            .replica_reload_lock
            .observe(counts.locked.as_secs_f64());
        // Written after the lock is released (a sync is slow); one that
        // fails is retried by the sweeper.
        if !followed.is_empty() {
            if let Err(e) = self.write_removals(followed) {
                tracing::warn!(error = %e, "cannot write the waiver ends followed from the store to the local file; retried every second");
            }
        }
    }
}
