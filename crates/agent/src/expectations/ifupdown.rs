//! Finds the files ifupdown reads, as interfaces(5) says it does: the main
//! file, then at each `source PATH` the files its shell glob names (in
//! sorted order; none when the glob matches nothing), at each
//! `source-directory DIR` the files of DIR whose names match
//! `^[a-zA-Z0-9_-]+$` in sorted order; a relative path is relative to the
//! directory of the file that names it. Reading stops at the bounds of
//! [`expect::MAX_IFUPDOWN_FILES`], [`expect::MAX_IFUPDOWN_FILE_BYTES`] and
//! [`expect::MAX_IFUPDOWN_DEPTH`]; a file that includes itself (directly
//! or not) is refused naming the `source` line.

use std::path::{Path, PathBuf};

use preflight_policy::expect::{self, ExpectError, IfupdownFile};

/// ifupdown's own file.
pub const DEFAULT_FILE: &str = "/etc/network/interfaces";

/// Most entries looked at in one directory.
const MAX_ENTRIES: usize = 4 * expect::MAX_IFUPDOWN_FILES;

fn fail(at: &str, reason: String) -> ExpectError {
    ExpectError {
        file: at.to_owned(),
        path: String::new(),
        reason,
    }
}

fn entries(dir: &Path, at: &str) -> Result<Vec<(String, PathBuf)>, ExpectError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(at, format!("cannot list {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for (i, e) in rd.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(fail(
                at,
                format!(
                    "{} has more than {MAX_ENTRIES} entries, the most preflight lists",
                    dir.display()
                ),
            ));
        }
        let e = e.map_err(|err| fail(at, format!("cannot list {}: {err}", dir.display())))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// The paths a shell glob names, sorted (glob characters in any
/// component); a pattern without glob characters names itself.
fn expand(pattern: &Path, at: &str) -> Result<Vec<PathBuf>, ExpectError> {
    let mut found = vec![PathBuf::new()];
    for c in pattern.components() {
        let part = c.as_os_str().to_string_lossy();
        if !expect::ifupdown_is_glob(&part) {
            for f in &mut found {
                f.push(c.as_os_str());
            }
            continue;
        }
        let mut next = Vec::new();
        for base in &found {
            for (name, p) in entries(base, at)? {
                if expect::ifupdown_glob(&part, &name) {
                    next.push(p);
                }
            }
            if next.len() > MAX_ENTRIES {
                return Err(fail(at, format!("matches more than {MAX_ENTRIES} paths")));
            }
        }
        found = next;
    }
    found.sort();
    Ok(found)
}

struct Walk {
    out: Vec<IfupdownFile>,
    /// Canonical paths of the files being read, outermost first.
    stack: Vec<PathBuf>,
}

fn read(p: &Path, at: &str) -> Result<String, ExpectError> {
    use std::io::Read;
    let max = expect::MAX_IFUPDOWN_FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(at, format!("cannot read {}: {e}", p.display())))?;
    if bytes.len() > max {
        return Err(fail(
            &p.display().to_string(),
            format!("more than {max} bytes, the most preflight reads of an ifupdown file"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| fail(&p.display().to_string(), format!("not UTF-8: {e}")))
}

impl Walk {
    /// Reads `p` (named at `at`) and what it includes, depth first.
    fn file(&mut self, p: &Path, at: &str) -> Result<(), ExpectError> {
        if self.out.len() >= expect::MAX_IFUPDOWN_FILES {
            return Err(fail(
                at,
                format!(
                    "more than {} files, the most preflight reads",
                    expect::MAX_IFUPDOWN_FILES
                ),
            ));
        }
        if self.stack.len() > expect::MAX_IFUPDOWN_DEPTH {
            return Err(fail(
                at,
                format!(
                    "includes nest deeper than {}, the most preflight follows",
                    expect::MAX_IFUPDOWN_DEPTH
                ),
            ));
        }
        let canon = std::fs::canonicalize(p)
            .map_err(|e| fail(at, format!("cannot read {}: {e}", p.display())))?;
        if self.stack.contains(&canon) {
            return Err(fail(
                at,
                format!(
                    "includes {}, which is already being read: a cycle",
                    p.display()
                ),
            ));
        }
        let text = read(p, at)?;
        let path = p.display().to_string();
        let includes = expect::ifupdown_includes(&path, &text)?;
        self.out.push(IfupdownFile { path, text });
        self.stack.push(canon);
        let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        for inc in includes {
            let pat = dir.join(&inc.pattern);
            if inc.directory {
                for d in expand(&pat, &inc.at)? {
                    for (name, f) in entries(&d, &inc.at)? {
                        if expect::ifupdown_dir_entry(&name) && f.is_file() {
                            self.file(&f, &inc.at)?;
                        }
                    }
                }
            } else {
                for f in expand(&pat, &inc.at)? {
                    if f.is_dir() {
                        continue; // a glob's directory match: not a file ifupdown reads
                    }
                    self.file(&f, &inc.at)?;
                }
            }
        }
        self.stack.pop();
        Ok(())
    }
}

impl super::Source {
    /// ifupdown's files: `file` in place of /etc/network/interfaces.
    #[must_use]
    pub fn ifupdown(file: Option<PathBuf>) -> Self {
        let file = file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
        Self {
            path: file.clone(),
            mapping: None,
            stack: super::Stack::Ifupdown(file),
            root: PathBuf::from("/"),
            stamp: None,
        }
    }

    /// What an ifupdown reload depends on: every file read with its
    /// modification time (a file that cannot be read: its error).
    pub(super) fn ifupdown_stamp(&self) -> String {
        let super::Stack::Ifupdown(main) = &self.stack else {
            return String::new();
        };
        match collect(main) {
            Ok(files) => files
                .iter()
                .map(|f| format!("|{}:{:?}", f.path, super::mtime(Path::new(&f.path))))
                .collect(),
            Err(e) => format!("|{e}"),
        }
    }
}

/// The files ifupdown reads starting at `main`, in the order it reads
/// them.
///
/// # Errors
/// A file that cannot be read (a `source` naming a missing file
/// included), a cycle, or a bound exceeded, naming the file or the
/// `source` line.
pub fn collect(main: &Path) -> Result<Vec<IfupdownFile>, ExpectError> {
    let mut w = Walk {
        out: Vec::new(),
        stack: Vec::new(),
    };
    w.file(main, &main.display().to_string())?;
    Ok(w.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Relative `source` globs and `source-directory` (run-parts names
    /// only) in order, depth first; a hidden file and a `.bak` are not
    /// read.
    #[test]
    fn includes_follow_interfaces_5() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        write(
            &r.join("interfaces"),
            "auto lo\nsource interfaces.d/*\nsource-directory parts\nsource /nonexistent-glob-*\n",
        );
        write(&r.join("interfaces.d/b"), "source ../more/x\n");
        write(&r.join("interfaces.d/a"), "");
        write(&r.join("interfaces.d/.hidden"), "");
        write(&r.join("more/x"), "");
        write(&r.join("parts/10-bond"), "");
        write(&r.join("parts/old.bak"), "");
        let files = collect(&r.join("interfaces")).expect("reads");
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&format!("{}/", r.display()))
                    .unwrap_or(&f.path)
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "interfaces",
                "interfaces.d/a",
                "interfaces.d/b",
                "interfaces.d/../more/x",
                "parts/10-bond"
            ]
        );
    }

    /// A cycle and a missing literal file are refused naming the `source`
    /// line; a file over the bound names the file.
    #[test]
    fn cycles_missing_files_and_bounds_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        write(&r.join("interfaces"), "source a\n");
        write(&r.join("a"), "\nsource interfaces\n");
        let e = collect(&r.join("interfaces")).expect_err("cycle");
        assert!(
            e.file.ends_with("/a:2") && e.reason.contains("cycle"),
            "{e}"
        );
        write(&r.join("a"), "source missing\n");
        let e = collect(&r.join("interfaces")).expect_err("missing");
        assert!(
            e.file.ends_with("/a:1") && e.reason.contains("missing"),
            "{e}"
        );
        write(&r.join("a"), &"#\n".repeat(expect::MAX_IFUPDOWN_FILE_BYTES));
        let e = collect(&r.join("interfaces")).expect_err("big");
        assert!(e.file.ends_with("/a") && e.reason.contains("bytes"), "{e}");
    }

    /// `ifupdown[:FILE]` as `--expect` and `agent.expect` spell it.
    #[test]
    fn the_stack_spec_parses() {
        use crate::expectations::{parse_spec, Source, Stack};
        assert_eq!(
            parse_spec("ifupdown:/x/interfaces"),
            Ok(("ifupdown", Some(PathBuf::from("/x/interfaces"))))
        );
        let s = Source::ifupdown(None);
        assert_eq!(s.stack, Stack::Ifupdown(PathBuf::from(DEFAULT_FILE)));
        assert_eq!(s.stack_name(), "ifupdown");
    }
}
