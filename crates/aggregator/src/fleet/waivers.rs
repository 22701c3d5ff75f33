//! Waivers: their checks, the per-node index that finds the waiver covering
//! a finding, and adding and removing them (each re-evaluates its node).
//! Expiry is a deadline like any other (see `deadlines`).
//!
//! A node's waivers are indexed by the code and subject they name, so the
//! waiver covering a finding is found with a few lookups: a walk of every
//! waiver of the node, for every finding and every waiver added, made a
//! restart with tens of thousands of waivers take minutes.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use preflight_model::report::Waiver;
use preflight_model::{Code, Finding, Severity};
use tokio::time::Instant;

use super::deadlines::Due;
use super::error::FleetError;
use super::{Fleet, Node};

/// Waiver ids by the subject they name (`any`: every subject).
#[derive(Debug, Default)]
struct BySubject {
    subjects: HashMap<String, BTreeSet<i64>>,
    any: BTreeSet<i64>,
}

impl BySubject {
    fn set(&mut self, subject: Option<&str>) -> &mut BTreeSet<i64> {
        match subject {
            Some(s) => self.subjects.entry(s.to_owned()).or_default(),
            None => &mut self.any,
        }
    }

    fn remove(&mut self, subject: Option<&str>, id: i64) {
        match subject {
            Some(s) => {
                if let Some(set) = self.subjects.get_mut(s) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.subjects.remove(s);
                    }
                }
            }
            None => {
                self.any.remove(&id);
            }
        }
    }

    /// The lowest id naming `subject` or any subject.
    fn first(&self, subject: &str) -> Option<i64> {
        let named = self.subjects.get(subject).and_then(|s| s.first());
        [named, self.any.first()]
            .into_iter()
            .flatten()
            .min()
            .copied()
    }
}

/// One node's active waivers, indexed by code (`any_code`: every code)
/// and subject.
#[derive(Debug, Default)]
pub(super) struct NodeWaivers {
    codes: HashMap<String, BySubject>,
    any_code: BySubject,
    ids: BTreeSet<i64>,
}

impl NodeWaivers {
    fn insert(&mut self, w: &Waiver) {
        let by = match &w.code {
            Some(c) => self.codes.entry(c.clone()).or_default(),
            None => &mut self.any_code,
        };
        by.set(w.subject.as_deref()).insert(w.id);
        self.ids.insert(w.id);
    }

    fn remove(&mut self, w: &Waiver) {
        match &w.code {
            Some(c) => {
                if let Some(by) = self.codes.get_mut(c) {
                    by.remove(w.subject.as_deref(), w.id);
                    if by.subjects.is_empty() && by.any.is_empty() {
                        self.codes.remove(c);
                    }
                }
            }
            None => self.any_code.remove(w.subject.as_deref(), w.id),
        }
        self.ids.remove(&w.id);
    }

    /// Every id, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = &i64> {
        self.ids.iter()
    }

    /// The lowest id that can cover `code` on `subject` (the one a walk in
    /// id order would find first).
    fn first(&self, code: Code, subject: &str) -> Option<i64> {
        let named = self.codes.get(code.as_str()).and_then(|b| b.first(subject));
        // NODE_SILENT and NODE_STALE are waived only by a waiver naming them.
        let any = (!code.waived_only_by_name())
            .then(|| self.any_code.first(subject))
            .flatten();
        [named, any].into_iter().flatten().min()
    }
}

impl Fleet {
    pub(super) fn unwaived_criticals<'a>(
        &'a self,
        name: &'a str,
        n: &'a Node,
    ) -> impl Iterator<Item = &'a Finding> + 'a {
        n.findings().iter().filter(move |f| {
            f.severity == Severity::Critical && self.waiver_for(name, f.code, &f.subject).is_none()
        })
    }

    pub(super) fn waiver_for(&self, node: &str, code: Code, subject: &str) -> Option<&Waiver> {
        let id = self.waivers_by_node.get(node)?.first(code, subject)?;
        self.waivers
            .get(&id)
            .filter(|w| w.covers(node, code, subject))
    }

    /// Checks a waiver request; returns the expiry as both clocks.
    ///
    /// # Errors
    /// Unknown node or code, empty reason or author, expiry in the past or
    /// beyond the cap, too many waivers on the node or in the fleet.
    pub fn check_waiver(&self, w: &Waiver, wall: SystemTime) -> Result<Duration, FleetError> {
        if !self.nodes.contains_key(&w.node) {
            return Err(FleetError::BadWaiver(format!(
                "node `{}` is not in the inventory",
                w.node
            )));
        }
        let on_node = self.waivers_by_node.get(&w.node).map_or(0, |n| n.ids.len());
        if on_node >= self.cfg.max_waivers_per_node {
            return Err(FleetError::BadWaiver(format!(
                "node `{}` has {on_node} active waivers, the most max_waivers_per_node ({}) allows; remove one or raise [aggregator] max_waivers_per_node",
                w.node, self.cfg.max_waivers_per_node
            )));
        }
        if self.waivers.len() >= self.cfg.max_waivers {
            return Err(FleetError::BadWaiver(format!(
                "the fleet has {} active waivers, the most max_waivers ({}) allows; remove some or raise [aggregator] max_waivers",
                self.waivers.len(),
                self.cfg.max_waivers
            )));
        }
        if w.reason.trim().is_empty() || w.reason.len() > 1000 {
            return Err(FleetError::BadWaiver(
                "reason is required (1-1000 characters)".into(),
            ));
        }
        if w.author.trim().is_empty() || w.author.len() > 200 {
            return Err(FleetError::BadWaiver(
                "author is required (1-200 characters)".into(),
            ));
        }
        if let Some(c) = &w.code {
            // Checked here, where waivers are created, not where they are
            // read: a waiver of a code a later version drops still loads.
            if Code::parse(c).is_none() {
                return Err(FleetError::BadWaiver(format!(
                    "unknown code `{}`: give a finding code such as BOND_PORT_DOWN, or NODE_SILENT / NODE_STALE (see docs/api.md)",
                    c.chars().take(80).collect::<String>()
                )));
            }
        }
        if let Some(s) = &w.subject {
            if s.is_empty() || s.len() > 200 {
                return Err(FleetError::BadWaiver(
                    "subject must be 1-200 characters".into(),
                ));
            }
        }
        let left = w
            .expires_at
            .duration_since(wall)
            .map_err(|_| FleetError::BadWaiver("expires_at is in the past".into()))?;
        if left < self.cfg.min_waiver {
            return Err(FleetError::BadWaiver(format!(
                "expiry is {} away; waivers last at least {}",
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                humantime::format_duration(self.cfg.min_waiver)
            )));
        }
        if left > self.cfg.max_waiver {
            return Err(FleetError::BadWaiver(format!(
                "expiry is {} away; waivers last at most {}",
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                humantime::format_duration(self.cfg.max_waiver)
            )));
        }
        Ok(left)
    }

    /// Adds a (validated, persisted) waiver that expires `left` from `now`.
    pub fn add_waiver(&mut self, w: Waiver, left: Duration, now: Instant) {
        let id = w.id;
        let node = w.node.clone();
        self.waivers_by_node
            .entry(node.clone())
            .or_default()
            .insert(&w);
        self.waivers.insert(id, w);
        self.deadlines
            .push(Reverse((now + left, Due::WaiverExpiry(id))));
        self.waiver_due.insert(id, now + left);
        self.reevaluate(&node, now);
        // Shown on the answer even where it changes no status.
        self.touch(&node);
    }

    /// Removes a waiver.
    ///
    /// # Errors
    /// When there is no active waiver with that id.
    pub fn remove_waiver(&mut self, id: i64, now: Instant) -> Result<Waiver, FleetError> {
        self.remove_waiver_inner(id, now)
            .ok_or(FleetError::NoSuchWaiver(id))
    }

    pub(super) fn remove_waiver_inner(&mut self, id: i64, now: Instant) -> Option<Waiver> {
        let w = self.waivers.remove(&id)?;
        self.waiver_due.remove(&id);
        if let Some(set) = self.waivers_by_node.get_mut(&w.node) {
            set.remove(&w);
            if set.ids.is_empty() {
                self.waivers_by_node.remove(&w.node);
            }
        }
        self.reevaluate(&w.node, now);
        self.touch(&w.node);
        Some(w)
    }

    /// Active waivers, by id.
    #[must_use]
    pub fn waivers(&self) -> Vec<Waiver> {
        self.waivers.values().cloned().collect()
    }

    /// Active waiver by id.
    #[must_use]
    pub fn waiver(&self, id: i64) -> Option<&Waiver> {
        self.waivers.get(&id)
    }
}
