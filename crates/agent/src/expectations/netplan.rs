//! Finds the files netplan reads: `*.yaml` in /lib/netplan, /etc/netplan
//! and /run/netplan, a file in /run shadowing one of the same name in /etc,
//! which shadows /lib's, all of them then read in lexical order of their
//! names (as `netplan generate` and `netplan get` do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use preflight_model::Snapshot;
use preflight_policy::expect::{self, ExpectError, Expectations, NetplanFile};

use super::{Source, Stack};

/// netplan's directories, lowest precedence first.
pub const SEARCH_PATH: &[&str] = &["/lib/netplan", "/etc/netplan", "/run/netplan"];

fn fail(p: &Path, reason: String) -> ExpectError {
    ExpectError {
        file: p.display().to_string(),
        path: String::new(),
        reason,
    }
}

/// The files netplan reads from `dirs` (lowest precedence first): by name,
/// the last directory's file winning, in lexical order of the names.
///
/// # Errors
/// A directory or file that cannot be read, or one past the bounds.
pub fn collect(dirs: &[PathBuf]) -> Result<Vec<NetplanFile>, ExpectError> {
    use std::io::Read;
    let mut won: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in dirs {
        let rd = match std::fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(d, format!("cannot list: {e}"))),
        };
        for (i, e) in rd.enumerate() {
            if i >= 4 * expect::MAX_NETPLAN_FILES {
                return Err(fail(d, "more entries than preflight lists".to_owned()));
            }
            let e = e.map_err(|err| fail(d, format!("cannot list: {err}")))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && e.path().is_file() {
                won.insert(name, e.path());
            }
        }
    }
    if won.len() > expect::MAX_NETPLAN_FILES {
        return Err(fail(
            &dirs[0],
            format!(
                "{} files, more than the {} preflight reads",
                won.len(),
                expect::MAX_NETPLAN_FILES
            ),
        ));
    }
    let max = expect::MAX_NETPLAN_FILE_BYTES;
    let mut out = Vec::new();
    for p in won.values() {
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
        let text = String::from_utf8(bytes).map_err(|e| fail(p, format!("not UTF-8: {e}")))?;
        out.push(NetplanFile {
            path: p.display().to_string(),
            text,
        });
    }
    Ok(out)
}

impl Source {
    /// netplan's files: `dir` in place of its three directories, else
    /// those.
    #[must_use]
    pub fn netplan(dir: Option<PathBuf>) -> Self {
        let dirs = dir.map_or_else(
            || SEARCH_PATH.iter().map(PathBuf::from).collect(),
            |d| vec![d],
        );
        Self {
            path: dirs[dirs.len() - 1].clone(),
            mapping: None,
            stack: Stack::Netplan(dirs),
            root: PathBuf::from("/"),
            stamp: None,
        }
    }

    pub(super) fn load_netplan(
        dirs: &[PathBuf],
        snap: &Snapshot,
    ) -> Result<Expectations, ExpectError> {
        let files = collect(dirs)?;
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        expect::from_netplan(&format!("netplan ({})", shown.join(", ")), &files, snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/netplan")
    }

    /// /run shadows /etc shadows /lib by name; the rest in name order.
    #[test]
    fn shadowing_and_order_follow_netplan() {
        let m = fixtures().join("merge");
        let files = collect(&[m.join("lib"), m.join("etc"), m.join("run")]).expect("reads");
        let names: Vec<&str> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&m.display().to_string())
                    .unwrap_or(&f.path)
            })
            .collect();
        assert_eq!(
            names,
            [
                "/lib/05-early.yaml",
                "/etc/10-base.yaml",
                "/run/20-extra.yaml"
            ]
        );
        let s = Source::netplan(None);
        assert_eq!(s.stack_name(), "netplan");
        assert_eq!(
            crate::expectations::parse_spec("netplan:/x"),
            Ok(("netplan", Some(PathBuf::from("/x"))))
        );
    }
}
