//! The durable store behind the fleet: inventory, last report per node,
//! waivers and the audit log. Two backends with one interface: an embedded
//! SQLite file (the default, one aggregator) and PostgreSQL (several
//! aggregator replicas sharing one database). Waivers, inventory and audit
//! entries are synced to disk before the API answers (one transaction each,
//! except nodes that agents register on PostgreSQL: those are group-committed,
//! see [`NodeWriter`]); reports are cheap to lose and are written in batches. Both
//! backends version their schema and refuse a database written by a newer
//! preflight. Calls are blocking: the service runs them on the blocking pool.
//!
//! The aggregator re-exports this crate as `preflight_aggregator::store`.

#![warn(missing_docs)]

mod beside;
mod boot;
mod group;
mod lease;
mod pgconf;
mod pglease;
mod pgsync;
pub mod pgtls;
mod postgres;
mod rows;
mod sqlite;
#[doc(hidden)]
pub mod suite;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use preflight_model::report::Waiver;
use preflight_model::NodeState;
use serde::{Deserialize, Serialize};

pub use self::beside::RESERVE_BYTES;
pub use self::boot::BootAnchor;
pub use self::group::NodeWriter;
pub use self::lease::{Lease, Taken};
pub use self::pgconf::{is_postgres_url, PgSettings, PG_CHANNEL};
pub use self::postgres::{PgListener, PgStore};
pub use self::sqlite::SqliteStore;

/// Where the store lives: `aggregator.database`, a SQLite file or a
/// `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database shared by the replicas.
    Postgres(PgSettings),
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(s) => write!(f, "{}", s.display),
        }
    }
}

/// Everything that can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// Database file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL failed or could not be reached.
    #[error("database {db}: {message}")]
    Postgres {
        /// The database, without its password.
        db: String,
        /// What went wrong (the driver's error with its cause).
        message: String,
    },
    /// The store's file system refuses writes (full, read-only).
    #[error("store {path}: cannot write: {source}")]
    Unwritable {
        /// The file that could not be written.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database is not the store written here: it lost its id (it is
    /// empty, truncated, recreated, or lost its WAL) or holds another one.
    #[error("store {path}: {reason}; restore it from a backup, or start once with --accept-empty-store to run on it as it is")]
    Replaced {
        /// Database file.
        path: String,
        /// What was found.
        reason: String,
    },
    /// The database was written by a newer preflight.
    #[error("store {path}: schema version {found} is newer than this preflight understands ({supported}); run the newer preflight or restore a backup")]
    Schema {
        /// Database file or URL.
        path: String,
        /// Found.
        found: i64,
        /// Supported.
        supported: i64,
    },
}

impl StoreError {
    /// Whether this error is the operator's to fix before starting again
    /// (a newer schema, an emptied or replaced store), rather than a
    /// passing failure.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Schema { .. } | Self::Replaced { .. })
    }
}

/// A node's labels.
pub type Labels = BTreeMap<String, String>;

/// A persisted report, as loaded at start-up.
#[derive(Debug)]
pub struct StoredReport {
    /// Node.
    pub node: String,
    /// Agent boot id.
    pub boot_id: String,
    /// Sequence number.
    pub seq: u64,
    /// When it was received.
    pub received_at: SystemTime,
    /// The state.
    pub state: NodeState,
    /// Fingerprints of the boot ids that later ones replaced, with the
    /// last sequence number each had, oldest first, as last stored (empty
    /// when none were, or the column is unreadable).
    pub retired_boots: Vec<RetiredBoot>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Id (increasing).
    pub id: i64,
    /// When.
    #[serde(with = "preflight_model::time::rfc3339")]
    pub at: SystemTime,
    /// Who (`author` of a waiver, `aggregator` for expiries).
    pub actor: String,
    /// What (`waiver.create`, `waiver.remove`, `waiver.expire`, `node.upsert`, `node.remove`, `report.forbidden`).
    pub action: String,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

/// A node added or relabeled, waiting to be written with others
/// ([`NodeWriter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// Node.
    pub name: String,
    /// Its labels from now on.
    pub labels: Labels,
    /// Who changed it (`agent` for a node its agent registered).
    pub actor: String,
    /// When.
    pub at: SystemTime,
}

/// A report waiting to be written.
#[derive(Debug, Clone)]
pub struct PendingReport {
    /// Node.
    pub node: String,
    /// Boot id.
    pub boot_id: String,
    /// Sequence number.
    pub seq: u64,
    /// When received.
    pub received_at: SystemTime,
    /// `NodeState` as JSON.
    pub state_json: String,
    /// Fingerprints of the node's boot ids that later ones replaced, with
    /// the last sequence number each had, oldest first (the fleet's bounded
    /// list): stored with the report, so that a restart keeps refusing
    /// their replays. Empty keeps what is stored.
    pub retired_boots: Vec<RetiredBoot>,
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What a node's `origin` column holds for a change by `actor`: `agent` for
/// a node its agent added (its agent keeps its labels; the actor is `agent`
/// or `agent:CREDENTIAL`), `inventory` for one the configuration or the API
/// lists.
pub(crate) fn origin(actor: &str) -> &'static str {
    if actor == "agent" || actor.starts_with("agent:") {
        "agent"
    } else {
        "inventory"
    }
}

/// Parses stored labels; a row we cannot read is logged and skipped rather
/// than blocking start-up (the node reappears when it reports).
pub(crate) fn parse_labels(name: &str, labels: &str) -> Option<Labels> {
    serde_json::from_str(labels)
        .map_err(
            |e| tracing::warn!(node = %name, error = %e, "unreadable labels in store; skipped"),
        )
        .ok()
}

/// A boot id a later one replaced: its fingerprint and the last sequence
/// number it had (a report of it at or below that is a replay).
pub type RetiredBoot = (u64, u64);

/// The `retired_boots` column of a report: a JSON array of `"FINGERPRINT:SEQ"`
/// strings (the fingerprint as 16 hex digits), oldest first; NULL for none
/// (then the stored value is kept, see the backends' `save_reports`).
pub(crate) fn retired_json(retired: &[RetiredBoot]) -> Option<String> {
    if retired.is_empty() {
        return None;
    }
    let entries: Vec<String> = retired
        .iter()
        .map(|(h, seq)| format!("{h:016x}:{seq}"))
        .collect();
    serde_json::to_string(&entries).ok()
}

/// Reads the `retired_boots` column back; an unreadable one is logged and
/// read as empty (the node is then as after a restart before this column
/// existed: only its last stored boot is known).
pub(crate) fn parse_retired(node: &str, column: Option<&str>) -> Vec<RetiredBoot> {
    let Some(text) = column else {
        return Vec::new();
    };
    let entry = |e: &String| -> Result<RetiredBoot, String> {
        let (h, seq) = e
            .split_once(':')
            .ok_or_else(|| format!("`{e}`: expected FINGERPRINT:SEQ"))?;
        Ok((
            u64::from_str_radix(h, 16).map_err(|x| format!("`{e}`: {x}"))?,
            seq.parse().map_err(|x| format!("`{e}`: {x}"))?,
        ))
    };
    let parsed = serde_json::from_str::<Vec<String>>(text)
        .map_err(|e| e.to_string())
        .and_then(|entries| {
            entries
                .iter()
                .map(entry)
                .collect::<Result<Vec<_>, String>>()
        });
    parsed.unwrap_or_else(|e| {
        tracing::warn!(node = %node, error = %e, "unreadable retired boot ids in store; ignored");
        Vec::new()
    })
}

/// Parses a stored report; unreadable ones are logged and skipped.
pub(crate) fn parse_report(
    node: String,
    boot_id: String,
    seq: i64,
    at: i64,
    state: &str,
    retired: Option<&str>,
) -> Option<StoredReport> {
    match serde_json::from_str(state) {
        Ok(state) => Some(StoredReport {
            retired_boots: parse_retired(&node, retired),
            node,
            boot_id,
            seq: u64::try_from(seq).unwrap_or(0),
            received_at: time(at),
            state,
        }),
        Err(e) => {
            tracing::warn!(node = %node, error = %e, "unreadable report in store; skipped");
            None
        }
    }
}

/// The store: one of the two backends, same calls.
#[derive(Debug)]
pub enum Store {
    /// Embedded SQLite file.
    Sqlite(SqliteStore),
    /// Shared PostgreSQL database.
    Postgres(Box<PgStore>),
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating or migrating if needed) the store.
    ///
    /// # Errors
    /// Unreachable or unreadable database, a newer schema, or a SQLite
    /// store that is not the one written here (see [`Store::accept_empty`]).
    pub fn open(db: &Database) -> Result<Self, StoreError> {
        Ok(match db {
            Database::Sqlite(p) => Self::Sqlite(SqliteStore::open(p)?),
            Database::Postgres(s) => Self::Postgres(Box::new(PgStore::open(s)?)),
        })
    }

    /// Adopts the store at `db` as it is when it lost its id (emptied,
    /// truncated, lost its WAL) or holds another store's: what
    /// `--accept-empty-store` asks for. Does nothing to PostgreSQL, whose
    /// store keeps no id (there is no local file to compare it with).
    ///
    /// # Errors
    /// Unreachable or unreadable database, or a newer schema.
    pub fn accept_empty(db: &Database) -> Result<(), StoreError> {
        match db {
            Database::Sqlite(p) => SqliteStore::open_with(p, true).map(drop),
            Database::Postgres(_) => Ok(()),
        }
    }

    /// Whether the store is shared with other replicas (then changes made
    /// elsewhere must be followed).
    #[must_use]
    pub fn shared(&self) -> Option<&PgSettings> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(p) => Some(p.settings()),
        }
    }

    /// The inventory.
    ///
    /// # Errors
    /// Database errors.
    pub fn nodes(&mut self) -> Result<Vec<(String, Labels)>, StoreError> {
        both!(self, s => s.nodes())
    }

    /// Nodes of the inventory that their agent added (open inventory),
    /// rather than the configuration or the API.
    ///
    /// # Errors
    /// Database errors.
    pub fn agent_nodes(&mut self) -> Result<Vec<String>, StoreError> {
        both!(self, s => s.agent_nodes())
    }

    /// Every waiver that has not ended, expired or not, with the boot clock
    /// it was granted at (the aggregator's `clock::waiver_left` reads it).
    ///
    /// # Errors
    /// Database errors.
    pub fn open_waivers(&mut self) -> Result<Vec<(Waiver, Option<BootAnchor>)>, StoreError> {
        both!(self, s => s.open_waivers())
    }

    /// Last persisted report of every node, with the boot ids its agent
    /// left behind.
    ///
    /// # Errors
    /// Database errors.
    pub fn reports(&mut self) -> Result<Vec<StoredReport>, StoreError> {
        both!(self, s => s.reports())
    }

    /// Waivers that have not ended and not expired at `now`.
    ///
    /// # Errors
    /// Database errors.
    pub fn active_waivers(&mut self, now: SystemTime) -> Result<Vec<Waiver>, StoreError> {
        both!(self, s => s.active_waivers(now))
    }

    /// Adds or relabels a node, with an audit entry.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn upsert_node(
        &mut self,
        name: &str,
        labels: &Labels,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        both!(self, s => s.upsert_node(name, labels, actor, at))
    }

    /// Removes a node and its report, with an audit entry.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn remove_node(
        &mut self,
        name: &str,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        both!(self, s => s.remove_node(name, actor, at))
    }

    /// Stores a new waiver (its `id` is ignored) and returns it with its id.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn insert_waiver(&mut self, w: Waiver) -> Result<Waiver, StoreError> {
        both!(self, s => s.insert_waiver(w))
    }

    /// Ends a waiver (removed by someone, or expired), with an audit entry.
    /// Returns `false`, writing nothing, when it had already ended (another
    /// replica removed or expired it first): each end is audited once.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn end_waiver(
        &mut self,
        w: &Waiver,
        actor: &str,
        action: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        both!(self, s => s.end_waiver(w, actor, action, at))
    }

    /// Ends every waiver whose expiry is at or before `now` and that is not
    /// ended yet, each with one `waiver.expire` audit entry dated at its
    /// expiry; returns how many. This is the catch-up for expiries the
    /// sweeper could not record (the database was down, or no replica was
    /// running): waivers end once, also when replicas race.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn expire_due(&mut self, now: SystemTime) -> Result<usize, StoreError> {
        both!(self, s => s.expire_due(now))
    }

    /// Writes a batch of reports (latest per node) in one transaction,
    /// each with its node's retired boot ids (a report with none keeps the
    /// stored ones).
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn save_reports(&mut self, batch: &[PendingReport]) -> Result<(), StoreError> {
        both!(self, s => s.save_reports(batch))
    }

    /// The newest `limit` audit entries, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn audit(&mut self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        both!(self, s => s.audit(limit))
    }

    /// Appends one audit entry that goes with no other change (a refused
    /// credential).
    ///
    /// # Errors
    /// Database errors.
    pub fn append_audit(
        &mut self,
        at: SystemTime,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        both!(self, s => s.append_audit(at, actor, action, detail))
    }

    /// A write to the database, synced (readiness: a store that cannot be
    /// written cannot record a waiver's end).
    ///
    /// # Errors
    /// Database errors.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        both!(self, s => s.ping())
    }
}

#[cfg(test)]
mod origin_tests {
    /// A node its agent relabels keeps taking its labels from its agent
    /// when the audit names the credential (`agent:NAME`).
    #[test]
    fn an_agent_credential_keeps_the_agent_origin() {
        assert_eq!(super::origin("agent"), "agent");
        assert_eq!(super::origin("agent:node-token:n1"), "agent");
        assert_eq!(super::origin("api"), "inventory");
        assert_eq!(super::origin("agentx"), "inventory");
    }
}

#[cfg(test)]
mod retired_tests {
    use super::{parse_retired, retired_json};

    /// Fingerprints are stored as 16 hex digits each with the boot's last
    /// sequence number, and read back as written; none is NULL (keep what
    /// is stored).
    #[test]
    fn retired_boots_round_trip_as_hex() {
        let ids = [(0, 1), (0xab, 42), (u64::MAX, u64::MAX)];
        let json = retired_json(&ids);
        assert_eq!(
            json.as_deref(),
            Some(
                r#"["0000000000000000:1","00000000000000ab:42","ffffffffffffffff:18446744073709551615"]"#
            )
        );
        assert_eq!(parse_retired("n", json.as_deref()), ids);
        assert_eq!(retired_json(&[]), None);
        assert!(parse_retired("n", None).is_empty());
    }

    /// An unreadable column is ignored (the node keeps only its stored
    /// boot, as before the column existed), never a failed start.
    #[test]
    fn unreadable_retired_boots_are_ignored() {
        for bad in [
            "",
            "{}",
            r#"["xyz"]"#,
            r#"[1]"#,
            r#"["1ffffffffffffffff:1"]"#,
            r#"["00000000000000ab"]"#,
            r#"["00000000000000ab:x"]"#,
        ] {
            assert!(parse_retired("n", Some(bad)).is_empty(), "{bad}");
        }
    }
}
