//! Maintenance leases in the fleet. A node under a lease is expected to go
//! silent: it is taken out of every scope (`Node::excused`), so it neither
//! blocks a gate nor counts as ready. When its lease ends (expired or
//! ended early) it stays out for the grace time while it comes back; it
//! rejoins its scopes as soon as it is go, or, when the grace runs out
//! first, as blocked by MAINTENANCE_OVERRUN, which names its last findings
//! and holds until it is go.
//!
//! Leases end by the wall clock: replicas share them through the store,
//! and a lease's end must mean the same moment on each.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Fleet, Status};
use crate::store::Lease;

/// Default `maintenance_grace`.
pub const DEFAULT_MAINTENANCE_GRACE: Duration = Duration::from_secs(600);

/// Default `max_lease`.
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(86_400);

/// Most nodes one lease (or one plan's batch) may hold.
pub const MAX_LEASE_NODES: usize = 1_000;

/// The leases in force and the nodes back from one.
#[derive(Debug, Default)]
pub(super) struct Maintenance {
    leases: BTreeMap<i64, Lease>,
    /// Each leased node's lease.
    by_node: BTreeMap<String, i64>,
    /// Nodes whose lease ended, with the end of their grace time.
    returning: BTreeMap<String, SystemTime>,
}

/// Why a node is out of its scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excused {
    /// Under lease `id` until `until`.
    Leased {
        /// The lease.
        id: i64,
        /// When it ends.
        until: SystemTime,
    },
    /// Its lease ended; it has until `grace_until` to be back and go.
    Returning {
        /// End of the grace time.
        grace_until: SystemTime,
    },
}

impl Fleet {
    /// The leases in force, oldest first.
    #[must_use]
    pub fn leases(&self) -> Vec<Lease> {
        self.maintenance.leases.values().cloned().collect()
    }

    /// How many nodes are out of their scopes for maintenance (leased or
    /// returning).
    #[must_use]
    pub fn nodes_in_maintenance(&self) -> usize {
        self.maintenance.by_node.len() + self.maintenance.returning.len()
    }

    /// The nodes out for maintenance: leased, or back from a lease within
    /// their grace time.
    pub(super) fn out_nodes(&self) -> impl Iterator<Item = &String> {
        self.maintenance
            .by_node
            .keys()
            .chain(self.maintenance.returning.keys())
    }

    /// Why `name` is out of its scopes, if it is.
    #[must_use]
    pub fn excused(&self, name: &str) -> Option<Excused> {
        let m = &self.maintenance;
        if let Some(id) = m.by_node.get(name) {
            return Some(Excused::Leased {
                id: *id,
                until: m
                    .leases
                    .get(id)
                    .map_or(SystemTime::UNIX_EPOCH, |l| l.expires_at),
            });
        }
        m.returning
            .get(name)
            .map(|g| Excused::Returning { grace_until: *g })
    }

    /// Puts a lease the store has just recorded in force.
    pub fn add_lease(&mut self, lease: Lease, wall: SystemTime, now: Instant) {
        let mut all = self.leases();
        all.retain(|l| l.id != lease.id);
        all.push(lease);
        self.set_leases(all, wall, now);
    }

    /// Ends lease `id` in memory (the store has ended it); its nodes start
    /// their grace time. Returns it, `None` when it was not in force.
    pub fn end_lease(&mut self, id: i64, wall: SystemTime, now: Instant) -> Option<Lease> {
        let mut all = self.leases();
        let i = all.iter().position(|l| l.id == id)?;
        let ended = all.remove(i);
        self.set_leases(all, wall, now);
        Some(ended)
    }

    /// Makes `leases` (what the store holds) the leases in force as of
    /// `wall`; those already expired are ended. A node that leaves every
    /// lease starts its grace time; one of a node the inventory does not
    /// list is kept (it may be added) but excuses nothing.
    pub fn set_leases(&mut self, leases: Vec<Lease>, wall: SystemTime, now: Instant) {
        let grace = self.cfg.maintenance_grace;
        let mut kept = BTreeMap::new();
        let mut by_node = BTreeMap::new();
        let mut ended_at: BTreeMap<String, SystemTime> = BTreeMap::new();
        for l in leases {
            if l.expires_at <= wall {
                for n in &l.nodes {
                    ended_at.insert(n.clone(), l.expires_at);
                }
                continue;
            }
            for n in &l.nodes {
                by_node.insert(n.clone(), l.id);
            }
            kept.insert(l.id, l);
        }
        let before: Vec<String> = self.maintenance.by_node.keys().cloned().collect();
        for n in before {
            if !by_node.contains_key(&n) {
                // Grace from the lease's end as far as it is known, never
                // from before now minus the grace (a restart long after).
                let end = ended_at.get(&n).copied().unwrap_or(wall).min(wall);
                self.maintenance.returning.insert(n, end + grace);
            }
        }
        for n in by_node.keys() {
            self.maintenance.returning.remove(n);
            self.set_excused(n, true, now);
        }
        self.maintenance.leases = kept;
        self.maintenance.by_node = by_node;
        self.tick_maintenance(wall, now);
    }

    /// Ends leases due at `wall` (in memory; the service records them) and
    /// brings back returning nodes that are go, or whose grace ran out
    /// (then MAINTENANCE_OVERRUN). Returns the leases it ended.
    pub fn tick_maintenance(&mut self, wall: SystemTime, now: Instant) -> Vec<Lease> {
        let due: Vec<i64> = self
            .maintenance
            .leases
            .values()
            .filter(|l| l.expires_at <= wall)
            .map(|l| l.id)
            .collect();
        let mut ended = Vec::new();
        for id in due {
            if let Some(l) = self.maintenance.leases.remove(&id) {
                for n in &l.nodes {
                    if self.maintenance.by_node.get(n) == Some(&id) {
                        self.maintenance.by_node.remove(n);
                        self.maintenance
                            .returning
                            .insert(n.clone(), l.expires_at + self.cfg.maintenance_grace);
                    }
                }
                ended.push(l);
            }
        }
        let returning: Vec<(String, SystemTime)> = self
            .maintenance
            .returning
            .iter()
            .map(|(n, g)| (n.clone(), *g))
            .collect();
        for (name, grace_until) in returning {
            let Some(status) = self.nodes.get(&name).map(|n| n.status) else {
                // Not in the inventory (removed meanwhile): nothing to bring back.
                self.maintenance.returning.remove(&name);
                continue;
            };
            if status == Status::Go {
                self.maintenance.returning.remove(&name);
                self.set_excused(&name, false, now);
            } else if grace_until <= wall {
                self.maintenance.returning.remove(&name);
                if let Some(n) = self.nodes.get_mut(&name) {
                    n.overrun = Some(grace_until);
                }
                self.reevaluate(&name, now);
                self.set_excused(&name, false, now);
            }
        }
        ended
    }

    /// Nodes whose lease ended without them being back and go in time,
    /// with when their grace ran out.
    #[must_use]
    pub fn overruns(&self) -> BTreeSet<(String, SystemTime)> {
        self.nodes
            .iter()
            .filter_map(|(name, n)| n.overrun.map(|at| (name.clone(), at)))
            .collect()
    }

    /// Moves a node out of its scopes or back into them.
    fn set_excused(&mut self, name: &str, on: bool, now: Instant) {
        if self.nodes.get(name).is_none_or(|n| n.excused == on) {
            return;
        }
        // Out of every scope under its old membership, back in under the
        // new one: both move the versions of the answers it changes.
        self.detach(name);
        if let Some(n) = self.nodes.get_mut(name) {
            n.excused = on;
        }
        self.attach(name);
        self.reevaluate(name, now);
    }
}
