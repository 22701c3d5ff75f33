//! The gate's answer built as a `GateAnswer`, field by field, from the
//! scope's members: the reference the tests hold the API's answer to. The
//! API sends [`Fleet::gate_json`] (`render`), which writes the same bytes
//! from kept counts and rendered ranges without building this answer; the
//! tests serialize both and compare them, and the bench's `gate-render`
//! measures both. Nothing here is on the API's path.

use std::collections::BTreeSet;
use std::time::SystemTime;

use preflight_model::report::{GateAnswer, Waiver};
use preflight_model::Code;
use tokio::time::Instant;

use super::answer::{inventory_empty, sort_blockers, verdict};
use super::error::FleetError;
use super::selector::Selector;
use super::version::TEXT_REFRESH;
use super::Fleet;

impl Fleet {
    /// The gate's answer for a selector. A read: asking about a scope never
    /// registers it (see `scope_members`).
    ///
    /// # Errors
    /// `UnknownScope` when no node matches a non-empty selector.
    pub fn gate(
        &self,
        sel: &Selector,
        now: Instant,
        wall: SystemTime,
    ) -> Result<GateAnswer, FleetError> {
        self.gate_of(sel, now, wall, true).map(|(a, _)| a)
    }

    /// [`Fleet::gate`], with the `ready` list left empty unless `ready`,
    /// and the scope's members.
    pub(super) fn gate_of(
        &self,
        sel: &Selector,
        now: Instant,
        wall: SystemTime,
        ready: bool,
    ) -> Result<(GateAnswer, Vec<String>), FleetError> {
        let (members, not_go) = self.scope_members(sel);
        if members.is_empty() && !sel.0.is_empty() {
            return Err(FleetError::UnknownScope(sel.text()));
        }
        let mut blockers = Vec::new();
        for name in &not_go {
            let n = &self.nodes[name];
            blockers.extend(self.blockers_of(name, n, now));
        }
        if members.is_empty() {
            blockers.push(inventory_empty());
        }
        sort_blockers(&mut blockers);
        let ready: Vec<String> = if ready {
            let blocked_set: BTreeSet<&String> = not_go.iter().collect();
            members
                .iter()
                .filter(|m| !blocked_set.contains(m))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        // Waivers are few; each is checked against the members (sorted).
        let waived: Vec<Waiver> = self
            .waivers
            .values()
            .filter(|w| members.binary_search(&w.node).is_ok() && self.waiver_shown(w, now))
            .cloned()
            .collect();
        let answer = GateAnswer {
            verdict: verdict(members.len(), not_go.len()),
            scope: sel.text(),
            nodes: members.len(),
            blockers,
            ready,
            blocked: not_go,
            waived,
            generated_at: wall,
        };
        Ok((answer, members))
    }

    /// The gate's answer (without the `ready` list unless `ready`) and the
    /// moment it stops being true without a change (see the module
    /// comment). A validity at or before `now` means a deadline passed that
    /// `tick` has not processed: the answer is out of date, tick and ask
    /// again.
    ///
    /// # Errors
    /// As [`Fleet::gate`].
    pub fn gate_until(
        &self,
        sel: &Selector,
        now: Instant,
        wall: SystemTime,
        ready: bool,
    ) -> Result<(GateAnswer, Instant), FleetError> {
        let (answer, members) = self.gate_of(sel, now, wall, ready)?;
        let mut until = now + self.cfg.ttl.max(TEXT_REFRESH);
        for name in &members {
            if let Some(at) = self.node_changes_at(name, &self.nodes[name]) {
                until = until.min(at);
            }
        }
        if answer
            .blockers
            .iter()
            .any(|b| b.code == Code::NodeStale || b.code == Code::NodeSettling)
        {
            until = until.min(now + TEXT_REFRESH);
        }
        Ok((answer, until))
    }
}
