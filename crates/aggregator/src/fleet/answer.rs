//! The parts every answer is built from: a scope's verdict (the one
//! function that decides it), a node's blockers worst first (and as JSON),
//! the waivers an answer shows, and a node's summary. Everything here
//! reads: no answer changes the fleet.

use std::time::{Duration, SystemTime};

use preflight_model::report::{Blocker, NodeSummary, WaivedFinding, Waiver};
use preflight_model::{Code, Severity, Verdict};
use serde::Serialize;
use tokio::time::Instant;

use super::{Fleet, Node, Status};

/// The verdict of a scope of `members` nodes of which `not_go` are not go.
/// Fail closed: a scope with a node that is not go, or with no node, is
/// no-go whatever its blockers say.
pub(super) fn verdict(members: usize, not_go: usize) -> Verdict {
    if not_go == 0 && members > 0 {
        Verdict::Go
    } else {
        Verdict::NoGo
    }
}

impl Fleet {
    /// A node's blockers when they do not depend on the clock (blocked,
    /// silent); `None` for the others (go has none, stale and settling
    /// count seconds).
    pub(super) fn fixed_blockers(&self, name: &str, n: &Node) -> Option<Vec<Blocker>> {
        match n.status {
            Status::Blocked | Status::Silent => Some(self.blockers_of(name, n, Instant::now())),
            Status::Go | Status::Stale | Status::Settling => None,
        }
    }

    pub(super) fn blockers_of(&self, name: &str, n: &Node, now: Instant) -> Vec<Blocker> {
        let node_blocker = |code: Code, message: String, since: Option<SystemTime>| Blocker {
            node: name.to_owned(),
            code,
            severity: Severity::Critical,
            subject: name.to_owned(),
            message,
            since,
        };
        match n.status {
            Status::Go => Vec::new(),
            Status::Silent => vec![node_blocker(
                Code::NodeSilent,
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
                Code::NodeStale,
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
                Code::NodeSettling,
                format!(
                    "{name}'s findings changed {}s ago; waiting for {} without change",
                    now.saturating_duration_since(n.stable_since).as_secs(),
                    humantime::format_duration(self.cfg.settle)
                ),
                Some(n.stable_since_wall),
            )],
            Status::Blocked => n
                .overrun
                .map(|at| self.overrun_blocker(name, n, at))
                .into_iter()
                .chain(self.unwaived_criticals(name, n).map(|f| Blocker {
                    node: name.to_owned(),
                    code: f.code,
                    severity: f.severity,
                    subject: f.subject.clone(),
                    message: f.message.clone(),
                    since: Some(f.since),
                }))
                .collect(),
        }
    }

    /// MAINTENANCE_OVERRUN: `name` was not back and go within the grace
    /// time after its lease ended (`at`: when the grace ran out). It names
    /// the node's findings in its last report, which tell the pipeline
    /// why it may not have come back.
    pub(super) fn overrun_blocker(&self, name: &str, n: &Node, at: SystemTime) -> Blocker {
        const SHOWN: usize = 8;
        let findings = n.findings();
        let mut last: Vec<String> = findings
            .iter()
            .take(SHOWN)
            .map(|f| format!("{} {} ({})", f.code, f.subject, f.severity.as_str()))
            .collect();
        if findings.len() > SHOWN {
            last.push(format!("and {} more", findings.len() - SHOWN));
        }
        let report = match n.last_report_wall {
            Some(t) => format!("last report at {}", preflight_model::time::format(t)),
            None => "no report since the aggregator started".to_owned(),
        };
        let last = if n.state.is_none() {
            "no findings known".to_owned()
        } else if last.is_empty() {
            "no findings in its last report".to_owned()
        } else {
            format!("last findings: {}", last.join(", "))
        };
        Blocker {
            node: name.to_owned(),
            code: Code::MaintenanceOverrun,
            severity: Severity::Critical,
            subject: name.to_owned(),
            message: format!(
                "{name}'s maintenance lease ended and it was not back and go within {} ({report}; {last}); check {name} before the update goes on",
                humantime::format_duration(self.cfg.maintenance_grace)
            ),
            since: Some(at),
        }
    }

    /// Whether an answer lists waiver `w` under `waived`: it turns a
    /// critical finding of its node into go, or the node's silence or
    /// staleness.
    pub(super) fn waiver_shown(&self, w: &Waiver, now: Instant) -> bool {
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
                .and_then(Code::parse)
                .is_some_and(Code::waived_only_by_name))
            || n.findings()
                .iter()
                .any(|f| f.severity == Severity::Critical && w.covers(&w.node, f.code, &f.subject))
    }

    /// One node as the API shows it.
    #[must_use]
    pub fn summary(&self, name: &str, now: Instant) -> Option<NodeSummary> {
        let n = self.nodes.get(name)?;
        Some(NodeSummary {
            node: name.to_owned(),
            labels: n.labels.to_map(),
            status: n.status.as_str().to_owned(),
            blockers: self.blockers_of(name, n, now),
            findings: n
                .findings()
                .iter()
                .map(|f| WaivedFinding {
                    finding: f.clone(),
                    waived_by: self.waiver_for(name, f.code, &f.subject).map(|w| w.id),
                })
                .collect(),
            last_report: n.last_report_wall,
        })
    }

    /// At most `limit` summaries for the on-call page: the nodes that are
    /// not go first, then the go ones, each by name. One walk of the fleet
    /// and a partial sort: the fleet's lock is held for milliseconds at
    /// 100,000 nodes, not for a summary of every node.
    #[must_use]
    pub fn page_summaries(&self, now: Instant, limit: usize) -> Vec<NodeSummary> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (name, n) in &self.nodes {
            if n.status == Status::Go {
                good.push(name);
            } else {
                bad.push(name);
            }
        }
        let first = |names: &mut Vec<&String>, k: usize| {
            if names.len() > k && k > 0 {
                names.select_nth_unstable(k - 1);
            }
            names.truncate(k);
            names.sort_unstable();
        };
        first(&mut bad, limit);
        first(&mut good, limit - bad.len());
        bad.into_iter()
            .chain(good)
            .filter_map(|n| self.summary(n, now))
            .collect()
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
}

/// The blocker of a scope with no node: the inventory is empty.
pub(super) fn inventory_empty() -> Blocker {
    Blocker {
        node: String::new(),
        code: Code::InventoryEmpty,
        severity: Severity::Critical,
        subject: String::new(),
        message: Code::InventoryEmpty.meaning().into(),
        since: None,
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

/// Appends `v` as JSON.
pub(super) fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("gate answers serialize");
}

/// Blockers (one node's) as comma-separated JSON objects, worst first.
pub(super) fn blockers_bytes(mut b: Vec<Blocker>) -> Box<[u8]> {
    sort_blockers(&mut b);
    let mut out = Vec::with_capacity(b.len() * 256);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(&mut out, x);
    }
    out.into_boxed_slice()
}
