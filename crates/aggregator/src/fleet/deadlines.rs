//! A node's status and the deadlines that change it. A status is computed
//! only when something about its node changes (a report, a waiver, or a
//! deadline: TTL, settle end, waiver expiry); the deadlines wait in one
//! min-heap that the sweeper drains with `tick`. Each node has at most one
//! pending TTL and one pending settle entry, so the heap is bounded by the
//! node count plus the waivers.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use preflight_model::report::Waiver;
use preflight_model::Code;
use tokio::time::Instant;

use super::selector::nth_key;
use super::{Fleet, Node, Status};

/// What a deadline in the heap is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    Node(String),
    WaiverExpiry(i64),
}

impl Fleet {
    pub(super) fn compute_status(&self, name: &str, n: &Node, now: Instant) -> Status {
        match self.base_status(name, n, now) {
            // Back from maintenance too late: blocked until it is go.
            s if s != Status::Go && n.overrun.is_some() => Status::Blocked,
            s => s,
        }
    }

    fn base_status(&self, name: &str, n: &Node, now: Instant) -> Status {
        let Some(seen) = n.last_seen else {
            return Status::Silent;
        };
        if now.saturating_duration_since(seen) >= self.cfg.ttl {
            return if self.waiver_for(name, Code::NodeStale, name).is_some() {
                Status::Go
            } else {
                Status::Stale
            };
        }
        if self.unwaived_criticals(name, n).next().is_some() {
            return Status::Blocked;
        }
        if now.saturating_duration_since(n.stable_since) < self.cfg.settle {
            return Status::Settling;
        }
        Status::Go
    }

    /// Recomputes `name`'s status; returns whether it touched the node
    /// (something an answer shows changed), so a caller that must touch it
    /// anyway does not render its blockers twice.
    pub(super) fn reevaluate(&mut self, name: &str, now: Instant) -> bool {
        let Some(n) = self.nodes.get(name) else {
            return false;
        };
        let mut status = self.compute_status(name, n, now);
        if status == Status::Silent && self.waiver_for(name, Code::NodeSilent, name).is_some() {
            status = Status::Go;
        }
        if status != Status::Go && n.overrun.is_some() {
            status = Status::Blocked;
        }
        let was_go = n.status == Status::Go;
        let is_go = status == Status::Go;
        let stale = n
            .last_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) >= self.cfg.ttl);
        let visible = n.status != status || n.stale != stale;
        // Only future deadlines: a past one would be popped and re-pushed
        // forever (e.g. a stale node made go by a NODE_STALE waiver). And
        // only when none is pending at or before it: the pending one fires
        // first and re-arms with the latest `last_seen`.
        let ttl_at = n
            .last_seen
            .map(|seen| seen + self.cfg.ttl)
            .filter(|at| *at > now && n.ttl_due.is_none_or(|d| d > *at));
        let settle_end = n.stable_since + self.cfg.settle;
        let settle_at = (status == Status::Settling
            && settle_end > now
            && n.settle_due.is_none_or(|d| d > settle_end))
        .then_some(settle_end);
        for at in [ttl_at, settle_at].into_iter().flatten() {
            self.deadlines
                .push(Reverse((at, Due::Node(name.to_owned()))));
        }
        let ttl_end = n
            .last_seen
            .filter(|_| !stale)
            .map(|seen| seen + self.cfg.ttl);
        let changes_at = [ttl_end, (status == Status::Settling).then_some(settle_end)]
            .into_iter()
            .flatten()
            .min();
        let Self {
            nodes,
            scopes,
            changes_at: counts,
            ..
        } = self;
        let Some(n) = nodes.get_mut(name) else {
            return false;
        };
        n.status = status;
        n.stale = stale;
        if status == Status::Go {
            n.overrun = None;
        }
        n.ttl_due = ttl_at.or(n.ttl_due);
        n.settle_due = settle_at.or(n.settle_due);
        move_changes_at(counts, n, changes_at);
        if was_go != is_go {
            for (sel, c) in scopes {
                if n.in_scope(sel) {
                    c.ready.changed(name);
                    if is_go {
                        if c.not_go.remove(name).is_some() {
                            c.blocked.removed(name);
                            c.names.removed(name);
                        }
                    } else if c.not_go.insert(name.to_owned(), None).is_none() {
                        // `touch`, below, renders its blockers.
                        let nth = |s: &str, i| nth_key(&c.not_go, s, i);
                        c.blocked.inserted(name, nth);
                        c.names.inserted(name, nth);
                    }
                }
            }
        }
        if visible {
            self.touch(name);
        }
        visible
    }

    /// Moves `name`'s entry in the `changes_at` counts to `at`.
    pub(super) fn set_changes_at(&mut self, name: &str, at: Option<Instant>) {
        if let Some(n) = self.nodes.get_mut(name) {
            move_changes_at(&mut self.changes_at, n, at);
        }
    }

    /// The earliest moment any node's status changes by itself (a TTL
    /// running out, a settle time ending), waivers apart.
    pub(super) fn first_change(&self) -> Option<Instant> {
        self.changes_at.keys().next().copied()
    }

    /// Processes every deadline that has passed: TTLs, settle ends, waiver
    /// expiries. Returns the waivers that expired (for the audit log).
    pub fn tick(&mut self, now: Instant) -> Vec<Waiver> {
        let mut expired = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, due))) = self.deadlines.pop() else {
                break;
            };
            match due {
                Due::Node(name) => {
                    if let Some(n) = self.nodes.get_mut(&name) {
                        if n.ttl_due.is_some_and(|d| d <= now) {
                            n.ttl_due = None;
                        }
                        if n.settle_due.is_some_and(|d| d <= now) {
                            n.settle_due = None;
                        }
                    }
                    self.reevaluate(&name, now);
                }
                Due::WaiverExpiry(id) => {
                    if let Some(w) = self.remove_waiver_inner(id, now) {
                        expired.push(w);
                    }
                }
            }
        }
        expired
    }

    /// Deadlines waiting in the sweeper's heap (at most two per node plus one
    /// per waiver).
    #[must_use]
    pub fn pending_deadlines(&self) -> usize {
        self.deadlines.len()
    }

    /// The earliest moment something an answer shows changes by itself: a
    /// node's TTL running out or settle time ending, a waiver expiring.
    /// At or before now, a deadline passed that `tick` has not processed
    /// (the heap's other entries, superseded by later reports, change
    /// nothing when they are processed).
    #[must_use]
    pub fn next_change(&self) -> Option<Instant> {
        let waivers = self.waiver_due.values().copied().min();
        [self.first_change(), waivers].into_iter().flatten().min()
    }

    /// When the next deadline is due, for the sweeper's sleep.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }
}

/// Moves `n`'s entry in the `changes_at` counts to `at`.
fn move_changes_at(counts: &mut BTreeMap<Instant, u32>, n: &mut Node, at: Option<Instant>) {
    let old = std::mem::replace(&mut n.changes_at, at);
    if old == at {
        return;
    }
    if let Some(old) = old {
        if let Entry::Occupied(mut e) = counts.entry(old) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
    if let Some(at) = at {
        *counts.entry(at).or_default() += 1;
    }
}
