//! An agent's report applied to the fleet. The report is taken:
//! [`PreparedReport::from`] packs a full report's state into an `Arc`
//! and computes its finding keys ([`Prepared`]) before the fleet's lock
//! is taken, and the fleet keeps that `Arc` (the service shares it with
//! the report writer, which stores the state from it).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use preflight_model::names::{check_labels, check_node_key};
use preflight_model::report::{Report, ReportBody};
use preflight_model::NodeState;
use tokio::time::Instant;

use super::error::FleetError;
use super::{FindingKey, Fleet, Labels, Node, ReportOutcome, Status, MAX_STATE_ITEMS};

/// A full report's state, packed into an `Arc`, with its finding keys
/// computed: the work of taking a report that needs no lock.
#[derive(Debug)]
pub struct Prepared {
    state: Arc<NodeState>,
    keys: BTreeSet<FindingKey>,
}

impl Prepared {
    /// Takes the state, packs it, and computes its finding keys.
    ///
    /// The fleet keeps a packed copy rather than the parsed state itself:
    /// the parser's allocations (lists grown by doubling, each piece
    /// allocated between the request's own short-lived buffers) stay
    /// scattered over the heap for as long as the node's next report is
    /// away, and at 100,000 nodes that cost 581 MiB of RSS against 535 MiB
    /// for one copy made in one go, at the same CPU (docs/benchmarks.md,
    /// 2026-12-07). The parsed state is dropped here, on the request's
    /// thread; nothing else copies it (the report writer stores from the
    /// same `Arc`).
    #[must_use]
    pub fn new(state: Box<NodeState>) -> Self {
        let state = Arc::new(NodeState::clone(&state));
        Self {
            keys: finding_keys(&state),
            state,
        }
    }

    /// The state, as the fleet will keep it.
    #[must_use]
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }
}

/// A report as the fleet applies it: the report's own fields, and for a
/// full report its labels and its state made a [`Prepared`].
#[derive(Debug)]
pub struct PreparedReport {
    /// Node name.
    pub node: String,
    /// The agent process's boot id.
    pub boot_id: String,
    /// Sequence number within the boot id.
    pub seq: u64,
    /// Full state or heartbeat.
    pub body: PreparedBody,
}

/// The two kinds of report, as the fleet applies them.
#[derive(Debug)]
pub enum PreparedBody {
    /// The whole node state.
    Full {
        /// Labels the agent is configured with.
        labels: BTreeMap<String, String>,
        /// The state, taken.
        state: Prepared,
    },
    /// Nothing changed since full report `state_seq`.
    Heartbeat {
        /// Sequence number of the last full report.
        state_seq: u64,
    },
}

impl From<Report> for PreparedReport {
    /// Takes the report apart; a full report's state is packed ([`Prepared::new`]).
    fn from(r: Report) -> Self {
        let body = match r.body {
            ReportBody::Full { labels, state } => PreparedBody::Full {
                labels,
                state: Prepared::new(state),
            },
            ReportBody::Heartbeat { state_seq } => PreparedBody::Heartbeat { state_seq },
        };
        Self {
            node: r.node,
            boot_id: r.boot_id,
            seq: r.seq,
            body,
        }
    }
}

/// What the settle timer compares of a state.
pub(super) fn finding_keys(state: &NodeState) -> BTreeSet<FindingKey> {
    state
        .findings
        .iter()
        .map(|f| (f.code, f.subject.clone(), f.severity, f.message.clone()))
        .collect()
}

/// Refuses a state with more items than any node has ([`MAX_STATE_ITEMS`]).
fn check_state_size(state: &NodeState) -> Result<(), FleetError> {
    let lists = [
        ("interfaces", state.interfaces.len()),
        ("findings", state.findings.len()),
        ("bonds", state.bonds.len()),
        ("addresses", state.addresses.len()),
        ("routes", state.routes.len()),
        ("probes", state.probes.len()),
    ];
    for (what, n) in lists {
        if n > MAX_STATE_ITEMS {
            return Err(FleetError::TooLarge(format!(
                "the state lists {n} {what}; at most {MAX_STATE_ITEMS} per node are accepted"
            )));
        }
    }
    Ok(())
}

impl Fleet {
    /// Applies an agent's report (its state copied: the service moves it
    /// instead, [`Fleet::apply_prepared`]).
    ///
    /// # Errors
    /// Unknown node (closed inventory), bad name or labels, stale sequence,
    /// inconsistent report. Nothing changes on error.
    pub fn apply_report(
        &mut self,
        r: &Report,
        now: Instant,
        wall: SystemTime,
    ) -> Result<ReportOutcome, FleetError> {
        self.apply_prepared(PreparedReport::from(r.clone()), now, wall)
    }

    /// [`Fleet::apply_report`] with the report taken apart and its state
    /// prepared ([`PreparedReport::from`]), so that a caller can do that
    /// work before it takes the lock the gate reads under. The fleet keeps
    /// the state's `Arc`.
    ///
    /// # Errors
    /// As [`Fleet::apply_report`].
    pub fn apply_prepared(
        &mut self,
        r: PreparedReport,
        now: Instant,
        wall: SystemTime,
    ) -> Result<ReportOutcome, FleetError> {
        check_node_key(&r.node)?;
        if r.boot_id.is_empty() || r.boot_id.len() > 64 {
            return Err(FleetError::BadReport(
                "boot_id must be 1-64 characters".into(),
            ));
        }
        let known = self.nodes.get(&r.node);
        if known.is_none() && self.cfg.closed_inventory {
            return Err(FleetError::UnknownNode(r.node));
        }
        if let Some(n) = known {
            n.check_sequence(&r)?;
        }
        match r.body {
            PreparedBody::Heartbeat { state_seq } => {
                let Some(n) = self.nodes.get_mut(&r.node) else {
                    return Ok(ReportOutcome::NeedFull);
                };
                if n.boot_id.as_deref() != Some(r.boot_id.as_str())
                    || n.state_seq != state_seq
                    || n.state.is_none()
                    || (n.pending_labels.is_some() && n.status == Status::Go)
                {
                    return Ok(ReportOutcome::NeedFull);
                }
                n.seq = r.seq;
                n.last_seen = Some(now);
                n.last_report_wall = Some(wall);
                self.reevaluate(&r.node, now);
                Ok(ReportOutcome::Accepted {
                    full: false,
                    new_node: false,
                    relabeled: None,
                })
            }
            PreparedBody::Full { labels, state } => {
                if state.state.node != r.node {
                    return Err(FleetError::BadReport(format!(
                        "state is about node `{}` but the report is from `{}`",
                        state.state.node, r.node
                    )));
                }
                check_state_size(&state.state)?;
                check_labels(&labels)?;
                let new_node = known.is_none();
                // Only a node the inventory does not list takes its labels
                // from its agent (the service audits the change); an
                // inventoried node's scope is the operator's, or one report
                // could move a node out of the scope being gated. Even an
                // agent-labelled node moves only while it is go before and
                // after this report (decided below).
                let wants_labels = known.is_some_and(|n| !n.inventoried && n.labels != labels);
                let was_go =
                    known.is_some_and(|n| self.compute_status(&r.node, n, now) == Status::Go);
                // The labels go to a new node, or are asked for by a known
                // one, or are the ones it has.
                let (new_labels, wanted) = if new_node {
                    (Some(labels), None)
                } else {
                    (None, wants_labels.then_some(labels))
                };
                let n = match self.nodes.entry(r.node.clone()) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let mut n = Node::new(new_labels.unwrap_or_default(), now, wall);
                        n.inventoried = false;
                        e.insert(n)
                    }
                };
                n.pending_labels = None;
                if state.keys != n.finding_keys || n.last_seen.is_none() {
                    n.finding_keys = state.keys;
                    n.stable_since = now;
                    n.stable_since_wall = wall;
                }
                n.set_boot(&r.boot_id);
                n.seq = r.seq;
                n.state_seq = r.seq;
                n.last_seen = Some(now);
                n.last_report_wall = Some(wall);
                n.state = Some(state.state);
                if new_node {
                    // Into the label index and the scopes it matches, as
                    // silent, before its status is computed below.
                    self.attach(&r.node);
                }
                // Findings, messages or their times may differ even when
                // the status does not: every answer showing it is redone.
                if !self.reevaluate(&r.node, now) {
                    self.touch(&r.node);
                }
                let mut relabeled = None;
                if let Some(labels) = wanted {
                    if was_go && self.status(&r.node) == Some(Status::Go) {
                        relabeled = Some(self.relabel(&r.node, labels));
                    } else if let Some(n) = self.nodes.get_mut(&r.node) {
                        n.pending_labels = Some(labels);
                    }
                }
                Ok(ReportOutcome::Accepted {
                    full: true,
                    new_node,
                    relabeled,
                })
            }
        }
    }

    /// Moves a node to other labels; returns the labels it had.
    fn relabel(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        self.detach(name);
        let old = self
            .nodes
            .get_mut(name)
            .map(|n| std::mem::replace(&mut n.labels, Labels::from(labels)).into_map())
            .unwrap_or_default();
        self.attach(name);
        old
    }

    /// Adds or relabels a node in the inventory (it stays silent until it
    /// reports).
    ///
    /// # Errors
    /// Bad name or labels.
    pub fn upsert_node(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), FleetError> {
        check_node_key(name)?;
        check_labels(&labels)?;
        match self.nodes.entry(name.to_owned()) {
            Entry::Occupied(mut e) => {
                let n = e.get_mut();
                n.inventoried = true;
                if n.labels == labels {
                    return Ok(());
                }
                self.relabel(name, labels);
            }
            Entry::Vacant(e) => {
                e.insert(Node::new(labels, now, wall));
                self.attach(name);
            }
        }
        self.reevaluate(name, now);
        Ok(())
    }

    /// Puts back the labels an agent's report changed, when that change
    /// could not be persisted and audited.
    pub fn undo_relabel(&mut self, name: &str, labels: BTreeMap<String, String>, now: Instant) {
        if self.nodes.get(name).is_some_and(|n| !n.inventoried) {
            self.relabel(name, labels);
            self.reevaluate(name, now);
        }
    }

    /// Marks a node of the stored inventory as first added by its agent (not
    /// listed by the configuration or the API): its agent keeps its labels.
    pub fn mark_agent_labelled(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.inventoried = false;
        }
    }

    /// Restores a node's last persisted report after a restart, without
    /// making it fresh: the node stays silent until it reports again.
    pub fn restore_report(
        &mut self,
        node: &str,
        boot_id: String,
        seq: u64,
        state: NodeState,
        wall: SystemTime,
    ) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.finding_keys = finding_keys(&state);
            n.boot_id = Some(boot_id);
            n.seq = seq;
            n.state_seq = seq;
            n.last_report_wall = Some(wall);
            n.state = Some(Arc::new(state));
            self.touch(node);
        }
    }
}
