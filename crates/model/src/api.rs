//! Request and error bodies of the aggregator's HTTP API that are not
//! reports or answers (those are in [`crate::report`]): typed once here so
//! that the server and every client agree on them without hand-built JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/waivers`: exactly one of `expires_at` (RFC 3339) and
/// `duration` (`2h`) is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverRequest {
    /// Node the waiver applies to.
    pub node: String,
    /// Finding code; every reported code when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Subject (`bond0/eth1`); any subject when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Why; shown on every answer the waiver changes.
    pub reason: String,
    /// Who.
    pub author: String,
    /// End, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Length (`2h`, `3d`); the aggregator caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Body of `PUT /v1/nodes/{node}`: the node's labels (none when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRequest {
    /// Labels (`role = compute`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The body of every error answer: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Stable code (`bad_waiver`, `unknown_scope`, ...).
    pub error: String,
    /// What went wrong.
    pub message: String,
}

/// Answer of `GET /v1/nodes/{node}`: the gate's view and the last full state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// Status, labels, blockers.
    pub node: crate::report::NodeSummary,
    /// The last full state reported; `None` before the first report.
    pub state: Option<crate::NodeState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiver_request_round_trip() {
        let w = WaiverRequest {
            node: "n1".into(),
            code: Some("BOND_PORT_DOWN".into()),
            subject: None,
            reason: "r".into(),
            author: "a".into(),
            expires_at: None,
            duration: Some("2h".into()),
        };
        let text = serde_json::to_string(&w).expect("serializes");
        assert_eq!(
            text,
            r#"{"node":"n1","code":"BOND_PORT_DOWN","reason":"r","author":"a","duration":"2h"}"#
        );
        assert_eq!(
            serde_json::from_str::<WaiverRequest>(&text).expect("parses"),
            w
        );
    }
}
