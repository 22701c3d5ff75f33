//! Maintenance leases on SQLite (see [`crate::lease`]). One aggregator
//! owns the file, and every call runs in one transaction, so the
//! `lease_nodes` primary key is the only guard needed.

use std::collections::BTreeSet;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteStore;
use crate::lease::{self, Lease, Taken, COLUMNS};
use crate::{millis, StoreError};

/// The lease tables, created if missing (a file of an older preflight
/// gains them; an older preflight ignores them).
pub(super) const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS leases(
        id INTEGER PRIMARY KEY AUTOINCREMENT, nodes TEXT NOT NULL, pipeline TEXT NOT NULL,
        reason TEXT NOT NULL, author TEXT NOT NULL, created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, ended_at INTEGER, ended_by TEXT);
    CREATE TABLE IF NOT EXISTS lease_nodes(node TEXT PRIMARY KEY, lease_id INTEGER NOT NULL);";

fn expire(tx: &Transaction<'_>, now: SystemTime) -> rusqlite::Result<Vec<Lease>> {
    let due = {
        let mut st = tx.prepare(&format!(
            "SELECT {COLUMNS} FROM leases WHERE ended_at IS NULL AND expires_at <= ?1 ORDER BY id"
        ))?;
        let rows = st.query_map([millis(now)], |r| lease::lease(r))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    for l in &due {
        tx.execute(
            "UPDATE leases SET ended_at=expires_at, ended_by='aggregator' WHERE id=?1",
            [l.id],
        )?;
        tx.execute("DELETE FROM lease_nodes WHERE lease_id=?1", [l.id])?;
        SqliteStore::audit_tx(
            tx,
            &lease::audit_end(l, "aggregator", "lease.expire", l.expires_at),
        )?;
    }
    Ok(due)
}

impl SqliteStore {
    pub(crate) fn open_leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM leases WHERE ended_at IS NULL ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| lease::lease(r))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>);
        drop(st);
        rows.map_err(|e| self.err(e))
    }

    pub(crate) fn take_lease<T>(
        &mut self,
        now: SystemTime,
        choose: impl FnOnce(&BTreeSet<String>) -> (Option<Lease>, T),
    ) -> Result<(Taken, T), StoreError> {
        self.hold_reserve()?;
        self.in_durable_tx(|tx| {
            expire(tx, now)?;
            let leased = {
                let mut st = tx.prepare("SELECT node FROM lease_nodes")?;
                let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<BTreeSet<_>>>()?
            };
            let (asked, t) = choose(&leased);
            let Some(mut l) = asked else {
                return Ok((Taken::Nothing, t));
            };
            let taken = lease::conflicts(&l, &leased);
            if !taken.is_empty() {
                return Ok((Taken::Conflict(taken), t));
            }
            tx.execute(
                "INSERT INTO leases(nodes, pipeline, reason, author, created_at, expires_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    lease::nodes_json(&l),
                    l.pipeline,
                    l.reason,
                    l.author,
                    millis(l.created_at),
                    millis(l.expires_at)
                ],
            )?;
            l.id = tx.last_insert_rowid();
            for n in &l.nodes {
                tx.execute(
                    "INSERT INTO lease_nodes(node, lease_id) VALUES(?1, ?2)",
                    params![n, l.id],
                )?;
            }
            Self::audit_tx(tx, &lease::audit_create(&l))?;
            Ok((Taken::Leased(l), t))
        })
    }

    pub(crate) fn end_lease(
        &mut self,
        id: i64,
        actor: &str,
        at: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        self.in_durable_tx(|tx| {
            let l = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM leases WHERE id=?1 AND ended_at IS NULL"),
                    [id],
                    |r| lease::lease(r),
                )
                .optional()?;
            let Some(l) = l else { return Ok(None) };
            tx.execute(
                "UPDATE leases SET ended_at=?1, ended_by=?2 WHERE id=?3",
                params![millis(at), actor, id],
            )?;
            tx.execute("DELETE FROM lease_nodes WHERE lease_id=?1", [id])?;
            Self::audit_tx(tx, &lease::audit_end(&l, actor, "lease.end", at))?;
            Ok(Some(l))
        })
    }

    pub(crate) fn expire_leases(&mut self, now: SystemTime) -> Result<Vec<Lease>, StoreError> {
        self.in_durable_tx(|tx| expire(tx, now))
    }
}
