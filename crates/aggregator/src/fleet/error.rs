//! Why a request about the fleet was refused: every error names what was
//! wrong (the scope, node, sequence or waiver) so the API can say it back.

use preflight_model::names::NameError;

use super::MAX_SEQ_JUMP;

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
    /// Node name not acceptable (the whole reason, naming it).
    #[error("{0}")]
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
    /// A report of an agent process (boot id) that a later one of the same
    /// node replaced: a replay, or a clone of the agent.
    #[error(
        "boot {boot_id} of node `{node}` was replaced by a later boot id; a report of an earlier boot is a replay and is refused (an agent that restarts picks a new boot id)"
    )]
    RetiredBoot {
        /// Node.
        node: String,
        /// Boot id of the report.
        boot_id: String,
    },
    /// The report is inconsistent (its state names another node).
    #[error("report is inconsistent: {0}")]
    BadReport(String),
    /// A sequence number far beyond the last accepted one of the same boot
    /// id: refused rather than adopted, or a forger could push the node's
    /// sequence out of the real agent's reach.
    #[error(
        "sequence number {got} for node `{node}` (boot {boot_id}) jumps more than {MAX_SEQ_JUMP} beyond the last accepted {last}; an agent that restarts picks a new boot id"
    )]
    SequenceJump {
        /// Node.
        node: String,
        /// Boot id.
        boot_id: String,
        /// Received.
        got: u64,
        /// Last accepted.
        last: u64,
    },
    /// The report's state is larger than one node can be.
    #[error("report too large: {0}")]
    TooLarge(String),
    /// Waiver rejected.
    #[error("invalid waiver: {0}")]
    BadWaiver(String),
    /// No such waiver.
    #[error("no active waiver with id {0}")]
    NoSuchWaiver(i64),
    /// No such node.
    #[error("no node `{0}`")]
    NoSuchNode(String),
    /// A maintenance lease or plan request that cannot be granted as asked.
    #[error("invalid lease: {0}")]
    BadLease(String),
    /// Nodes already under another maintenance lease.
    #[error("already under a maintenance lease: {}", .0.join(", "))]
    Leased(Vec<String>),
    /// A lease asked for a node that is not go.
    #[error("node `{node}` is {status}, not go: only a go node may be leased (its findings would leave every gate)")]
    NotGo {
        /// Node.
        node: String,
        /// Its status.
        status: String,
    },
    /// No such lease in force.
    #[error("no maintenance lease in force with id {0}")]
    NoSuchLease(i64),
}

impl From<NameError> for FleetError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::BadNodeName(_) | NameError::NotLowerCase(_) => {
                Self::BadNodeName(e.to_string())
            }
            NameError::BadLabel(l) => Self::BadLabel(l),
        }
    }
}
