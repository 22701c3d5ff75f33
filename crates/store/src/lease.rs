//! Maintenance leases: nodes a pipeline takes down for an update, for a
//! bounded time. A node is under at most one lease: each backend keeps a
//! `lease_nodes` row per leased node with the node as its primary key, so
//! that two replicas (or two pipelines) can never both lease it, and takes
//! leases under a lock ([`Store::take_lease`]) so that a plan's limits are
//! checked against every lease in force, whichever replica took it.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::rows::{Audit, Row};
use super::{time, Store, StoreError};

/// One maintenance lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Id (assigned by the store).
    pub id: i64,
    /// The nodes under it, sorted.
    pub nodes: Vec<String>,
    /// The pipeline that holds it.
    pub pipeline: String,
    /// Why.
    pub reason: String,
    /// Who asked for it (the credential's name).
    pub author: String,
    /// When it was taken.
    #[serde(with = "preflight_model::time::rfc3339")]
    pub created_at: SystemTime,
    /// When it ends unless ended earlier.
    #[serde(with = "preflight_model::time::rfc3339")]
    pub expires_at: SystemTime,
}

/// What [`Store::take_lease`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The lease is stored, with its id.
    Leased(Lease),
    /// Nothing was asked for.
    Nothing,
    /// These nodes are under another lease: nothing was written.
    Conflict(Vec<String>),
}

/// The columns every lease query selects, in [`lease`]'s order.
pub(crate) const COLUMNS: &str = "id, nodes, pipeline, reason, author, created_at, expires_at";

/// A lease from [`COLUMNS`]; an unreadable node list reads as empty (the
/// lease still ends on time).
pub(crate) fn lease<R: Row + ?Sized>(r: &R) -> Result<Lease, R::Error> {
    let id = r.int(0)?;
    let nodes = serde_json::from_str(&r.text(1)?).unwrap_or_else(|e| {
        tracing::warn!(lease = id, error = %e, "unreadable nodes of a lease in store; read as none");
        Vec::new()
    });
    Ok(Lease {
        id,
        nodes,
        pipeline: r.text(2)?,
        reason: r.text(3)?,
        author: r.text(4)?,
        created_at: time(r.int(5)?),
        expires_at: time(r.int(6)?),
    })
}

/// The `nodes` column.
pub(crate) fn nodes_json(l: &Lease) -> String {
    serde_json::to_string(&l.nodes).expect("a list of strings serializes")
}

/// `lease.create` by its author.
pub(crate) fn audit_create(l: &Lease) -> Audit<'_> {
    Audit::new(l.created_at, &l.author, "lease.create", &detail(l))
}

/// `lease.end` (ended early by `actor`) or `lease.expire`.
pub(crate) fn audit_end<'a>(
    l: &Lease,
    actor: &'a str,
    action: &'a str,
    at: SystemTime,
) -> Audit<'a> {
    Audit::new(at, actor, action, &detail(l))
}

fn detail(l: &Lease) -> serde_json::Value {
    serde_json::to_value(l).expect("a lease serializes")
}

/// The nodes of `l` already in `leased`, sorted.
pub(crate) fn conflicts(l: &Lease, leased: &BTreeSet<String>) -> Vec<String> {
    l.nodes
        .iter()
        .filter(|n| leased.contains(*n))
        .cloned()
        .collect()
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
    /// Every lease that has not ended (expired ones the sweeper has not
    /// ended yet included), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn open_leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        both!(self, s => s.open_leases())
    }

    /// Takes a lease atomically: under a lock that every replica's
    /// `take_lease` takes, ends the leases expired at `now`, reads the
    /// nodes under a lease, and calls `choose` with them; the lease it
    /// returns (its `id` ignored) is stored with a `lease.create` audit
    /// entry unless one of its nodes is already leased. `choose`'s second
    /// value is handed back as it is (a plan's explanation).
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn take_lease<T>(
        &mut self,
        now: SystemTime,
        choose: impl FnOnce(&BTreeSet<String>) -> (Option<Lease>, T),
    ) -> Result<(Taken, T), StoreError> {
        both!(self, s => s.take_lease(now, choose))
    }

    /// Ends lease `id` early, with a `lease.end` audit entry by `actor`;
    /// `None` when it is unknown or already ended.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn end_lease(
        &mut self,
        id: i64,
        actor: &str,
        at: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        both!(self, s => s.end_lease(id, actor, at))
    }

    /// Ends every lease expired at `now`, each with one `lease.expire`
    /// audit entry dated at its expiry (once across replicas); returns them.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub fn expire_leases(&mut self, now: SystemTime) -> Result<Vec<Lease>, StoreError> {
        both!(self, s => s.expire_leases(now))
    }
}
