//! What an agent sends to an aggregator, and what the aggregator answers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Code, Finding, NodeState, Verdict};

/// Largest accepted report body, in bytes.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// One push from an agent. Read through `RawReport`, which refuses
/// unknown fields: `flatten` (kept for writing, so the wire format is
/// unchanged) would otherwise let any field through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawReport")]
pub struct Report {
    /// Node name (`compute-0`).
    pub node: String,
    /// Random id of this agent process; sequence numbers restart with it.
    pub boot_id: String,
    /// Increases by one with every report of this boot id.
    pub seq: u64,
    /// Full state or heartbeat.
    #[serde(flatten)]
    pub body: ReportBody,
}

/// The two kinds of report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportBody {
    /// The whole node state; sent on every change.
    Full {
        /// Labels the agent is configured with (`role = compute`).
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// The node's state and findings.
        state: Box<NodeState>,
    },
    /// "Still alive, nothing changed since full report `state_seq`."
    Heartbeat {
        /// Sequence number of the last full report the state is unchanged from.
        state_seq: u64,
    },
}

/// A report as written on the wire, every field at the top level; unknown
/// fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    node: String,
    boot_id: String,
    seq: u64,
    kind: ReportKind,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    state: Option<Box<NodeState>>,
    #[serde(default)]
    state_seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportKind {
    Full,
    Heartbeat,
}

impl TryFrom<RawReport> for Report {
    type Error = String;

    fn try_from(r: RawReport) -> Result<Self, String> {
        let body = match r.kind {
            ReportKind::Full => {
                if r.state_seq.is_some() {
                    return Err("unknown field `state_seq` in a full report".into());
                }
                ReportBody::Full {
                    labels: r.labels.unwrap_or_default(),
                    state: r.state.ok_or("missing field `state`")?,
                }
            }
            ReportKind::Heartbeat => {
                if r.labels.is_some() || r.state.is_some() {
                    return Err(
                        "a heartbeat carries only `state_seq`, not `labels` or `state`".into(),
                    );
                }
                ReportBody::Heartbeat {
                    state_seq: r.state_seq.ok_or("missing field `state_seq`")?,
                }
            }
        };
        Ok(Self {
            node: r.node,
            boot_id: r.boot_id,
            seq: r.seq,
            body,
        })
    }
}

/// Aggregator's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// `accepted` or `need_full`.
    pub status: AckStatus,
}

/// What the aggregator did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Applied.
    Accepted,
    /// A heartbeat that refers to a state the aggregator does not have
    /// (after its restart): send a full report.
    NeedFull,
}

/// Why a node blocks the gate (a finding, or the node's silence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    /// Node name.
    pub node: String,
    /// Finding code, or a node-level code (NODE_SILENT, NODE_STALE,
    /// NODE_SETTLING, INVENTORY_EMPTY).
    pub code: Code,
    /// Severity (`critical` for everything that blocks).
    pub severity: crate::Severity,
    /// `bond0/eth1`, or the node name for node-level blockers.
    pub subject: String,
    /// What to do.
    pub message: String,
    /// Since when.
    #[serde(
        with = "crate::time::rfc3339_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<SystemTime>,
}

/// A time-limited exception for a node's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiver {
    /// Id.
    pub id: i64,
    /// Node the waiver applies to.
    pub node: String,
    /// Code it waives (a [`Code`]'s stable string, checked when the waiver
    /// is created); `None`: every reported finding of the node (but never
    /// NODE_SILENT / NODE_STALE, which must be named). Kept as the string
    /// the store holds, so that a waiver of a code a later version drops
    /// still loads.
    pub code: Option<String>,
    /// Subject it waives (`bond0/eth1`); `None`: any subject.
    pub subject: Option<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub author: String,
    /// When it was created.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// When it stops applying.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
}

impl Waiver {
    /// Whether this waiver covers a finding `code` on `subject` of `node`.
    #[must_use]
    pub fn covers(&self, node: &str, code: Code, subject: &str) -> bool {
        if self.node != node {
            return false;
        }
        match &self.code {
            Some(c) if c != code.as_str() => return false,
            None if code.waived_only_by_name() => return false,
            _ => {}
        }
        self.subject.as_deref().is_none_or(|s| s == subject)
    }
}

/// The gate's answer for a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateAnswer {
    /// go / no-go.
    pub verdict: Verdict,
    /// The label selector asked for (`role=compute`), empty for all nodes.
    pub scope: String,
    /// Nodes in the scope.
    pub nodes: usize,
    /// Blockers, worst first.
    pub blockers: Vec<Blocker>,
    /// Nodes that are go (update these with `--limit`); absent, and empty
    /// here, when the question said `ready=false`.
    #[serde(default)]
    pub ready: Vec<String>,
    /// Nodes that are not go.
    pub blocked: Vec<String>,
    /// Waivers that turned a blocker into go.
    pub waived: Vec<Waiver>,
    /// When the answer was made.
    #[serde(with = "crate::time::rfc3339")]
    pub generated_at: SystemTime,
}

/// A node as the aggregator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Name.
    pub node: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `go`, `no-go`, `settling`, `stale`, `silent`.
    pub status: String,
    /// Blockers of this node.
    pub blockers: Vec<Blocker>,
    /// Reported findings (waived ones included, marked).
    pub findings: Vec<WaivedFinding>,
    /// Last report received.
    #[serde(
        with = "crate::time::rfc3339_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_report: Option<SystemTime>,
}

/// A finding with whether a waiver covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaivedFinding {
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
    /// Id of the waiver covering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waived_by: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    #[test]
    fn report_json_is_unchanged_and_unknown_fields_are_refused() {
        let hb = r#"{"node":"c1","boot_id":"b","seq":2,"kind":"heartbeat","state_seq":1}"#;
        let r: Report = serde_json::from_str(hb).expect("heartbeat");
        assert_eq!(serde_json::to_string(&r).expect("ser"), hb);
        let e = serde_json::from_str::<Report>(
            r#"{"node":"c1","boot_id":"b","seq":2,"kind":"heartbeat","state_seq":1,"admin":true}"#,
        )
        .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `admin`"), "{e}");
        let e = serde_json::from_str::<Report>(
            r#"{"node":"c1","boot_id":"b","seq":2,"kind":"heartbeat","state_seq":1,"labels":{}}"#,
        )
        .expect_err("labels on a heartbeat");
        assert!(e.to_string().contains("heartbeat"), "{e}");
        let e =
            serde_json::from_str::<Report>(r#"{"node":"c1","boot_id":"b","seq":2,"kind":"full"}"#)
                .expect_err("no state");
        assert!(e.to_string().contains("state"), "{e}");
    }

    /// The JSON of a finding and a blocker is the same as when their codes
    /// were plain strings: agents and aggregators of either kind interoperate.
    #[test]
    fn finding_and_blocker_json_is_unchanged() {
        let since = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let f = Finding {
            code: Code::BondPortDown,
            severity: Severity::Critical,
            subject: "bond0/eth1".into(),
            message: "eth1 is down".into(),
            since,
        };
        let text = r#"{"code":"BOND_PORT_DOWN","severity":"critical","subject":"bond0/eth1","message":"eth1 is down","since":"2023-11-14T22:13:20Z"}"#;
        assert_eq!(serde_json::to_string(&f).expect("serializes"), text);
        assert_eq!(serde_json::from_str::<Finding>(text).expect("parses"), f);

        let b = Blocker {
            node: "compute-0".into(),
            code: Code::NodeSilent,
            severity: Severity::Critical,
            subject: "compute-0".into(),
            message: "compute-0 has never reported".into(),
            since: Some(since),
        };
        let text = r#"{"node":"compute-0","code":"NODE_SILENT","severity":"critical","subject":"compute-0","message":"compute-0 has never reported","since":"2023-11-14T22:13:20Z"}"#;
        assert_eq!(serde_json::to_string(&b).expect("serializes"), text);
        assert_eq!(serde_json::from_str::<Blocker>(text).expect("parses"), b);

        let empty = Blocker {
            node: String::new(),
            code: Code::InventoryEmpty,
            subject: String::new(),
            message: "m".into(),
            since: None,
            ..b
        };
        assert_eq!(
            serde_json::to_string(&empty).expect("serializes"),
            r#"{"node":"","code":"INVENTORY_EMPTY","severity":"critical","subject":"","message":"m"}"#
        );
    }

    #[test]
    fn an_unknown_code_in_a_finding_is_an_error_naming_it() {
        let text = r#"{"code":"BOND_ON_FIRE","severity":"critical","subject":"bond0","message":"","since":"2023-11-14T22:13:20Z"}"#;
        let e = serde_json::from_str::<Finding>(text).expect_err("unknown code");
        assert!(e.to_string().contains("`BOND_ON_FIRE`"), "{e}");
    }

    #[test]
    fn a_waiver_without_a_code_never_covers_silence_or_staleness() {
        let w = Waiver {
            id: 1,
            node: "n1".into(),
            code: None,
            subject: None,
            reason: "r".into(),
            author: "a".into(),
            created_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert!(w.covers("n1", Code::BondPortDown, "bond0/eth1"));
        assert!(!w.covers("n1", Code::NodeSilent, "n1"));
        assert!(!w.covers("n1", Code::NodeStale, "n1"));
        assert!(!w.covers("n2", Code::BondPortDown, "bond0/eth1"));
        let named = Waiver {
            code: Some("NODE_STALE".into()),
            ..w
        };
        assert!(named.covers("n1", Code::NodeStale, "n1"));
        assert!(!named.covers("n1", Code::BondPortDown, "bond0"));
    }
}
