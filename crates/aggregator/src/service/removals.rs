//! The waiver removals this replica acknowledged, kept in a local file so
//! that they outlive the process: after a failover to a PostgreSQL standby
//! that never saw a removal, a restarted aggregator must still know to end
//! the waiver again (`failover`). The database cannot hold this record (it
//! is the thing that lost it), so it lives in `[aggregator] state_dir`.
//!
//! One JSON line per removal (`{"id", "created_at", "expires_at", "actor"}`,
//! times in Unix milliseconds), appended and fsync'd before the removal is
//! acknowledged; the directory is fsync'd when the file is created. At
//! start the file is read, the entries whose waiver would have expired
//! anyway are dropped, and the rest are written to a new file renamed over
//! the old one. A `.lock` file beside it (`flock`) keeps two aggregators
//! from sharing it (a compaction by one would orphan the other's appends).
//! At most [`MAX_REMOVALS`] lines: when full the file is compacted, and a
//! removal that still does not fit is refused like any unwritable one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Most removals the file holds. Removals of waivers in force at once are
/// bounded by `max_waivers` (default 10,000), and an entry is dropped once
/// its waiver would have expired (at most `max_waiver`, 90 days, after its
/// creation), so only a burst of more than this many removals within one
/// waiver's lifetime fills it.
pub const MAX_REMOVALS: usize = 100_000;

/// Milliseconds since the Unix epoch (0 before it).
pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A time from milliseconds since the Unix epoch.
pub(super) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One removal as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The waiver's id.
    pub(super) id: i64,
    /// When it was created (ms): with the id, names it on any primary.
    pub(super) created_at: i64,
    /// When it would have expired (ms): the entry is kept until then.
    pub(super) expires_at: i64,
    /// Who removed it (for the audit entry of a re-applied removal).
    pub(super) actor: String,
}

/// Why the file cannot be used or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LogError {
    path: PathBuf,
    reason: String,
}

impl LogError {
    fn new(path: &Path, reason: impl ToString) -> Self {
        Self {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The open file of removals (appends only), and the lock that makes it
/// this process's.
#[derive(Debug)]
pub struct RemovalLog {
    path: PathBuf,
    file: File,
    /// Its length after the last complete line (a failed append is cut
    /// back to it, so a half-written line never joins the next one).
    len: u64,
    lines: usize,
    /// What [`RemovalLog::open`] read, until the service takes it.
    loaded: Vec<Entry>,
    _lock: File,
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn line(e: &Entry) -> String {
    let mut s = serde_json::to_string(e).expect("an entry of numbers and a string serialises");
    s.push('\n');
    s
}

impl RemovalLog {
    /// Opens (creating it and its directory if needed) the file at `path`,
    /// takes its lock, and reads the removals still in force at `now`
    /// (for the service to take), compacting the file to them. A compaction that fails (a full
    /// disk) keeps the old file and is logged; lines that do not parse
    /// are skipped and logged.
    ///
    /// # Errors
    /// The directory or file cannot be created, opened or locked (another
    /// aggregator holds it).
    pub fn open(path: &Path, now: SystemTime) -> Result<Self, LogError> {
        let err = |r: String| LogError::new(path, r);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock_path = path.with_extension(match path.extension() {
            Some(x) => format!("{}.lock", x.to_string_lossy()),
            None => "lock".into(),
        });
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open {}: {e}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                err(format!(
                    "in use by another aggregator ({} is locked: {e}); give each aggregator its own state_dir",
                    lock_path.display()
                ))
            },
        )?;
        let entries = read(path, now).map_err(|e| err(format!("cannot read: {e}")))?;
        if let Err(e) = compact(path, &entries) {
            tracing::warn!(file = %path.display(), error = %e, "cannot compact the file of waiver removals; kept as it is");
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| err(format!("cannot open for writing: {e}")))?;
        if !existed {
            sync_dir(path).map_err(|e| err(format!("cannot sync its directory: {e}")))?;
        }
        let len = file
            .metadata()
            .map_err(|e| err(format!("cannot stat: {e}")))?
            .len();
        let lines = count_lines(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            lines,
            loaded: entries,
            _lock: lock,
        })
    }

    /// The removals read at opening (once; empty afterwards).
    pub(super) fn take_loaded(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.loaded)
    }

    /// How many removals were read at opening and not yet taken.
    #[must_use]
    pub fn loaded(&self) -> usize {
        self.loaded.len()
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `new` and syncs the file. When that would pass
    /// [`MAX_REMOVALS`] lines, the file is first rewritten with `live`
    /// (every removal still kept, `new` not among them).
    ///
    /// # Errors
    /// The write or sync failed (the file is cut back to its last complete
    /// line), or the file is full even after the compaction.
    pub(super) fn append(&mut self, new: &[Entry], live: &[Entry]) -> Result<(), LogError> {
        if self.lines + new.len() > MAX_REMOVALS {
            compact(&self.path, live).map_err(|e| LogError::new(&self.path, e))?;
            self.file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| LogError::new(&self.path, e))?;
            self.len = self
                .file
                .metadata()
                .map_err(|e| LogError::new(&self.path, e))?
                .len();
            self.lines = live.len();
            if self.lines + new.len() > MAX_REMOVALS {
                return Err(LogError::new(
                    &self.path,
                    format!("full: {MAX_REMOVALS} removals of waivers not yet expired"),
                ));
            }
        }
        let text: String = new.iter().map(line).collect();
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(LogError::new(&self.path, e));
        }
        self.len += text.len() as u64;
        self.lines += new.len();
        Ok(())
    }
}

fn count_lines(path: &Path) -> std::io::Result<usize> {
    Ok(BufReader::new(File::open(path)?).split(b'\n').count())
}

/// The entries of the file at `path` (none when it does not exist) whose
/// waiver has not expired at `now`, each once, at most the newest
/// [`MAX_REMOVALS`].
fn read(path: &Path, now: SystemTime) -> std::io::Result<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let now = ms(now);
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut bad = 0usize;
    for raw in BufReader::new(file).split(b'\n') {
        let raw = raw?;
        if raw.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry>(&raw) {
            Ok(e) if e.expires_at > now => {
                if seen.insert((e.id, e.created_at)) {
                    entries.push(e);
                }
            }
            Ok(_) => {}
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(file = %path.display(), lines = bad, "skipped lines of the waiver removals file that do not parse");
    }
    let over = entries.len().saturating_sub(MAX_REMOVALS);
    entries.drain(..over);
    Ok(entries)
}

/// Writes `entries` to a new file beside `path`, syncs it, renames it over
/// `path` and syncs the directory.
fn compact(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        let text: String = entries.iter().map(line).collect();
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, expires_at: i64) -> Entry {
        Entry {
            id,
            created_at: 1_000 + id,
            expires_at,
            actor: format!("ana\n\"{id}\""),
        }
    }

    #[test]
    fn appended_removals_are_loaded_back_and_expired_ones_compacted_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("waiver-removals-9100");
        let mut log = RemovalLog::open(&path, time(5_000)).expect("open");
        assert!(log.take_loaded().is_empty());
        let (a, b) = (entry(1, 10_000), entry(2, 20_000));
        log.append(std::slice::from_ref(&a), &[]).expect("append a");
        log.append(&[b.clone(), a.clone()], &[])
            .expect("append b, a again");
        drop(log);
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            3,
            "one line per removal, an actor with a newline included"
        );

        // A torn last line (a crash mid-write) is skipped, not fatal.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"id\": 3, \"crea").expect("torn");
        drop(f);

        let loaded = RemovalLog::open(&path, time(15_000))
            .expect("reopen")
            .take_loaded();
        assert_eq!(
            loaded,
            vec![b.clone()],
            "a expired at 10 s; duplicates once"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            line(&b),
            "compacted at start to what is still in force"
        );
    }

    #[test]
    fn a_second_aggregator_cannot_open_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("waiver-removals-9100");
        let _log = RemovalLog::open(&path, time(0)).expect("first");
        let e = RemovalLog::open(&path, time(0)).expect_err("second");
        assert!(e.to_string().contains("another aggregator"), "{e}");
    }

    #[test]
    fn a_full_file_is_compacted_and_then_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("waiver-removals-9100");
        let mut log = RemovalLog::open(&path, time(0)).expect("open");
        let all: Vec<Entry> = (0..MAX_REMOVALS as i64).map(|i| entry(i, 50_000)).collect();
        log.append(&all, &[]).expect("fill");
        // Half of them are no longer kept: the compaction makes room.
        let live = &all[..MAX_REMOVALS / 2];
        log.append(&[entry(-1, 60_000)], live)
            .expect("after compaction");
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            MAX_REMOVALS / 2 + 1
        );
        // Every one still kept: nothing to drop, refused.
        let live: Vec<Entry> = (0..MAX_REMOVALS as i64).map(|i| entry(i, 50_000)).collect();
        let full = vec![entry(-2, 60_000); 1];
        let mut log = log;
        log.lines = MAX_REMOVALS;
        let e = log.append(&full, &live).expect_err("full");
        assert!(e.to_string().contains("full"), "{e}");
        drop(log);
        let loaded = RemovalLog::open(&path, time(55_000))
            .expect("reopen")
            .take_loaded();
        assert!(loaded.is_empty(), "all of them expired by 55 s");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }
}
