//! The SQLite backend: one file in WAL mode, for a single aggregator (the
//! default, and what `preflight up` uses). Its schema version lives in the
//! `meta` table, as it always has.

use std::path::Path;
use std::time::{Duration, SystemTime};

use preflight_model::report::Waiver;
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::BootAnchor;

use super::{
    millis, parse_labels, parse_report, time, AuditEntry, Labels, PendingReport, StoreError,
    StoredReport,
};

const SCHEMA_VERSION: i64 = 1;

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or has a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS nodes(
                 name TEXT PRIMARY KEY, labels TEXT NOT NULL, added_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS reports(
                 node TEXT PRIMARY KEY, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 received_at INTEGER NOT NULL, state TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS waivers(
                 id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, code TEXT, subject TEXT,
                 reason TEXT NOT NULL, author TEXT NOT NULL, created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL, ended_at INTEGER, ended_by TEXT);
             CREATE TABLE IF NOT EXISTS audit(
                 id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
                 action TEXT NOT NULL, detail TEXT NOT NULL);",
        )
        .map_err(err)?;
        // Columns added since schema 1; optional, so that an older
        // preflight can still read and write this file.
        for (table, column, decl) in [
            ("nodes", "origin", "TEXT NOT NULL DEFAULT 'inventory'"),
            ("waivers", "boot_id", "TEXT"),
            ("waivers", "boot_ms", "INTEGER"),
        ] {
            let has: bool = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name=?1"),
                    [column],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(err)?
                > 0;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(err)?;
            }
        }
        let found: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key='schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    path: p,
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(err)?;
            }
        }
        Ok(Self { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

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
            .query_map([], |r| {
                let anchor = match (r.get::<_, Option<String>>(8)?, r.get::<_, Option<i64>>(9)?) {
                    (Some(boot_id), Some(boot_ms)) => Some(BootAnchor { boot_id, boot_ms }),
                    _ => None,
                };
                Ok((
                    Waiver {
                        id: r.get(0)?,
                        node: r.get(1)?,
                        code: r.get(2)?,
                        subject: r.get(3)?,
                        reason: r.get(4)?,
                        author: r.get(5)?,
                        created_at: time(r.get(6)?),
                        expires_at: time(r.get(7)?),
                    },
                    anchor,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Last persisted report of every node.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reports(&self) -> Result<Vec<StoredReport>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT node, boot_id, seq, received_at, state FROM reports")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (node, boot_id, seq, at, state) = row.map_err(|e| self.err(e))?;
            out.extend(parse_report(node, boot_id, seq, at, &state));
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
            .query_map([millis(now)], |r| {
                Ok(Waiver {
                    id: r.get(0)?,
                    node: r.get(1)?,
                    code: r.get(2)?,
                    subject: r.get(3)?,
                    reason: r.get(4)?,
                    author: r.get(5)?,
                    created_at: time(r.get(6)?),
                    expires_at: time(r.get(7)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn audit_tx(
        tx: &rusqlite::Transaction<'_>,
        at: SystemTime,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO audit(at, actor, action, detail) VALUES(?1, ?2, ?3, ?4)",
            params![millis(at), actor, action, detail.to_string()],
        )
        .map(|_| ())
    }

    /// Appends one audit entry on its own.
    pub(super) fn append_audit(
        &mut self,
        at: SystemTime,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.in_tx(|tx| Self::audit_tx(tx, at, actor, action, detail))
    }

    /// Like [`Self::in_tx`], but synced to disk before it returns
    /// (`synchronous=FULL`): waivers, inventory and their audit entries must
    /// survive a power loss once acknowledged; reports need not.
    fn in_durable_tx<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute_batch("PRAGMA synchronous=FULL")
            .map_err(|e| self.err(e))?;
        let r = self.in_tx(f);
        let back = self
            .conn
            .execute_batch("PRAGMA synchronous=NORMAL")
            .map_err(|e| self.err(e));
        let v = r?;
        back?;
        Ok(v)
    }

    /// Runs `f` in one transaction: all of it is written, or nothing.
    fn in_tx<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let result = (|| {
            let tx = self.conn.transaction()?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })();
        result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Adds or relabels a node, with an audit entry.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn upsert_node(
        &mut self,
        name: &str,
        labels: &Labels,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let labels_json = serde_json::to_string(labels).expect("string map serializes");
        let origin = super::origin(actor);
        self.in_durable_tx(|tx| {
            tx.execute(
                "INSERT INTO nodes(name, labels, added_at, origin) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET labels=excluded.labels, origin=excluded.origin",
                params![name, labels_json, millis(at), origin],
            )?;
            Self::audit_tx(
                tx,
                at,
                actor,
                "node.upsert",
                &serde_json::json!({ "node": name, "labels": labels }),
            )
        })
    }

    /// Removes a node and its report, with an audit entry.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn remove_node(
        &mut self,
        name: &str,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.in_durable_tx(|tx| {
            tx.execute("DELETE FROM nodes WHERE name=?1", [name])?;
            tx.execute("DELETE FROM reports WHERE node=?1", [name])?;
            Self::audit_tx(
                tx,
                at,
                actor,
                "node.remove",
                &serde_json::json!({ "node": name }),
            )
        })
    }

    /// Stores a new waiver (its `id` is ignored) and returns it with its id.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn insert_waiver(&mut self, mut w: Waiver) -> Result<Waiver, StoreError> {
        let anchor = BootAnchor::now();
        self.in_durable_tx(|tx| {
            tx.execute(
                "INSERT INTO waivers(node, code, subject, reason, author, created_at, expires_at, boot_id, boot_ms)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    w.node,
                    w.code,
                    w.subject,
                    w.reason,
                    w.author,
                    millis(w.created_at),
                    millis(w.expires_at),
                    anchor.as_ref().map(|a| a.boot_id.as_str()),
                    anchor.as_ref().map(|a| a.boot_ms)
                ],
            )?;
            w.id = tx.last_insert_rowid();
            let detail = serde_json::to_value(&w).expect("waiver serializes");
            Self::audit_tx(tx, w.created_at, &w.author, "waiver.create", &detail)?;
            Ok(w)
        })
    }

    /// Ends a waiver (removed by someone, or expired), with an audit entry.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn end_waiver(
        &mut self,
        w: &Waiver,
        actor: &str,
        action: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.in_durable_tx(|tx| {
            let ended = tx.execute(
                "UPDATE waivers SET ended_at=?1, ended_by=?2 WHERE id=?3 AND ended_at IS NULL",
                params![millis(at), actor, w.id],
            )?;
            if ended == 0 {
                return Ok(false);
            }
            Self::audit_tx(
                tx,
                at,
                actor,
                action,
                &serde_json::to_value(w).expect("waiver serializes"),
            )?;
            Ok(true)
        })
    }

    /// Ends every waiver past its expiry that is not ended yet, each with
    /// its `waiver.expire` audit entry dated at its expiry; returns how many.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn expire_due(&mut self, now: SystemTime) -> Result<usize, StoreError> {
        self.in_tx(|tx| {
            let due = {
                let mut st = tx.prepare(
                    "SELECT id, node, code, subject, reason, author, created_at, expires_at FROM waivers
                     WHERE ended_at IS NULL AND expires_at <= ?1 ORDER BY id",
                )?;
                let rows = st.query_map([millis(now)], |r| {
                    Ok(Waiver {
                        id: r.get(0)?,
                        node: r.get(1)?,
                        code: r.get(2)?,
                        subject: r.get(3)?,
                        reason: r.get(4)?,
                        author: r.get(5)?,
                        created_at: time(r.get(6)?),
                        expires_at: time(r.get(7)?),
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for w in &due {
                tx.execute(
                    "UPDATE waivers SET ended_at=expires_at, ended_by='aggregator' WHERE id=?1",
                    [w.id],
                )?;
                let detail = serde_json::to_value(w).expect("waiver serializes");
                Self::audit_tx(tx, w.expires_at, "aggregator", "waiver.expire", &detail)?;
            }
            Ok(due.len())
        })
    }

    /// Writes a batch of reports (latest per node) in one transaction.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn save_reports(&mut self, batch: &[PendingReport]) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO reports(node, boot_id, seq, received_at, state) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(node) DO UPDATE SET boot_id=excluded.boot_id, seq=excluded.seq,
                 received_at=excluded.received_at, state=excluded.state",
            )?;
            for r in batch {
                st.execute(params![
                    r.node,
                    r.boot_id,
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    millis(r.received_at),
                    r.state_json
                ])?;
            }
            Ok(())
        })
    }

    /// Whether the store can take a write: a synced write to the database,
    /// and a page-sized file written and synced beside it. SQLite reuses
    /// the space of its WAL, so a small write to the database alone can
    /// succeed on a full disk that refuses the next waiver.
    ///
    /// # Errors
    /// SQLite or file-system errors.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.in_durable_tx(|tx| {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('ready_probe', 0)
                 ON CONFLICT(key) DO UPDATE SET value=value+1",
                [],
            )
            .map(|_| ())
        })?;
        let probe = format!("{}-ready", self.path);
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(&[0u8; 8192])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| StoreError::Unwritable {
            path: probe,
            source: e,
        })
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
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: time(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: serde_json::from_str(&r.get::<_, String>(4)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{suite, Database, Store};

    fn fresh() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::Sqlite(dir.path().join("store.db"));
        (dir, db)
    }

    #[test]
    fn store_suite() {
        let (_dir, db) = fresh();
        suite::run_all(&db);
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_dir, db) = fresh();
        let Database::Sqlite(p) = &db else {
            unreachable!()
        };
        {
            let c = rusqlite::Connection::open(p).expect("open");
            c.execute_batch("CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL); INSERT INTO meta VALUES('schema_version', 99);")
                .expect("seed");
        }
        let e = Store::open(&db).expect_err("newer schema");
        assert!(e.is_config(), "{e}");
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
