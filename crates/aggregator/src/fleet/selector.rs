//! Which nodes a question is about: the `key=value` label selector (its
//! terms follow the label rules of `preflight_model::names`), and the two
//! indexes that answer "who is in this scope" without scanning the fleet —
//! the counts of tracked scopes (kept up to date on every status change) and
//! an inverted label index for every other selector.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use preflight_model::names::is_label_part;
use preflight_model::Verdict;

use super::answer::verdict;
use super::error::FleetError;
use super::ready::{Ranges, MAX_BLOCKED_CHUNK, MAX_CHUNK};
use super::{Fleet, LabelLookup, Node, Status};

/// A label selector: `role=compute,rack=r1` (all must match); empty = all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Selector(pub(super) Vec<(String, String)>);

impl Selector {
    /// Parses `k=v,k2=v2`; the empty string selects every node.
    ///
    /// # Errors
    /// When a term is not `key=value` with valid characters.
    pub fn parse(s: &str) -> Result<Self, FleetError> {
        let bad = |reason: &str| FleetError::BadScope {
            scope: s.chars().take(200).collect(),
            reason: reason.into(),
        };
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in s.split(',') {
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| bad("expected key=value[,key=value]"))?;
            let (k, v) = (k.trim(), v.trim());
            if !is_label_part(k) || !is_label_part(v) {
                return Err(bad(
                    "keys and values are 1-63 characters of A-Z a-z 0-9 . _ - /",
                ));
            }
            terms.push((k.to_owned(), v.to_owned()));
        }
        terms.sort();
        terms.dedup();
        Ok(Self(terms))
    }

    /// Whether `labels` satisfy every term.
    #[must_use]
    pub fn matches(&self, labels: &impl LabelLookup) -> bool {
        self.0
            .iter()
            .all(|(k, v)| labels.label(k) == Some(v.as_str()))
    }

    /// Canonical text.
    #[must_use]
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Members of a tracked scope and those of them that are not go, kept
/// incrementally.
#[derive(Debug)]
pub(super) struct ScopeCounts {
    pub(super) members: BTreeSet<String>,
    /// With each one's rendered blockers where they do not count seconds
    /// (`Node::blockers`, kept in step by `touch`).
    pub(super) not_go: BTreeMap<String, Option<Arc<[u8]>>>,
    /// The ready list, the blockers and the blocked names, rendered in
    /// ranges over the members and the not-go members (see `ready`).
    pub(super) ready: Ranges,
    pub(super) blocked: Ranges,
    pub(super) names: Ranges,
    /// Moves whenever a member's answer changes (see `version`).
    pub(super) version: u64,
}

impl Default for ScopeCounts {
    fn default() -> Self {
        Self {
            members: BTreeSet::new(),
            not_go: BTreeMap::new(),
            ready: Ranges::new(MAX_CHUNK),
            blocked: Ranges::new(MAX_BLOCKED_CHUNK),
            names: Ranges::new(MAX_CHUNK),
            version: 0,
        }
    }
}

/// The `i`th key (from 0) at or after `start`, to split a range there.
pub(super) fn nth_key<V>(map: &BTreeMap<String, V>, start: &str, i: usize) -> Option<String> {
    map.range::<str, _>((Bound::Included(start), Bound::Unbounded))
        .nth(i)
        .map(|(k, _)| k.clone())
}

/// [`nth_key`] for a set.
pub(super) fn nth_member(set: &BTreeSet<String>, start: &str, i: usize) -> Option<String> {
    set.range::<str, _>((Bound::Included(start), Bound::Unbounded))
        .nth(i)
        .cloned()
}

impl Fleet {
    /// Enters a node (already in `nodes`) into the label index and the
    /// tracked scopes it matches.
    pub(super) fn attach(&mut self, name: &str) {
        let n = &self.nodes[name];
        let go = n.status == Status::Go;
        for (sel, c) in &mut self.scopes {
            if n.in_scope(sel) {
                if c.members.insert(name.to_owned()) {
                    c.ready.inserted(name, |s, i| nth_member(&c.members, s, i));
                }
                if !go
                    && c.not_go
                        .insert(name.to_owned(), n.blockers.clone())
                        .is_none()
                {
                    c.blocked.inserted(name, |s, i| nth_key(&c.not_go, s, i));
                    c.names.inserted(name, |s, i| nth_key(&c.not_go, s, i));
                }
            }
        }
        for label in &n.labels {
            let key = (label.0.clone(), label.1.clone());
            self.label_versions.entry(key.clone()).or_default();
            self.by_label
                .entry(key)
                .or_default()
                .insert(name.to_owned());
        }
        self.touch(name);
    }

    /// Takes a node (still in `nodes`) out of the label index and every
    /// tracked scope.
    pub(super) fn detach(&mut self, name: &str) {
        // The scopes it leaves change their answer.
        self.touch(name);
        for c in self.scopes.values_mut() {
            if c.members.remove(name) {
                c.ready.removed(name);
            }
            if c.not_go.remove(name).is_some() {
                c.blocked.removed(name);
                c.names.removed(name);
            }
        }
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        for (k, v) in &n.labels {
            let key = (k.clone(), v.clone());
            if let Some(set) = self.by_label.get_mut(&key) {
                set.remove(name);
                // An empty entry would keep a label nobody has any more.
                if set.is_empty() {
                    self.by_label.remove(&key);
                    self.label_versions.remove(&key);
                }
            }
        }
    }

    /// Registers a selector so that its counts are kept (configured scopes:
    /// their verdict is a metric, read on every scrape). Only configuration
    /// calls this; a gate question never registers anything.
    pub fn track_scope(&mut self, sel: &Selector) {
        if self.scopes.contains_key(sel) {
            return;
        }
        self.version += 1;
        let mut c = ScopeCounts {
            version: self.version,
            ..ScopeCounts::default()
        };
        for (name, n) in &self.nodes {
            if n.in_scope(sel) {
                c.members.insert(name.clone());
                if n.status != Status::Go {
                    c.not_go.insert(name.clone(), n.blockers.clone());
                }
            }
        }
        c.ready = Ranges::build(MAX_CHUNK, c.members.iter());
        c.blocked = Ranges::build(MAX_BLOCKED_CHUNK, c.not_go.keys());
        c.names = Ranges::build(MAX_CHUNK, c.not_go.keys());
        self.scopes.insert(sel.clone(), c);
    }

    /// How many selectors have kept counts: the whole fleet plus the
    /// configured scopes. Gate reads do not change it.
    #[must_use]
    pub fn tracked_scopes(&self) -> usize {
        self.scopes.len()
    }

    /// Verdict of a tracked scope without building the full answer (metrics).
    #[must_use]
    pub fn scope_verdict(&self, sel: &Selector) -> Option<Verdict> {
        let c = self.scopes.get(sel)?;
        Some(verdict(c.members.len(), c.not_go.len()))
    }

    /// A scope's members and those of them that are not go, both sorted by
    /// name. A tracked scope reads its kept counts. Any other selector is
    /// answered from the label index without registering it: it walks the
    /// smallest posting list among its terms and checks the other terms on
    /// each node, so a rack-sized scope costs its own size, not the fleet's.
    /// (Tracking every selector a client sends would make a read change
    /// state, and the first few hundred selectors anyone asked about would
    /// stay tracked, and cost work on every status change, for good.)
    pub(super) fn scope_members(&self, sel: &Selector) -> (Vec<String>, Vec<String>) {
        if let Some(c) = self.scopes.get(sel) {
            return (
                c.members.iter().cloned().collect(),
                c.not_go.keys().cloned().collect(),
            );
        }
        let (mut members, mut not_go) = (Vec::new(), Vec::new());
        self.for_each_member(sel, |name, n| {
            members.push(name.clone());
            if n.status != Status::Go {
                not_go.push(name.clone());
            }
        });
        (members, not_go)
    }

    /// Calls `f` with every node an untracked selector matches, in name
    /// order, looking each node up once: it walks the smallest posting list
    /// among the selector's terms and checks the other terms on each node.
    /// Nodes out for maintenance are in no scope.
    pub(super) fn for_each_member<'a>(
        &'a self,
        sel: &Selector,
        mut f: impl FnMut(&'a String, &'a Node),
    ) {
        self.for_each_labeled(sel, |name, n| {
            if !n.excused {
                f(name, n);
            }
        });
    }

    /// [`Fleet::for_each_member`] with the nodes out for maintenance too
    /// (the plan counts them).
    pub(super) fn for_each_labeled<'a>(
        &'a self,
        sel: &Selector,
        mut f: impl FnMut(&'a String, &'a Node),
    ) {
        let mut smallest: Option<&BTreeSet<String>> = None;
        for term in &sel.0 {
            let Some(set) = self.by_label.get(term) else {
                // No node has this label: nobody matches.
                return;
            };
            if smallest.is_none_or(|s| set.len() < s.len()) {
                smallest = Some(set);
            }
        }
        if let Some(set) = smallest {
            for name in set {
                let n = &self.nodes[name];
                if sel.matches(&n.labels) {
                    f(name, n);
                }
            }
        } else {
            // Only the empty selector has no terms, and it is always
            // tracked; a scan is still the right answer should that change.
            let mut all: Vec<(&String, &Node)> = self.nodes.iter().collect();
            all.sort_by(|a, b| a.0.cmp(b.0));
            for (name, n) in all {
                f(name, n);
            }
        }
    }
}
