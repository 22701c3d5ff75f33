//! Reads of the SQLite store: what start-up restores, and the audit log.

use std::time::SystemTime;

use preflight_model::report::Waiver;

use crate::rows as row;
use crate::BootAnchor;

use super::super::{millis, parse_labels, parse_report, AuditEntry, Labels, StoredReport};
use super::{SqliteStore, StoreError};

impl SqliteStore {
    /// The inventory.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn nodes(&self) -> Result<Vec<(String, Labels)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT name, labels FROM nodes ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, labels) = row.map_err(|e| self.err(e))?;
            if let Some(l) = parse_labels(&name, &labels) {
                out.push((name, l));
            }
        }
        Ok(out)
    }

    /// Nodes of the inventory that their agent added (open inventory).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn agent_nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM nodes WHERE origin='agent'")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Every waiver that has not ended, expired or not, with the boot clock
    /// it was granted at (for restoring waivers after a restart).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_waivers(&self) -> Result<Vec<(Waiver, Option<BootAnchor>)>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, node, code, subject, reason, author, created_at, expires_at, boot_id, boot_ms
                 FROM waivers WHERE ended_at IS NULL ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| row::anchored_waiver(r))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Last persisted report of every node, with its retired boot ids.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reports(&self) -> Result<Vec<StoredReport>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT node, boot_id, seq, received_at, state, retired_boots FROM reports")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (node, boot_id, seq, at, state, retired) = row.map_err(|e| self.err(e))?;
            out.extend(parse_report(
                node,
                boot_id,
                seq,
                at,
                &state,
                retired.as_deref(),
            ));
        }
        Ok(out)
    }

    /// Waivers that have not ended and not expired at `now`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn active_waivers(&self, now: SystemTime) -> Result<Vec<Waiver>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, node, code, subject, reason, author, created_at, expires_at FROM waivers
                 WHERE ended_at IS NULL AND expires_at > ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([millis(now)], |r| row::waiver(r))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The newest `limit` audit entries, newest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([limit], |r| row::audit_entry(r))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}
