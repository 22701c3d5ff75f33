//! Loads the expected state from an os-net-config file (and optional nicN
//! mapping file), and reloads it when the file changes. A file that cannot
//! be read leaves the last good expectations in force and is reported as
//! EXPECTATIONS_INVALID by the evaluator.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use preflight_model::Snapshot;
use preflight_policy::expect::{self, ExpectError, Expectations};
use preflight_policy::Evaluator;

/// Default locations os-net-config reads.
pub const DEFAULT_PATHS: &[&str] = &[
    "/etc/os-net-config/config.yaml",
    "/etc/os-net-config/config.json",
];

/// The first default os-net-config file that exists.
#[must_use]
pub fn default_path() -> Option<PathBuf> {
    DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Where the expectations come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// os-net-config file.
    pub path: PathBuf,
    /// Optional mapping file (`interface_mapping:`).
    pub mapping: Option<PathBuf>,
    stamp: Option<(SystemTime, SystemTime, String)>,
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The text of `p`, refused past `max` bytes without reading further: the
/// path may be anything (a device, a file still growing).
fn read_bounded(p: &Path, max: usize) -> Result<String, ExpectError> {
    use std::io::Read;
    let fail = |reason: String| ExpectError {
        file: p.display().to_string(),
        path: String::new(),
        reason,
    };
    let limit = u64::try_from(max).map_or(u64::MAX, |m| m.saturating_add(1));
    let mut text = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(limit).read_to_string(&mut text))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.len() > max {
        return Err(fail(format!(
            "more than {max} bytes, the most preflight reads of an os-net-config file"
        )));
    }
    Ok(text)
}

impl Source {
    /// A source that has not been read yet.
    #[must_use]
    pub fn new(path: PathBuf, mapping: Option<PathBuf>) -> Self {
        Self {
            path,
            mapping,
            stamp: None,
        }
    }

    /// Reads and parses the files; nicN names are mapped against `snap`.
    ///
    /// # Errors
    /// Unreadable files, syntax errors, bad values (with the path in the document).
    pub fn load(&self, snap: &Snapshot) -> Result<Expectations, ExpectError> {
        let file = self.path.display().to_string();
        let read = |p: &Path| read_bounded(p, expect::MAX_DOCUMENT_BYTES);
        let mapping = match &self.mapping {
            Some(m) => Some(expect::parse_document(&m.display().to_string(), &read(m)?)?),
            None => None,
        };
        let doc = expect::parse_document(&file, &read(&self.path)?)?;
        // Checked against the NICs the configuration was built on, never
        // against the numbering os-net-config would compute now (that one
        // shifts when a NIC loses its link: NIC_RENUMBERED).
        let nics = expect::in_force_mapping(snap, &doc, mapping.as_ref());
        let mut e = expect::from_os_net_config(&file, &doc, &nics)?;
        e.nics.pinned = mapping.as_ref().is_some_and(|m| {
            m.get("interface_mapping")
                .is_some_and(serde_json::Value::is_object)
        });
        Ok(e)
    }

    /// Loads the files if they changed since the last call and updates the
    /// evaluator: new expectations on success; on failure the old ones stay
    /// and EXPECTATIONS_INVALID is raised. Returns whether anything changed.
    pub fn refresh(&mut self, snap: &Snapshot, ev: &mut Evaluator) -> bool {
        // A NIC that appears or goes (not one that loses its link) changes
        // the mapping in force: reload then too.
        let stamp = (
            mtime(&self.path),
            self.mapping
                .as_deref()
                .map_or(SystemTime::UNIX_EPOCH, mtime),
            expect::ordered_nics(snap, false).join(","),
        );
        if self.stamp.as_ref() == Some(&stamp) {
            return false;
        }
        self.stamp = Some(stamp);
        match self.load(snap) {
            Ok(e) => {
                if !e.unsupported.is_empty() {
                    tracing::info!(file = %self.path.display(), unsupported = ?e.unsupported, "entries preflight does not check");
                }
                ev.set_expectations(Some(e));
                ev.set_expectations_error(None);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the expected state; keeping the last good one");
                ev.set_expectations_error(Some(e.to_string()));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that never ends (a device, a FIFO fed forever, a file that
    /// grows) is read only up to the document bound: a clear error, not
    /// an agent that reads until the kernel kills it.
    #[test]
    fn an_endless_file_is_read_up_to_the_bound() {
        let src = Source::new(PathBuf::from("/dev/zero"), None);
        let e = src.load(&Snapshot::default()).expect_err("refused");
        assert_eq!(e.file, "/dev/zero");
        assert!(
            e.reason.contains(&expect::MAX_DOCUMENT_BYTES.to_string()),
            "{e}"
        );
    }

    /// A file over the bound names the bound; one within it reads.
    #[test]
    fn an_oversized_file_is_refused_and_a_normal_one_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let mut text = String::from("network_config:\n  - type: interface\n    name: eth0\n");
        std::fs::write(&path, &text).expect("write");
        let src = Source::new(path.clone(), None);
        let e = src.load(&Snapshot::default()).expect("reads");
        assert_eq!(e.interfaces.len(), 1);
        text.push_str(&format!("# {}\n", "z".repeat(expect::MAX_DOCUMENT_BYTES)));
        std::fs::write(&path, &text).expect("write");
        let e = src.load(&Snapshot::default()).expect_err("too large");
        assert!(e.to_string().len() < 300, "{e}");
    }
}
