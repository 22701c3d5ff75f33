//! Files kept beside a SQLite store, for the two faults the database file
//! cannot report on its own. The reserve (`<db>.reserve`) holds space on the
//! store's file system that is given back when a waiver's end meets a full
//! disk, so that the end is recorded instead of living only in memory (a
//! restart would then bring the waiver back: a false go). The store id
//! (`<db>.id`) repeats an id kept in the database, so that a database that
//! lost its WAL or was truncated, replaced or recreated empty is refused at
//! start instead of serving without its waivers and audit log.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// Size of the reserve: room for hundreds of waiver ends (a few pages of
/// WAL each), small next to any file system a database lives on.
pub const RESERVE_BYTES: usize = 2 * 1024 * 1024;

fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Space held on the database's file system for recording waiver ends on
/// a full disk.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    /// Whether the file is in place at full size (as far as this process
    /// made or checked it).
    present: bool,
}

impl Reserve {
    /// The reserve of the database at `db`, not yet checked.
    pub(super) fn of(db: &Path) -> Self {
        Self {
            path: beside(db, ".reserve"),
            present: false,
        }
    }

    pub(super) fn present(&self) -> bool {
        self.present
    }

    /// Makes sure the reserve is in place at full size, writing it if not
    /// (a partial one is removed: it would hold space without the promise).
    ///
    /// # Errors
    /// The file system refuses the write (full, read-only).
    pub(super) fn ensure(&mut self) -> Result<(), StoreError> {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).ok();
        if size == Some(RESERVE_BYTES as u64) {
            self.present = true;
            return Ok(());
        }
        self.present = false;
        let written = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            f.write_all(&filler())?;
            f.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&self.path);
            return Err(StoreError::Unwritable {
                path: self.path.display().to_string(),
                source,
            });
        }
        self.present = true;
        Ok(())
    }

    /// Gives the reserve's space back to the file system; `false` when
    /// there was none to give.
    pub(super) fn release(&mut self) -> bool {
        let had = self.present;
        self.present = false;
        had && std::fs::remove_file(&self.path).is_ok()
    }

    /// The error for a write refused to keep the released space for
    /// waiver ends.
    pub(super) fn spent(&self) -> StoreError {
        StoreError::Unwritable {
            path: self.path.display().to_string(),
            source: std::io::Error::other(
                "the reserve for recording waiver ends is spent or missing (the disk is full); other writes wait until it is back",
            ),
        }
    }
}

/// Bytes that a compressing or deduplicating file system cannot store in
/// less space than their length (zeros would reserve nothing there).
fn filler() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut out = Vec::with_capacity(RESERVE_BYTES);
    while out.len() < RESERVE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Checks that the database at `db` is the store its id file says was
/// written here, creating the id on a new store. With `accept_empty`, a
/// store that lost its id (emptied, replaced) is adopted under a new one.
///
/// # Errors
/// The store lost its id or holds another one (unless `accept_empty`);
/// the id cannot be read or written.
pub(super) fn check_id(conn: &Connection, db: &Path, accept_empty: bool) -> Result<(), StoreError> {
    let p = db.display().to_string();
    let sql = |source| StoreError::Sqlite {
        path: p.clone(),
        source,
    };
    let id_path = beside(db, ".id");
    let in_file = match std::fs::read_to_string(&id_path) {
        Ok(s) => Some(s.trim().parse::<i64>().map_err(|e| StoreError::Replaced {
            path: p.clone(),
            reason: format!(
                "its id file {} is unreadable ({e}); it holds the id of the store written here",
                id_path.display()
            ),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(StoreError::Unwritable {
                path: id_path.display().to_string(),
                source,
            })
        }
    };
    let in_db: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key='store_id'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql)?;
    let refused = match (&in_file, in_db) {
        (Some(Ok(f)), Some(d)) if *f == d => return Ok(()),
        // The id file was lost: the database is the record.
        (None, Some(d)) => return write_id(&id_path, d),
        // A new store (or one from a preflight that kept no id).
        (None, None) => None,
        (Some(Ok(f)), None) => Some(format!(
            "it has no store id, but {} says the store written here had id {f}: the database is empty or was replaced (truncated, recreated, or it lost its WAL), so its waivers and audit log are gone",
            id_path.display()
        )),
        (Some(Ok(f)), Some(d)) => Some(format!(
            "it holds store id {d}, but {} says the store written here had id {f}: this is another store's database",
            id_path.display()
        )),
        (Some(Err(e)), _) => Some(e.to_string()),
    };
    if let Some(reason) = refused {
        if !accept_empty {
            return Err(StoreError::Replaced { path: p, reason });
        }
        tracing::warn!(store = %p, %reason, "--accept-empty-store: starting on this store as it is");
    }
    let id = match in_db {
        Some(d) => d,
        None => {
            let id: i64 = conn
                .query_row("SELECT abs(random() >> 1)", [], |r| r.get(0))
                .map_err(sql)?;
            // Synced before the id file names it: after a crash in
            // between, the database alone is the record (case above).
            conn.execute_batch("PRAGMA synchronous=FULL").map_err(sql)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('store_id', ?1)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [id],
            )
            .map_err(sql)?;
            conn.execute_batch("PRAGMA synchronous=NORMAL")
                .map_err(sql)?;
            id
        }
    };
    write_id(&id_path, id)
}

/// Writes the id file atomically and durably (temporary file, sync,
/// rename, sync of the directory).
fn write_id(path: &Path, id: i64) -> Result<(), StoreError> {
    let tmp = beside(path, ".tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{id}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::Unwritable {
            path: path.display().to_string(),
            source,
        }
    })
}
