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
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ExpectError {
                file: p.display().to_string(),
                path: String::new(),
                reason: format!("cannot read: {e}"),
            })
        };
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
