//! The SQLite backend: one file in WAL mode, for a single aggregator (the
//! default, and what `preflight up` uses). Its schema version lives in the
//! `meta` table, as it always has. Two files live beside it (`beside`): a
//! reserve of disk space for recording waiver ends on a full disk, and the
//! store id that tells an emptied database from a new one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use preflight_model::report::Waiver;
use rusqlite::{params, Connection, OptionalExtension};

use crate::BootAnchor;

use super::beside::{self, Reserve};
use super::rows::{self as row, Audit};
use super::{millis, retired_json, Labels, PendingReport, StoreError};

mod lease;
mod read;

const SCHEMA_VERSION: i64 = 1;

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    reserve: Reserve,
    /// When the reserve was last tried outside readiness checks.
    reserve_tried: Option<std::time::Instant>,
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
    /// When the file cannot be opened, has a newer schema, or is not the
    /// store written here (its id file says otherwise).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false)
    }

    /// [`Self::open`]; with `accept_empty`, a database that is not the
    /// store written here (emptied, replaced) is adopted as it is.
    ///
    /// # Errors
    /// When the file cannot be opened or has a newer schema.
    pub fn open_with(path: &Path, accept_empty: bool) -> Result<Self, StoreError> {
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
        conn.execute_batch(lease::TABLES).map_err(err)?;
        // Columns added since schema 1; optional, so that an older
        // preflight can still read and write this file (one that writes a
        // report leaves `retired_boots` as it was: boot ids retired
        // meanwhile are not recorded, none is forgotten).
        for (table, column, decl) in [
            ("nodes", "origin", "TEXT NOT NULL DEFAULT 'inventory'"),
            ("waivers", "boot_id", "TEXT"),
            ("waivers", "boot_ms", "INTEGER"),
            ("reports", "retired_boots", "TEXT"),
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
        beside::check_id(&conn, path, accept_empty)?;
        let mut reserve = Reserve::of(path);
        if let Err(e) = reserve.ensure() {
            // Serving from memory is still right; readiness says no, and
            // writes other than waiver ends wait for the reserve.
            tracing::error!(error = %e, "no reserve for recording waiver ends on a full disk");
        }
        Ok(Self {
            conn,
            path: p,
            reserve,
            reserve_tried: None,
        })
    }

    /// Refuses a write that would use space kept for waiver ends while the
    /// reserve is spent (tried again every 10 s): only ends, which free a
    /// waiver's promise, may use what the reserve gave back.
    fn hold_reserve(&mut self) -> Result<(), StoreError> {
        if self.reserve.present() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        if self
            .reserve_tried
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.reserve_tried = Some(now);
            if self.reserve.ensure().is_ok() {
                return Ok(());
            }
        }
        Err(self.reserve.spent())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn audit_tx(tx: &rusqlite::Transaction<'_>, a: &Audit<'_>) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO audit(at, actor, action, detail) VALUES(?1, ?2, ?3, ?4)",
            params![a.at_ms(), a.actor, a.action, a.detail],
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
        self.hold_reserve()?;
        self.in_tx(|tx| Self::audit_tx(tx, &Audit::new(at, actor, action, detail)))
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
        self.hold_reserve()?;
        let labels_json = serde_json::to_string(labels).expect("string map serializes");
        let origin = super::origin(actor);
        self.in_durable_tx(|tx| {
            tx.execute(
                "INSERT INTO nodes(name, labels, added_at, origin) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET labels=excluded.labels, origin=excluded.origin",
                params![name, labels_json, millis(at), origin],
            )?;
            Self::audit_tx(tx, &Audit::node_upsert(name, labels, actor, at))
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
            Self::audit_tx(tx, &Audit::node_remove(name, actor, at))
        })
    }

    /// Stores a new waiver (its `id` is ignored) and returns it with its id.
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn insert_waiver(&mut self, mut w: Waiver) -> Result<Waiver, StoreError> {
        // A waiver is granted only while its end can be recorded.
        self.hold_reserve()?;
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
            Self::audit_tx(tx, &Audit::waiver_create(&w))?;
            Ok(w)
        })
    }

    /// Ends a waiver (removed by someone, or expired), with an audit entry.
    /// On a full disk the reserve is given back and the end tried again:
    /// an end that only memory holds would be undone by a restart.
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
        match self.end_waiver_once(w, actor, action, at) {
            Err(e) if is_full(&e) && self.reserve.release() => {
                tracing::error!(
                    waiver = w.id,
                    store = %self.path,
                    "disk full: gave back the reserve to record this waiver's end; free space on the store's file system (not ready until the reserve is back)"
                );
                self.end_waiver_once(w, actor, action, at)
            }
            r => r,
        }
    }

    fn end_waiver_once(
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
            Self::audit_tx(tx, &Audit::waiver_end(w, actor, action, at))?;
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
                let rows = st.query_map([millis(now)], |r| row::waiver(r))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            for w in &due {
                tx.execute(
                    "UPDATE waivers SET ended_at=expires_at, ended_by='aggregator' WHERE id=?1",
                    [w.id],
                )?;
                Self::audit_tx(tx, &Audit::waiver_expire(w))?;
            }
            Ok(due.len())
        })
    }

    /// Writes a batch of reports (latest per node) in one transaction,
    /// each with its node's retired boot ids in the same row (a report
    /// with none keeps the stored ones).
    ///
    /// # Errors
    /// SQLite errors; nothing is written then.
    pub fn save_reports(&mut self, batch: &[PendingReport]) -> Result<(), StoreError> {
        self.hold_reserve()?;
        self.in_tx(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO reports(node, boot_id, seq, received_at, state, retired_boots)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(node) DO UPDATE SET boot_id=excluded.boot_id, seq=excluded.seq,
                 received_at=excluded.received_at, state=excluded.state,
                 retired_boots=COALESCE(excluded.retired_boots, reports.retired_boots)",
            )?;
            for r in batch {
                st.execute(params![
                    r.node,
                    r.boot_id,
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    millis(r.received_at),
                    r.state_json,
                    retired_json(&r.retired_boots)
                ])?;
            }
            Ok(())
        })
    }

    /// Whether the store can take a write: the reserve in place, a synced
    /// write to the database, a row put into each table that waivers and
    /// inventory change and taken back (a corrupt page of one of them
    /// fails every such write, not this probe's own row), and a page-sized
    /// file written and synced beside it. SQLite reuses the space of its
    /// WAL, so a small write to the database alone can succeed on a full
    /// disk that refuses the next waiver.
    ///
    /// # Errors
    /// SQLite or file-system errors.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.reserve.ensure()?;
        self.in_durable_tx(|tx| {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('ready_probe', 0)
                 ON CONFLICT(key) DO UPDATE SET value=value+1",
                [],
            )?;
            tx.execute_batch(
                "SAVEPOINT ready_probe;
                 INSERT INTO audit(at, actor, action, detail) VALUES(0, 'ready_probe', 'ready_probe', '{}');
                 INSERT INTO waivers(node, reason, author, created_at, expires_at)
                     VALUES('', 'ready_probe', 'ready_probe', 0, 0);
                 INSERT OR REPLACE INTO nodes(name, labels, added_at) VALUES('', '{}', 0);
                 ROLLBACK TO ready_probe;
                 RELEASE ready_probe;",
            )
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
}

/// Whether SQLite refused a write for want of space.
fn is_full(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } if f.code == rusqlite::ErrorCode::DiskFull
    )
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

    /// A store written before reports kept their retired boot ids gains
    /// the column in place: its reports read back (with none), and a
    /// report saved now keeps them.
    #[test]
    fn a_store_without_retired_boots_upgrades_in_place() {
        let (_dir, db) = fresh();
        let Database::Sqlite(p) = &db else {
            unreachable!()
        };
        drop(Store::open(&db).expect("new store"));
        {
            let c = rusqlite::Connection::open(p).expect("open");
            let state = serde_json::json!({
                "node": "n1", "verdict": "go", "findings": [], "interfaces": [],
                "bonds": [], "addresses": [], "routes": []
            });
            c.execute_batch(&format!(
                "ALTER TABLE reports DROP COLUMN retired_boots;
                 INSERT INTO reports(node, boot_id, seq, received_at, state)
                 VALUES('n1', 'b2', 3, 0, '{state}');"
            ))
            .expect("an older store");
        }
        let mut s = Store::open(&db).expect("upgraded");
        let r = s.reports().expect("reports");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].boot_id.as_str(), r[0].seq), ("b2", 3));
        assert!(r[0].retired_boots.is_empty());
        let mut again = super::super::PendingReport {
            node: "n1".into(),
            boot_id: "b3".into(),
            seq: 1,
            received_at: std::time::SystemTime::now(),
            state_json: serde_json::to_string(&r[0].state).expect("state"),
            retired_boots: vec![(7, 1), (9, 2)],
        };
        s.save_reports(std::slice::from_ref(&again)).expect("save");
        again.retired_boots.clear();
        again.seq = 2;
        s.save_reports(&[again]).expect("save");
        let r = s.reports().expect("reports");
        assert_eq!(
            (r[0].seq, r[0].retired_boots.as_slice()),
            (2, &[(7, 1), (9, 2)][..])
        );
    }

    #[test]
    fn emptied_store_is_refused_until_accepted() {
        let (_dir, db) = fresh();
        let Database::Sqlite(p) = &db else {
            unreachable!()
        };
        drop(Store::open(&db).expect("new store"));
        drop(Store::open(&db).expect("same store again"));
        std::fs::write(p, b"").expect("truncate");
        let e = Store::open(&db).expect_err("emptied store");
        assert!(e.is_config(), "{e}");
        assert!(e.to_string().contains("--accept-empty-store"), "{e}");
        Store::accept_empty(&db).expect("accepted");
        drop(Store::open(&db).expect("adopted under a new id"));
    }

    #[test]
    fn reserve_is_kept_beside_the_database() {
        let (_dir, db) = fresh();
        let Database::Sqlite(p) = &db else {
            unreachable!()
        };
        let mut s = Store::open(&db).expect("open");
        let reserve = std::path::PathBuf::from(format!("{}.reserve", p.display()));
        let size = std::fs::metadata(&reserve).map(|m| m.len()).ok();
        assert_eq!(size, Some(super::super::RESERVE_BYTES as u64));
        std::fs::remove_file(&reserve).expect("remove reserve");
        s.ping().expect("ready: the reserve is written again");
        assert!(reserve.exists());
    }
}
