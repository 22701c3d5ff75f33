//! What a row of the store holds, written once for both backends: a
//! waiver or an audit entry read back from a row (SQLite's or
//! PostgreSQL's, through [`Row`]), and the audit entry each change
//! appends ([`Audit`]). The backends keep only their SQL and transactions,
//! so they cannot drift apart on what they store.

use std::convert::Infallible;
use std::time::SystemTime;

use preflight_model::report::Waiver;

use crate::{millis, time, AuditEntry, BootAnchor, Labels};

/// A row of either backend, read by column index (0-based).
pub(crate) trait Row {
    /// What a failed read is: SQLite's error; PostgreSQL's rows are read
    /// with its panicking getters, whose types the schema fixes.
    type Error;
    /// An integer column.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// A nullable integer column.
    fn maybe_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A text column.
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A nullable text column.
    fn maybe_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
}

impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn maybe_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn maybe_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
}

impl Row for postgres::Row {
    type Error = Infallible;
    fn int(&self, i: usize) -> Result<i64, Infallible> {
        Ok(self.get(i))
    }
    fn maybe_int(&self, i: usize) -> Result<Option<i64>, Infallible> {
        Ok(self.get(i))
    }
    fn text(&self, i: usize) -> Result<String, Infallible> {
        Ok(self.get(i))
    }
    fn maybe_text(&self, i: usize) -> Result<Option<String>, Infallible> {
        Ok(self.get(i))
    }
}

/// The value of a read that cannot fail (a PostgreSQL row).
pub(crate) fn sure<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// A waiver from the columns `id, node, code, subject, reason, author,
/// created_at, expires_at`, in that order.
pub(crate) fn waiver<R: Row + ?Sized>(r: &R) -> Result<Waiver, R::Error> {
    Ok(Waiver {
        id: r.int(0)?,
        node: r.text(1)?,
        code: r.maybe_text(2)?,
        subject: r.maybe_text(3)?,
        reason: r.text(4)?,
        author: r.text(5)?,
        created_at: time(r.int(6)?),
        expires_at: time(r.int(7)?),
    })
}

/// A waiver ([`waiver`]'s columns) followed by `boot_id, boot_ms`: with
/// the boot clock it was granted at, when both are stored.
pub(crate) fn anchored_waiver<R: Row + ?Sized>(
    r: &R,
) -> Result<(Waiver, Option<BootAnchor>), R::Error> {
    let anchor = match (r.maybe_text(8)?, r.maybe_int(9)?) {
        (Some(boot_id), Some(boot_ms)) => Some(BootAnchor { boot_id, boot_ms }),
        _ => None,
    };
    Ok((waiver(r)?, anchor))
}

/// An audit entry from the columns `id, at, actor, action, detail`; an
/// unreadable detail reads as null.
pub(crate) fn audit_entry<R: Row + ?Sized>(r: &R) -> Result<AuditEntry, R::Error> {
    Ok(AuditEntry {
        id: r.int(0)?,
        at: time(r.int(1)?),
        actor: r.text(2)?,
        action: r.text(3)?,
        detail: serde_json::from_str(&r.text(4)?).unwrap_or(serde_json::Value::Null),
    })
}

/// An audit entry to append (`INSERT INTO audit(at, actor, action,
/// detail)`), as both backends write it for each change.
pub(crate) struct Audit<'a> {
    /// When.
    pub at: SystemTime,
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// Details, as JSON text.
    pub detail: String,
}

impl<'a> Audit<'a> {
    /// `node.upsert`: a node added or relabeled.
    pub fn node_upsert(name: &str, labels: &Labels, actor: &'a str, at: SystemTime) -> Self {
        let detail = serde_json::json!({ "node": name, "labels": labels });
        Self::new(at, actor, "node.upsert", &detail)
    }

    /// `node.remove`: a node removed with its report.
    pub fn node_remove(name: &str, actor: &'a str, at: SystemTime) -> Self {
        Self::new(
            at,
            actor,
            "node.remove",
            &serde_json::json!({ "node": name }),
        )
    }

    /// `waiver.create`, by its author, when it was created.
    pub fn waiver_create(w: &'a Waiver) -> Self {
        Self::new(w.created_at, &w.author, "waiver.create", &waiver_detail(w))
    }

    /// A waiver ended by `actor` (`action`: `waiver.remove` or
    /// `waiver.expire`).
    pub fn waiver_end(w: &Waiver, actor: &'a str, action: &'a str, at: SystemTime) -> Self {
        Self::new(at, actor, action, &waiver_detail(w))
    }

    /// `waiver.expire` by the aggregator, dated at the expiry: one the
    /// sweeper could not record in time, caught up.
    pub fn waiver_expire(w: &Waiver) -> Self {
        Self::waiver_end(w, "aggregator", "waiver.expire", w.expires_at)
    }

    /// Any entry.
    pub fn new(
        at: SystemTime,
        actor: &'a str,
        action: &'a str,
        detail: &serde_json::Value,
    ) -> Self {
        Self {
            at,
            actor,
            action,
            detail: detail.to_string(),
        }
    }

    /// The `at` column: milliseconds since the epoch.
    pub fn at_ms(&self) -> i64 {
        millis(self.at)
    }
}

/// A waiver as its audit entries record it.
pub(crate) fn waiver_detail(w: &Waiver) -> serde_json::Value {
    serde_json::to_value(w).expect("waiver serializes")
}
