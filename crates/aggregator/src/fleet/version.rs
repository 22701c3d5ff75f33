//! What a cached gate answer needs from the fleet: a key that changes
//! whenever something an answer for that scope shows changes, and the
//! moment the answer stops being true without any change (a TTL running out,
//! a settle time ending, a waiver expiring).
//!
//! Every change an answer can show (a full report, a status change, a node
//! going stale or fresh, a waiver added or ended, a node entering or leaving
//! a scope) `touch`es the node: one fleet-wide counter moves on, and its new
//! value becomes the version of every tracked scope the node is in and of
//! every label it carries. A tracked scope's key is its version; any other
//! selector's key is the versions of its terms (every member carries every
//! term, so a change of a member moves each of them). A heartbeat that
//! changes nothing visible touches nothing, which is what keeps the answer
//! of a large scope cached while its nodes keep reporting.
//!
//! Time-based changes are not touches: they happen when the sweeper's
//! `tick` gets to them. So an answer also carries a validity, the earliest
//! deadline of any of its members; past it the answer is not served, and a
//! deadline that passed but was not processed yet makes the answer "out of
//! date" at once (the caller ticks first). Fail closed: a cached go is
//! never served after a member went stale.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::blockers_bytes;
use super::selector::Selector;
use super::waivers::NodeWaivers;
use super::{Fleet, Node};

/// How long an answer that shows a time-dependent message ("stopped
/// reporting 42s ago", "changed 3s ago") is served before it is redone: the
/// messages count whole seconds.
pub const TEXT_REFRESH: Duration = Duration::from_secs(1);

/// The version of one scope's answer; equal keys mean an equal answer (as
/// long as its validity has not run out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeKey(Vec<u64>);

impl Fleet {
    /// Moves the version of every tracked scope and every label of `name`:
    /// something an answer shows about this node changed. Its blockers are
    /// rendered again here (see `render`).
    pub(super) fn touch(&mut self, name: &str) {
        self.version += 1;
        let v = self.version;
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        let blockers: Option<Arc<[u8]>> = self
            .fixed_blockers(name, n)
            .map(|b| Arc::from(blockers_bytes(b)));
        let Self {
            nodes,
            scopes,
            label_versions,
            ..
        } = self;
        let Some(n) = nodes.get_mut(name) else {
            return;
        };
        for (sel, c) in scopes {
            if n.in_scope(sel) {
                c.version = v;
                if let Some(e) = c.not_go.get_mut(name) {
                    e.clone_from(&blockers);
                    c.blocked.changed(name);
                }
            }
        }
        for (k, val) in &n.labels {
            // Every label of a node in `nodes` is in the index (attach).
            if let Some(e) = label_versions.get_mut(&(k.clone(), val.clone())) {
                *e = v;
            }
        }
        n.blockers = blockers;
    }

    /// The current version of the answer for `sel`; `None` when no node
    /// carries one of its labels (an unknown scope: nothing to cache).
    #[must_use]
    pub fn scope_key(&self, sel: &Selector) -> Option<ScopeKey> {
        if let Some(c) = self.scopes.get(sel) {
            return Some(ScopeKey(vec![c.version]));
        }
        sel.0
            .iter()
            .map(|t| self.label_versions.get(t).copied())
            .collect::<Option<Vec<u64>>>()
            .map(ScopeKey)
    }

    /// The earliest moment `n`'s answer can change without a report: its
    /// TTL running out, its settle time ending, one of its waivers expiring.
    pub(super) fn node_changes_at(&self, name: &str, n: &Node) -> Option<Instant> {
        // Its TTL and settle end, kept by `reevaluate`.
        if self.waivers_by_node.is_empty() {
            return n.changes_at;
        }
        let waivers = self
            .waivers_by_node
            .get(name)
            .into_iter()
            .flat_map(NodeWaivers::ids)
            .filter_map(|id| self.waiver_due.get(id).copied());
        n.changes_at.into_iter().chain(waivers).min()
    }
}
