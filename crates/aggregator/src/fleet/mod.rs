//! The fleet's state in memory and the gate's logic. Pure: no I/O, time is
//! passed in (monotonic `Instant` for TTL and settle, wall clock for people).
//!
//! Each node has a cached status (go, blocked, settling, stale, silent). It is
//! recomputed only when something about that node changes: a report, a
//! waiver, or a deadline (TTL, settle end, waiver expiry) popped from a heap.
//! Every status change updates the counts of the scopes the node belongs to,
//! so a gate answer reads counts and the blocked set, never the whole fleet.
//!
//! Submodules, each importing only those listed before it (and this
//! module): `error`; `body` (an answer's JSON in pieces); `answer` (a
//! scope's verdict, a node's blockers and summary, read-only); `ready`
//! (ranges of an answer kept rendered); `selector` (which nodes a question
//! is about, and the scope indexes); `deadlines` (status and the heap that
//! changes it); `waivers`; `version` (when a scope's answer changed and
//! until when it stays true, for caching it); `render` (the answer written
//! as JSON for the API); `reference` (`Fleet::gate` and `gate_until`, the
//! answer built field by field: the tests' reference for `render`);
//! `report` (a report taken and applied, the inventory's nodes); `boots`
//! (which reports are replays).

mod answer;
mod body;
mod boots;
mod deadlines;
mod error;
mod labels;
mod maintenance;
mod plan;
mod ready;
mod reference;
mod render;
mod report;
mod selector;
mod version;
mod waivers;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use preflight_model::report::Waiver;
use preflight_model::{Code, Finding, NodeState};
use tokio::time::Instant;

pub use answer::sort_blockers;
pub use body::Body;
pub use boots::MAX_RETIRED_BOOTS;
use deadlines::Due;
pub use error::FleetError;
pub use labels::{LabelLookup, Labels};
pub use maintenance::{Excused, DEFAULT_MAINTENANCE_GRACE, DEFAULT_MAX_LEASE, MAX_LEASE_NODES};
pub use plan::{choose, Budget, Candidate, Domain, Held, HeldReason, Plan, PlanQuestion};
pub use render::GateJson;
pub use report::{Prepared, PreparedBody, PreparedReport};
use selector::ScopeCounts;
pub use selector::Selector;
pub use version::ScopeKey;

/// How far a report's `seq` may run ahead of the last accepted one of the
/// same boot id. An agent sends a few reports a second at most, so this is
/// days of reports; a bigger jump is a forgery or a bug, and adopting it
/// would lock the real agent out.
pub const MAX_SEQ_JUMP: u64 = 1_000_000;

/// Most interfaces, findings, bonds, addresses or routes one report's state
/// may list: a node has far fewer, and the cap bounds the memory one node
/// can take whatever the byte size of its reports.
pub const MAX_STATE_ITEMS: usize = 4096;

/// Default most active waivers on one node: a node has a few bonds and
/// ports; more waivers than this is a script gone wrong.
pub const DEFAULT_MAX_WAIVERS_PER_NODE: usize = 100;

/// Default most active waivers in the fleet: each costs memory and
/// restart time.
pub const DEFAULT_MAX_WAIVERS: usize = 10_000;

/// What the settle timer compares: a change of code, subject, severity or
/// message of any finding restarts it.
type FindingKey = (Code, String, preflight_model::Severity, String);

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
    /// Shortest waiver allowed.
    pub min_waiver: Duration,
    /// Most active waivers on one node.
    pub max_waivers_per_node: usize,
    /// Most active waivers in the fleet.
    pub max_waivers: usize,
    /// How long a node has, once its maintenance lease ended, to be back
    /// and go before MAINTENANCE_OVERRUN.
    pub maintenance_grace: Duration,
    /// Longest maintenance lease.
    pub max_lease: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            settle: Duration::from_secs(30),
            closed_inventory: false,
            max_waiver: Duration::from_secs(7 * 86_400),
            min_waiver: Duration::from_secs(60),
            max_waivers_per_node: DEFAULT_MAX_WAIVERS_PER_NODE,
            max_waivers: DEFAULT_MAX_WAIVERS,
            maintenance_grace: DEFAULT_MAINTENANCE_GRACE,
            max_lease: DEFAULT_MAX_LEASE,
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

#[derive(Debug)]
struct Node {
    labels: Labels,
    /// Listed by the configuration or the API: its labels are the
    /// inventory's, and an agent's report never changes them.
    inventoried: bool,
    boot_id: Option<String>,
    /// Boots a later one replaced (see `boots`).
    retired_boots: Vec<(u64, u64)>,
    seq: u64,
    state_seq: u64,
    last_seen: Option<Instant>,
    last_report_wall: Option<SystemTime>,
    state: Option<Arc<NodeState>>,
    finding_keys: BTreeSet<FindingKey>,
    stable_since: Instant,
    stable_since_wall: SystemTime,
    status: Status,
    /// Whether its last report was older than the TTL when the status was
    /// last computed (a stale node can be go under a NODE_STALE waiver, and
    /// its answer still shows that waiver).
    stale: bool,
    /// The TTL and settle deadlines this node has in the heap, so that a
    /// report does not push another: one pending entry each, re-armed when
    /// it fires (the heap stays bounded by the node count).
    ttl_due: Option<Instant>,
    settle_due: Option<Instant>,
    /// When its status next changes by itself (its TTL running out, its
    /// settle time ending; waivers apart), as counted in
    /// `Fleet::changes_at`.
    changes_at: Option<Instant>,
    /// Its blockers as JSON (comma-separated objects, worst first) while
    /// its status is blocked or silent, whose blockers do not count
    /// seconds: rendered by `touch`, once per change of the node, and
    /// shared with the `not_go` entries of its tracked scopes (see `render`).
    blockers: Option<Arc<[u8]>>,
    /// Labels its agent asked for while the node was not go: held back,
    /// because a node that blocks may not move itself out of the scope
    /// being gated. Applied by its next full report once it is go (a
    /// heartbeat asks for that report).
    pending_labels: Option<BTreeMap<String, String>>,
    /// Under a maintenance lease, or back from one within its grace time:
    /// in no scope, so it neither blocks nor counts as ready (see
    /// `maintenance`).
    excused: bool,
    /// When its grace time ran out while it was not go: blocked by
    /// MAINTENANCE_OVERRUN until it is go.
    overrun: Option<SystemTime>,
}

impl Node {
    fn new(labels: BTreeMap<String, String>, now: Instant, wall: SystemTime) -> Self {
        Self {
            labels: Labels::from(labels),
            inventoried: true,
            boot_id: None,
            retired_boots: Vec::new(),
            seq: 0,
            state_seq: 0,
            last_seen: None,
            last_report_wall: None,
            state: None,
            finding_keys: BTreeSet::new(),
            stable_since: now,
            stable_since_wall: wall,
            status: Status::Silent,
            stale: false,
            ttl_due: None,
            settle_due: None,
            changes_at: None,
            blockers: None,
            pending_labels: None,
            excused: false,
            overrun: None,
        }
    }

    /// Whether it counts in the scope of `sel`.
    fn in_scope(&self, sel: &Selector) -> bool {
        !self.excused && sel.matches(&self.labels)
    }

    fn findings(&self) -> &[Finding] {
        self.state.as_ref().map_or(&[], |s| s.findings.as_slice())
    }
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
        /// An agent-labelled node's labels changed: their previous value
        /// (persist and audit the change, or put these back).
        relabeled: Option<BTreeMap<String, String>>,
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
    waivers_by_node: HashMap<String, waivers::NodeWaivers>,
    /// Kept counts of the whole fleet and the configured scopes.
    scopes: HashMap<Selector, ScopeCounts>,
    /// Every `(key, value)` label to the nodes that carry it, for selectors
    /// that are not tracked (bounded by the nodes' labels, not by queries).
    by_label: HashMap<(String, String), BTreeSet<String>>,
    deadlines: BinaryHeap<Reverse<(Instant, Due)>>,
    /// Every node's `changes_at`, counted by instant: the first key is the
    /// earliest moment any node's status changes by itself, which bounds
    /// the validity of a tracked scope's answer without walking its
    /// members.
    changes_at: BTreeMap<Instant, u32>,
    /// When each active waiver expires (monotonic), for answer validity.
    waiver_due: HashMap<i64, Instant>,
    /// Version of every `(key, value)` label in `by_label`: set from
    /// `version` whenever a node carrying it changes what an answer shows.
    label_versions: HashMap<(String, String), u64>,
    /// The last version handed out; only grows, so a label that disappears
    /// and comes back never reuses a version a cached answer was made at.
    version: u64,
    started_wall: SystemTime,
    /// Maintenance leases in force and nodes back from one.
    maintenance: maintenance::Maintenance,
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
            by_label: HashMap::new(),
            deadlines: BinaryHeap::new(),
            changes_at: BTreeMap::new(),
            waiver_due: HashMap::new(),
            label_versions: HashMap::new(),
            version: 0,
            started_wall: wall,
            maintenance: maintenance::Maintenance::default(),
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

    /// Removes a node from the inventory.
    ///
    /// # Errors
    /// When there is no such node.
    pub fn remove_node(&mut self, name: &str) -> Result<(), FleetError> {
        if !self.nodes.contains_key(name) {
            return Err(FleetError::NoSuchNode(name.to_owned()));
        }
        self.detach(name);
        self.set_changes_at(name, None);
        self.nodes.remove(name);
        Ok(())
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

    /// A node's labels (cheap: no summary is built).
    #[must_use]
    pub fn labels(&self, name: &str) -> Option<&Labels> {
        self.nodes.get(name).map(|n| &n.labels)
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;
