//! Finds the files NetworkManager reads: keyfiles (`*.nmconnection`) from
//! /run, /etc and /usr/lib's `NetworkManager/system-connections` (a
//! profile in /run shadows one with its UUID in /etc, which shadows
//! /usr/lib's), loaded only when of mode 0600 or stricter and owned by root
//! as NetworkManager requires (others are reported, not read); and
//! NetworkManager.conf with its `conf.d/*.conf` files (by name across
//! /usr/lib, /run and /etc, the later directory replacing a same-named
//! file) for `no-auto-default`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use preflight_model::Snapshot;
use preflight_policy::expect::{self, ExpectError, Expectations, NmKeyfile, Unchecked};

use super::{Source, Stack};

/// Keyfile directories, highest precedence first.
pub const KEYFILE_DIRS: &[&str] = &[
    "/run/NetworkManager/system-connections",
    "/etc/NetworkManager/system-connections",
    "/usr/lib/NetworkManager/system-connections",
];
/// The main configuration file.
pub const CONF: &str = "/etc/NetworkManager/NetworkManager.conf";
/// conf.d directories, highest precedence first.
pub const CONF_DIRS: &[&str] = &[
    "/etc/NetworkManager/conf.d",
    "/run/NetworkManager/conf.d",
    "/usr/lib/NetworkManager/conf.d",
];

/// Where NetworkManager's files are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmPaths {
    /// Keyfile directories, highest precedence first.
    pub keyfiles: Vec<PathBuf>,
    /// NetworkManager.conf.
    pub conf: PathBuf,
    /// conf.d directories, highest precedence first.
    pub conf_dirs: Vec<PathBuf>,
}

impl NmPaths {
    /// Every directory and file read, for reload stamps.
    pub(super) fn all(&self) -> Vec<PathBuf> {
        let mut v = self.keyfiles.clone();
        v.push(self.conf.clone());
        v.extend(self.conf_dirs.iter().cloned());
        v
    }
}

fn fail(p: &Path, reason: String) -> ExpectError {
    ExpectError {
        file: p.display().to_string(),
        path: String::new(),
        reason,
    }
}

/// Regular files of `dir` by name (a missing directory has none).
fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, ExpectError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(dir, format!("cannot list: {e}"))),
    };
    let mut out = Vec::new();
    for (i, e) in rd.enumerate() {
        if i >= 4 * expect::MAX_NM_FILES {
            return Err(fail(dir, "more entries than preflight lists".to_owned()));
        }
        let e = e.map_err(|err| fail(dir, format!("cannot list: {err}")))?;
        if e.path().is_file() {
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn read(p: &Path, budget: &mut usize) -> Result<String, ExpectError> {
    use std::io::Read;
    *budget = budget.checked_sub(1).ok_or_else(|| {
        fail(
            p,
            format!(
                "more than {} files, the most preflight reads",
                expect::MAX_NM_FILES
            ),
        )
    })?;
    let max = expect::MAX_NM_FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(p, format!("cannot read: {e}")))?;
    if bytes.len() > max {
        return Err(fail(
            p,
            format!("more than {max} bytes, the most preflight reads"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| fail(p, format!("not UTF-8: {e}")))
}

/// The keyfiles NetworkManager loads from `dirs`, in precedence order, and
/// the files it would not load, as unchecked.
///
/// # Errors
/// A directory or file that cannot be read, or one past the bounds.
pub fn collect(dirs: &[PathBuf]) -> Result<(Vec<NmKeyfile>, Vec<Unchecked>), ExpectError> {
    let mut budget = expect::MAX_NM_FILES;
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    for d in dirs {
        for (name, p) in list(d)? {
            let shown = p.display().to_string();
            if !name.ends_with(".nmconnection") {
                skipped.push(Unchecked {
                    at: shown,
                    what: "is not a *.nmconnection file: not read".to_owned(),
                });
                continue;
            }
            let md = std::fs::metadata(&p).map_err(|e| fail(&p, format!("cannot stat: {e}")))?;
            if md.mode() & 0o077 != 0 || md.uid() != 0 {
                skipped.push(Unchecked {
                    at: shown,
                    what: format!(
                        "has mode {:o} and owner uid {}: NetworkManager loads only keyfiles of mode 0600 owned by root, so it ignores this one and so does preflight",
                        md.mode() & 0o7777,
                        md.uid()
                    ),
                });
                continue;
            }
            files.push(NmKeyfile {
                path: shown,
                text: read(&p, &mut budget)?,
            });
        }
    }
    Ok((files, skipped))
}

/// NetworkManager.conf then its conf.d files in reading order.
///
/// # Errors
/// A file that cannot be read, or one past the bounds.
pub fn collect_conf(paths: &NmPaths) -> Result<Vec<(String, String)>, ExpectError> {
    let mut budget = expect::MAX_NM_FILES;
    let mut out = Vec::new();
    if paths.conf.is_file() {
        out.push((
            paths.conf.display().to_string(),
            read(&paths.conf, &mut budget)?,
        ));
    }
    let mut won: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in &paths.conf_dirs {
        for (name, p) in list(d)? {
            if name.ends_with(".conf") {
                won.entry(name).or_insert(p);
            }
        }
    }
    for p in won.values() {
        out.push((p.display().to_string(), read(p, &mut budget)?));
    }
    Ok(out)
}

impl Source {
    /// NetworkManager's files: `dir` holding the keyfiles, its
    /// `NetworkManager.conf` and `conf.d/`, else NetworkManager's own
    /// directories.
    #[must_use]
    pub fn networkmanager(dir: Option<PathBuf>) -> Self {
        let paths = match dir {
            Some(d) => NmPaths {
                keyfiles: vec![d.clone()],
                conf: d.join("NetworkManager.conf"),
                conf_dirs: vec![d.join("conf.d")],
            },
            None => NmPaths {
                keyfiles: KEYFILE_DIRS.iter().map(PathBuf::from).collect(),
                conf: PathBuf::from(CONF),
                conf_dirs: CONF_DIRS.iter().map(PathBuf::from).collect(),
            },
        };
        Self {
            path: paths.keyfiles[0].clone(),
            mapping: None,
            stack: Stack::NetworkManager(Box::new(paths)),
            root: PathBuf::from("/"),
            stamp: None,
        }
    }

    pub(super) fn load_networkmanager(
        paths: &NmPaths,
        snap: &Snapshot,
    ) -> Result<Expectations, ExpectError> {
        let (files, skipped) = collect(&paths.keyfiles)?;
        let conf = collect_conf(paths)?;
        let shown: Vec<String> = paths
            .keyfiles
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let mut e = expect::from_networkmanager(
            &format!("NetworkManager ({})", shown.join(", ")),
            &files,
            &conf,
            &format!("{} (no no-auto-default set)", paths.conf.display()),
            snap,
        )?;
        e.unchecked.extend(skipped);
        e.files = files
            .iter()
            .map(|f| f.path.clone())
            .chain(conf.iter().map(|(p, _)| p.clone()))
            .collect();
        Ok(e)
    }
}
