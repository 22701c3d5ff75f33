//! Maintenance leases in the fleet. A node under a lease is expected to go
//! silent: it is taken out of every scope (`Node::excused`), so it neither
//! blocks a gate nor counts as ready. When its lease ends (expired or
//! ended early) it stays out for the grace time while it comes back; it
//! rejoins its scopes as soon as a report received after the lease ended
//! says it is go or blocked (a report from before the end says nothing
//! about the node after its update, however fresh it still looks), or,
//! when the grace runs out first, as blocked by MAINTENANCE_OVERRUN, which
//! names its last findings and holds until it is go.
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
    /// Nodes whose lease ended.
    returning: BTreeMap<String, Back>,
    /// Whether leases were ever loaded: the first load (at start) also
    /// starts the grace of nodes whose lease expired while no replica
    /// was following it.
    loaded: bool,
    /// Counts this replica's own lease changes (taken, ended), so that a
    /// reload read before one of them is not applied over it.
    generation: u64,
}

/// A node back from a lease.
#[derive(Debug, Clone, Copy)]
struct Back {
    /// When its lease ended: only a report received since counts.
    ended: SystemTime,
    /// End of its grace time.
    grace_until: SystemTime,
}

impl Back {
    fn new(ended: SystemTime, grace: Duration) -> Self {
        Self {
            ended,
            grace_until: ended + grace,
        }
    }
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

    /// Whether `name` is under a lease and its latest report, received
    /// since the lease started, says it is blocked: out, yet what it said
    /// is a fault its failure domain must not ignore.
    pub(super) fn blocked_under_lease(&self, name: &str) -> bool {
        let m = &self.maintenance;
        let Some(start) = m
            .by_node
            .get(name)
            .and_then(|id| m.leases.get(id))
            .map(|l| l.created_at)
        else {
            return false;
        };
        self.nodes.get(name).is_some_and(|n| {
            n.status == Status::Blocked && n.last_report_wall.is_some_and(|r| r >= start)
        })
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
        m.returning.get(name).map(|b| Excused::Returning {
            grace_until: b.grace_until,
        })
    }

    /// How many lease changes this replica made (see
    /// [`Fleet::set_leases`]): a reload applies what it read only when
    /// this did not move meanwhile.
    #[must_use]
    pub fn lease_generation(&self) -> u64 {
        self.maintenance.generation
    }

    /// Puts a lease the store has just recorded in force.
    pub fn add_lease(&mut self, lease: Lease, wall: SystemTime, now: Instant) {
        self.maintenance.generation += 1;
        let mut all = self.leases();
        all.retain(|l| l.id != lease.id);
        all.push(lease);
        self.set_leases(all, wall, now);
    }

    /// Ends lease `id` in memory (the store has ended it); its nodes start
    /// their grace time. Returns it, `None` when it was not in force.
    pub fn end_lease(&mut self, id: i64, wall: SystemTime, now: Instant) -> Option<Lease> {
        self.maintenance.generation += 1;
        let mut all = self.leases();
        let i = all.iter().position(|l| l.id == id)?;
        let ended = all.remove(i);
        self.set_leases(all, wall, now);
        Some(ended)
    }

    /// Makes `leases` (what the store holds) the leases in force as of
    /// `wall`; those already expired are ended. A node that leaves every
    /// lease starts its grace time; one of a node the inventory does not
    /// list is kept (it may be added) but excuses nothing. At the first
    /// load, the nodes of leases already expired start their grace from
    /// the expiry (past it: MAINTENANCE_OVERRUN). Returns whether any of
    /// `leases` had expired (the store is to record them).
    pub fn set_leases(&mut self, leases: Vec<Lease>, wall: SystemTime, now: Instant) -> bool {
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
        let expired = !ended_at.is_empty();
        let before: Vec<String> = self.maintenance.by_node.keys().cloned().collect();
        for n in before {
            if !by_node.contains_key(&n) {
                let end = ended_at.get(&n).copied().unwrap_or(wall).min(wall);
                self.maintenance.returning.insert(n, Back::new(end, grace));
            }
        }
        if !self.maintenance.loaded {
            // At start nothing was in memory: a lease that expired while
            // the aggregator was down still owes its nodes' return.
            for (n, end) in ended_at {
                if !by_node.contains_key(&n) && self.nodes.contains_key(&n) {
                    self.maintenance.returning.insert(n, Back::new(end, grace));
                }
            }
            self.maintenance.loaded = true;
        }
        for n in by_node.keys() {
            self.maintenance.returning.remove(n);
            self.set_excused(n, true, now);
        }
        self.maintenance.leases = kept;
        self.maintenance.by_node = by_node;
        self.tick_maintenance(wall, now);
        expired
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
                        self.maintenance.returning.insert(
                            n.clone(),
                            Back::new(l.expires_at, self.cfg.maintenance_grace),
                        );
                    }
                }
                ended.push(l);
            }
        }
        let returning: Vec<(String, Back)> = self
            .maintenance
            .returning
            .iter()
            .map(|(n, b)| (n.clone(), *b))
            .collect();
        for (name, back) in returning {
            let Some((status, since_end)) = self.nodes.get(&name).map(|n| {
                (
                    n.status,
                    n.last_report_wall.is_some_and(|r| r >= back.ended),
                )
            }) else {
                // Not in the inventory (removed meanwhile): nothing to bring back.
                self.maintenance.returning.remove(&name);
                continue;
            };
            // Go or blocked on what it said since the lease ended: back,
            // ready or blocking. Settling, stale or silent: still coming.
            if since_end && matches!(status, Status::Go | Status::Blocked) {
                self.maintenance.returning.remove(&name);
                self.set_excused(&name, false, now);
            } else if back.grace_until <= wall {
                let grace_until = back.grace_until;
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
