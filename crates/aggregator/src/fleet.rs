//! The fleet's state in memory and the gate's logic. Pure: no I/O, time is
//! passed in (monotonic `Instant` for TTL and settle, wall clock for people).
//!
//! Each node has a cached status (go, blocked, settling, stale, silent). It is
//! recomputed only when something about that node changes: a report, a
//! waiver, or a deadline (TTL, settle end, waiver expiry) popped from a heap.
//! Every status change updates the counts of the scopes the node belongs to,
//! so a gate answer reads counts and the blocked set, never the whole fleet.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use preflight_model::report::{
    Blocker, GateAnswer, NodeSummary, Report, ReportBody, WaivedFinding, Waiver, NODE_SETTLING,
    NODE_SILENT, NODE_STALE,
};
use preflight_model::{Finding, NodeState, Severity, Verdict};
use tokio::time::Instant;

/// Most label selectors whose counts are kept incrementally; further ones are
/// answered by a scan (correct, slower).
const MAX_TRACKED_SCOPES: usize = 256;

/// Gate settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// A node whose last report is older than this is stale.
    pub ttl: Duration,
    /// A node whose findings changed more recently than this is not yet go.
    pub settle: Duration,
    /// Reject reports from nodes not in the inventory.
    pub closed_inventory: bool,
    /// Longest waiver allowed.
    pub max_waiver: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            settle: Duration::from_secs(30),
            closed_inventory: false,
            max_waiver: Duration::from_secs(7 * 86_400),
        }
    }
}

/// A node's gate status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fresh, stable, no unwaived critical finding.
    Go,
    /// Unwaived critical finding.
    Blocked,
    /// Findings changed within the settle time.
    Settling,
    /// Last report older than the TTL.
    Stale,
    /// No report since the aggregator started.
    Silent,
}

impl Status {
    /// Lower-case name for APIs and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Blocked => "no-go",
            Self::Settling => "settling",
            Self::Stale => "stale",
            Self::Silent => "silent",
        }
    }
}

/// A label selector: `role=compute,rack=r1` (all must match); empty = all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Selector(Vec<(String, String)>);

/// Why a request about the fleet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The selector text is malformed.
    #[error("bad scope `{scope}`: {reason}")]
    BadScope {
        /// As given.
        scope: String,
        /// What is wrong.
        reason: String,
    },
    /// No node in the inventory matches the selector.
    #[error("unknown scope `{0}`: no node in the inventory has these labels")]
    UnknownScope(String),
    /// The inventory is closed and does not list this node.
    #[error("node `{0}` is not in the inventory")]
    UnknownNode(String),
    /// Node name not acceptable.
    #[error("invalid node name `{0}`: use 1-253 characters of A-Z a-z 0-9 . _ -")]
    BadNodeName(String),
    /// Labels not acceptable.
    #[error("invalid label `{0}`: keys and values are 1-63 characters of A-Z a-z 0-9 . _ - /")]
    BadLabel(String),
    /// A report older than one already received from the same agent.
    #[error(
        "stale sequence number {got} for node `{node}` (boot {boot_id}); last accepted is {last}"
    )]
    StaleSequence {
        /// Node.
        node: String,
        /// Boot id.
        boot_id: String,
        /// Received.
        got: u64,
        /// Last accepted.
        last: u64,
    },
    /// The report is inconsistent (its state names another node).
    #[error("report is inconsistent: {0}")]
    BadReport(String),
    /// Waiver rejected.
    #[error("invalid waiver: {0}")]
    BadWaiver(String),
    /// No such waiver.
    #[error("no active waiver with id {0}")]
    NoSuchWaiver(i64),
    /// No such node.
    #[error("no node `{0}`")]
    NoSuchNode(String),
}

fn valid_token(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c)
        })
}

/// Checks a node name.
///
/// # Errors
/// When it is empty, too long, or has other characters than `A-Za-z0-9._-`.
pub fn check_node_name(name: &str) -> Result<(), FleetError> {
    if valid_token(name, 253, &[]) {
        Ok(())
    } else {
        Err(FleetError::BadNodeName(name.chars().take(80).collect()))
    }
}

/// Checks labels.
///
/// # Errors
/// The first bad key or value.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), FleetError> {
    if labels.len() > 32 {
        return Err(FleetError::BadLabel(format!(
            "{} labels (at most 32)",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if !valid_token(k, 63, &['/']) || !valid_token(v, 63, &['/']) {
            return Err(FleetError::BadLabel(
                format!("{k}={v}").chars().take(140).collect(),
            ));
        }
    }
    Ok(())
}

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
            if !valid_token(k, 63, &['/']) || !valid_token(v, 63, &['/']) {
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
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
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

#[derive(Debug, Default)]
struct ScopeCounts {
    members: BTreeSet<String>,
    not_go: BTreeSet<String>,
}

#[derive(Debug)]
struct Node {
    labels: BTreeMap<String, String>,
    boot_id: Option<String>,
    seq: u64,
    state_seq: u64,
    last_seen: Option<Instant>,
    last_report_wall: Option<SystemTime>,
    state: Option<Arc<NodeState>>,
    finding_keys: BTreeSet<(String, String)>,
    stable_since: Instant,
    stable_since_wall: SystemTime,
    status: Status,
    /// The TTL and settle deadlines this node has in the heap, so that a
    /// report does not push another: one pending entry each, re-armed when
    /// it fires (the heap stays bounded by the node count).
    ttl_due: Option<Instant>,
    settle_due: Option<Instant>,
}

impl Node {
    fn new(labels: BTreeMap<String, String>, now: Instant, wall: SystemTime) -> Self {
        Self {
            labels,
            boot_id: None,
            seq: 0,
            state_seq: 0,
            last_seen: None,
            last_report_wall: None,
            state: None,
            finding_keys: BTreeSet::new(),
            stable_since: now,
            stable_since_wall: wall,
            status: Status::Silent,
            ttl_due: None,
            settle_due: None,
        }
    }

    fn findings(&self) -> &[Finding] {
        self.state.as_ref().map_or(&[], |s| s.findings.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Node(String),
    WaiverExpiry(i64),
}

/// What happened to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored; `full` tells whether it carried state (to persist).
    Accepted {
        /// A full report (persist it).
        full: bool,
        /// The node was not known before (open inventory): persist it.
        new_node: bool,
    },
    /// A heartbeat about a state the aggregator does not have.
    NeedFull,
}

/// The fleet.
#[derive(Debug)]
pub struct Fleet {
    cfg: FleetConfig,
    nodes: HashMap<String, Node>,
    waivers: BTreeMap<i64, Waiver>,
    waivers_by_node: HashMap<String, BTreeSet<i64>>,
    scopes: HashMap<Selector, ScopeCounts>,
    deadlines: BinaryHeap<Reverse<(Instant, Due)>>,
    started_wall: SystemTime,
}

impl Fleet {
    /// An empty fleet.
    #[must_use]
    pub fn new(cfg: FleetConfig, wall: SystemTime) -> Self {
        let mut scopes = HashMap::new();
        scopes.insert(Selector::default(), ScopeCounts::default());
        Self {
            cfg,
            nodes: HashMap::new(),
            waivers: BTreeMap::new(),
            waivers_by_node: HashMap::new(),
            scopes,
            deadlines: BinaryHeap::new(),
            started_wall: wall,
        }
    }

    /// Settings.
    #[must_use]
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Number of nodes in the inventory.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the inventory is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node counts by status (for metrics): go, no-go, settling, stale, silent.
    #[must_use]
    pub fn counts_by_status(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> = ["go", "no-go", "settling", "stale", "silent"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for n in self.nodes.values() {
            *m.entry(n.status.as_str()).or_default() += 1;
        }
        m
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
        check_node_name(name)?;
        check_labels(&labels)?;
        if let Some(n) = self.nodes.get(name) {
            if n.labels == labels {
                return Ok(());
            }
            self.detach(name);
            self.nodes.get_mut(name).expect("checked above").labels = labels;
        } else {
            self.nodes
                .insert(name.to_owned(), Node::new(labels, now, wall));
        }
        self.attach(name);
        self.reevaluate(name, now);
        Ok(())
    }

    /// Removes a node from the inventory.
    ///
    /// # Errors
    /// When there is no such node.
    pub fn remove_node(&mut self, name: &str) -> Result<(), FleetError> {
        if !self.nodes.contains_key(name) {
            return Err(FleetError::NoSuchNode(name.to_owned()));
        }
        self.detach(name);
        self.nodes.remove(name);
        Ok(())
    }

    fn attach(&mut self, name: &str) {
        let n = &self.nodes[name];
        let go = n.status == Status::Go;
        for (sel, c) in &mut self.scopes {
            if sel.matches(&n.labels) {
                c.members.insert(name.to_owned());
                if !go {
                    c.not_go.insert(name.to_owned());
                }
            }
        }
    }

    fn detach(&mut self, name: &str) {
        for c in self.scopes.values_mut() {
            c.members.remove(name);
            c.not_go.remove(name);
        }
    }

    /// Applies an agent's report.
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
        check_node_name(&r.node)?;
        if r.boot_id.is_empty() || r.boot_id.len() > 64 {
            return Err(FleetError::BadReport(
                "boot_id must be 1-64 characters".into(),
            ));
        }
        let known = self.nodes.get(&r.node);
        if known.is_none() && self.cfg.closed_inventory {
            return Err(FleetError::UnknownNode(r.node.clone()));
        }
        if let Some(n) = known {
            if n.boot_id.as_deref() == Some(r.boot_id.as_str()) && r.seq <= n.seq {
                return Err(FleetError::StaleSequence {
                    node: r.node.clone(),
                    boot_id: r.boot_id.clone(),
                    got: r.seq,
                    last: n.seq,
                });
            }
        }
        match &r.body {
            ReportBody::Heartbeat { state_seq } => {
                let Some(n) = self.nodes.get_mut(&r.node) else {
                    return Ok(ReportOutcome::NeedFull);
                };
                if n.boot_id.as_deref() != Some(r.boot_id.as_str())
                    || n.state_seq != *state_seq
                    || n.state.is_none()
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
                })
            }
            ReportBody::Full { labels, state } => {
                if state.node != r.node {
                    return Err(FleetError::BadReport(format!(
                        "state is about node `{}` but the report is from `{}`",
                        state.node, r.node
                    )));
                }
                if state.findings.len() > 10_000 {
                    return Err(FleetError::BadReport("more than 10000 findings".into()));
                }
                check_labels(labels)?;
                let new_node = known.is_none();
                if new_node {
                    self.nodes
                        .insert(r.node.clone(), Node::new(labels.clone(), now, wall));
                    self.attach(&r.node);
                } else if !self.cfg.closed_inventory && self.nodes[&r.node].labels != *labels {
                    // Open inventory: the agent's labels are authoritative.
                    self.detach(&r.node);
                    self.nodes.get_mut(&r.node).expect("known").labels = labels.clone();
                    self.attach(&r.node);
                }
                let n = self.nodes.get_mut(&r.node).expect("inserted above");
                let keys: BTreeSet<(String, String)> = state
                    .findings
                    .iter()
                    .map(|f| (f.code.clone(), f.subject.clone()))
                    .collect();
                if keys != n.finding_keys || n.last_seen.is_none() {
                    n.finding_keys = keys;
                    n.stable_since = now;
                    n.stable_since_wall = wall;
                }
                n.boot_id = Some(r.boot_id.clone());
                n.seq = r.seq;
                n.state_seq = r.seq;
                n.last_seen = Some(now);
                n.last_report_wall = Some(wall);
                n.state = Some(Arc::new((**state).clone()));
                self.reevaluate(&r.node, now);
                Ok(ReportOutcome::Accepted {
                    full: true,
                    new_node,
                })
            }
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
            n.finding_keys = state
                .findings
                .iter()
                .map(|f| (f.code.clone(), f.subject.clone()))
                .collect();
            n.boot_id = Some(boot_id);
            n.seq = seq;
            n.state_seq = seq;
            n.last_report_wall = Some(wall);
            n.state = Some(Arc::new(state));
        }
    }

    fn unwaived_criticals<'a>(
        &'a self,
        name: &'a str,
        n: &'a Node,
    ) -> impl Iterator<Item = &'a Finding> + 'a {
        n.findings().iter().filter(move |f| {
            f.severity == Severity::Critical && self.waiver_for(name, &f.code, &f.subject).is_none()
        })
    }

    fn waiver_for(&self, node: &str, code: &str, subject: &str) -> Option<&Waiver> {
        self.waivers_by_node
            .get(node)?
            .iter()
            .filter_map(|id| self.waivers.get(id))
            .find(|w| w.covers(node, code, subject))
    }

    fn compute_status(&self, name: &str, n: &Node, now: Instant) -> Status {
        let Some(seen) = n.last_seen else {
            return Status::Silent;
        };
        if now.saturating_duration_since(seen) >= self.cfg.ttl {
            return if self.waiver_for(name, NODE_STALE, name).is_some() {
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

    fn reevaluate(&mut self, name: &str, now: Instant) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        let mut status = self.compute_status(name, n, now);
        if status == Status::Silent && self.waiver_for(name, NODE_SILENT, name).is_some() {
            status = Status::Go;
        }
        let was_go = n.status == Status::Go;
        let is_go = status == Status::Go;
        let labels = n.labels.clone();
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
        let n = self.nodes.get_mut(name).expect("present");
        n.status = status;
        n.ttl_due = ttl_at.or(n.ttl_due);
        n.settle_due = settle_at.or(n.settle_due);
        if was_go != is_go {
            for (sel, c) in &mut self.scopes {
                if sel.matches(&labels) {
                    if is_go {
                        c.not_go.remove(name);
                    } else {
                        c.not_go.insert(name.to_owned());
                    }
                }
            }
        }
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

    /// When the next deadline is due, for the sweeper's sleep.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Checks a waiver request; returns the expiry as both clocks.
    ///
    /// # Errors
    /// Unknown node, empty reason or author, expiry in the past or beyond the cap.
    pub fn check_waiver(&self, w: &Waiver, wall: SystemTime) -> Result<Duration, FleetError> {
        if !self.nodes.contains_key(&w.node) {
            return Err(FleetError::BadWaiver(format!(
                "node `{}` is not in the inventory",
                w.node
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
            if !valid_token(c, 64, &[]) {
                return Err(FleetError::BadWaiver(
                    "code must be a finding code such as BOND_PORT_DOWN".into(),
                ));
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
            .insert(id);
        self.waivers.insert(id, w);
        self.deadlines
            .push(Reverse((now + left, Due::WaiverExpiry(id))));
        self.reevaluate(&node, now);
    }

    /// Removes a waiver.
    ///
    /// # Errors
    /// When there is no active waiver with that id.
    pub fn remove_waiver(&mut self, id: i64, now: Instant) -> Result<Waiver, FleetError> {
        self.remove_waiver_inner(id, now)
            .ok_or(FleetError::NoSuchWaiver(id))
    }

    fn remove_waiver_inner(&mut self, id: i64, now: Instant) -> Option<Waiver> {
        let w = self.waivers.remove(&id)?;
        if let Some(set) = self.waivers_by_node.get_mut(&w.node) {
            set.remove(&id);
            if set.is_empty() {
                self.waivers_by_node.remove(&w.node);
            }
        }
        self.reevaluate(&w.node, now);
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

    fn blockers_of(&self, name: &str, n: &Node, now: Instant) -> Vec<Blocker> {
        let node_blocker = |code: &str, message: String, since: Option<SystemTime>| Blocker {
            node: name.to_owned(),
            code: code.to_owned(),
            severity: Severity::Critical,
            subject: name.to_owned(),
            message,
            since,
        };
        match n.status {
            Status::Go => Vec::new(),
            Status::Silent => vec![node_blocker(
                NODE_SILENT,
                match n.last_report_wall {
                    Some(t) => format!(
                        "{name} has not reported since the aggregator started (last report before that: {}); check that preflight-agent runs on {name} and can reach the aggregator",
                        preflight_model::time::format(t)
                    ),
                    None => format!("{name} has never reported; check that preflight-agent runs on {name} and can reach the aggregator"),
                },
                Some(self.started_wall),
            )],
            Status::Stale => vec![node_blocker(
                NODE_STALE,
                format!(
                    "{name} stopped reporting {} ago (TTL {}); the node or its agent may be down or unreachable",
                    humantime::format_duration(Duration::from_secs(
                        n.last_seen.map_or(0, |s| now.saturating_duration_since(s).as_secs())
                    )),
                    humantime::format_duration(self.cfg.ttl)
                ),
                n.last_report_wall,
            )],
            Status::Settling => vec![node_blocker(
                NODE_SETTLING,
                format!(
                    "{name}'s findings changed {}s ago; waiting for {} without change",
                    now.saturating_duration_since(n.stable_since).as_secs(),
                    humantime::format_duration(self.cfg.settle)
                ),
                Some(n.stable_since_wall),
            )],
            Status::Blocked => self
                .unwaived_criticals(name, n)
                .map(|f| Blocker {
                    node: name.to_owned(),
                    code: f.code.clone(),
                    severity: f.severity,
                    subject: f.subject.clone(),
                    message: f.message.clone(),
                    since: Some(f.since),
                })
                .collect(),
        }
    }

    fn scope_counts(&mut self, sel: &Selector) -> Option<&ScopeCounts> {
        if !self.scopes.contains_key(sel) {
            if self.scopes.len() >= MAX_TRACKED_SCOPES {
                return None;
            }
            let mut c = ScopeCounts::default();
            for (name, n) in &self.nodes {
                if sel.matches(&n.labels) {
                    c.members.insert(name.clone());
                    if n.status != Status::Go {
                        c.not_go.insert(name.clone());
                    }
                }
            }
            self.scopes.insert(sel.clone(), c);
        }
        self.scopes.get(sel)
    }

    /// Registers a selector so that its counts are kept (configured scopes).
    pub fn track_scope(&mut self, sel: &Selector) {
        let _ = self.scope_counts(sel);
    }

    /// Verdict of a tracked scope without building the full answer (metrics).
    #[must_use]
    pub fn scope_verdict(&self, sel: &Selector) -> Option<Verdict> {
        let c = self.scopes.get(sel)?;
        Some(if c.members.is_empty() || !c.not_go.is_empty() {
            Verdict::NoGo
        } else {
            Verdict::Go
        })
    }

    /// The gate's answer for a selector.
    ///
    /// # Errors
    /// `UnknownScope` when no node matches a non-empty selector.
    pub fn gate(
        &mut self,
        sel: &Selector,
        now: Instant,
        wall: SystemTime,
    ) -> Result<GateAnswer, FleetError> {
        let (members, not_go): (Vec<String>, Vec<String>) = if let Some(c) = self.scope_counts(sel)
        {
            (
                c.members.iter().cloned().collect(),
                c.not_go.iter().cloned().collect(),
            )
        } else {
            let mut m: Vec<String> = self
                .nodes
                .iter()
                .filter(|(_, n)| sel.matches(&n.labels))
                .map(|(k, _)| k.clone())
                .collect();
            m.sort();
            let ng = m
                .iter()
                .filter(|k| self.nodes[*k].status != Status::Go)
                .cloned()
                .collect();
            (m, ng)
        };
        if members.is_empty() && !sel.0.is_empty() {
            return Err(FleetError::UnknownScope(sel.text()));
        }
        let mut blockers = Vec::new();
        for name in &not_go {
            let n = &self.nodes[name];
            blockers.extend(self.blockers_of(name, n, now));
        }
        if members.is_empty() {
            blockers.push(Blocker {
                node: String::new(),
                code: "INVENTORY_EMPTY".into(),
                severity: Severity::Critical,
                subject: String::new(),
                message: "the inventory has no nodes: nothing to vouch for".into(),
                since: None,
            });
        }
        sort_blockers(&mut blockers);
        let blocked_set: BTreeSet<&String> = not_go.iter().collect();
        let ready: Vec<String> = members
            .iter()
            .filter(|m| !blocked_set.contains(m))
            .cloned()
            .collect();
        let member_set: BTreeSet<&String> = members.iter().collect();
        let waived: Vec<Waiver> = self
            .waivers
            .values()
            .filter(|w| member_set.contains(&w.node))
            .filter(|w| {
                let n = &self.nodes[&w.node];
                let silent_or_stale = match n.status {
                    Status::Go => n
                        .last_seen
                        .is_none_or(|s| now.saturating_duration_since(s) >= self.cfg.ttl),
                    _ => false,
                };
                (silent_or_stale
                    && w.code
                        .as_deref()
                        .is_some_and(|c| c == NODE_SILENT || c == NODE_STALE))
                    || n.findings().iter().any(|f| {
                        f.severity == Severity::Critical && w.covers(&w.node, &f.code, &f.subject)
                    })
            })
            .cloned()
            .collect();
        let verdict = if blockers.is_empty() && !members.is_empty() {
            Verdict::Go
        } else {
            Verdict::NoGo
        };
        Ok(GateAnswer {
            verdict,
            scope: sel.text(),
            nodes: members.len(),
            blockers,
            ready,
            blocked: not_go,
            waived,
            generated_at: wall,
        })
    }

    /// One node as the API shows it.
    #[must_use]
    pub fn summary(&self, name: &str, now: Instant) -> Option<NodeSummary> {
        let n = self.nodes.get(name)?;
        Some(NodeSummary {
            node: name.to_owned(),
            labels: n.labels.clone(),
            status: n.status.as_str().to_owned(),
            blockers: self.blockers_of(name, n, now),
            findings: n
                .findings()
                .iter()
                .map(|f| WaivedFinding {
                    finding: f.clone(),
                    waived_by: self.waiver_for(name, &f.code, &f.subject).map(|w| w.id),
                })
                .collect(),
            last_report: n.last_report_wall,
        })
    }

    /// Every node, by name.
    #[must_use]
    pub fn summaries(&self, now: Instant) -> Vec<NodeSummary> {
        let mut names: Vec<&String> = self.nodes.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| self.summary(n, now))
            .collect()
    }

    /// A node's last reported state.
    #[must_use]
    pub fn state(&self, name: &str) -> Option<Arc<NodeState>> {
        self.nodes.get(name)?.state.clone()
    }

    /// Calls `f` with every node's name and status.
    pub fn for_each_status(&self, mut f: impl FnMut(&str, Status)) {
        for (name, n) in &self.nodes {
            f(name, n.status);
        }
    }

    /// A node's status.
    #[must_use]
    pub fn status(&self, name: &str) -> Option<Status> {
        self.nodes.get(name).map(|n| n.status)
    }
}

/// Worst first: critical, then node-level (silent, stale) before findings,
/// then by node, code, subject.
pub fn sort_blockers(b: &mut [Blocker]) {
    b.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then_with(|| x.node.cmp(&y.node))
            .then_with(|| x.code.cmp(&y.code))
            .then_with(|| x.subject.cmp(&y.subject))
    });
}

#[cfg(test)]
mod tests;
