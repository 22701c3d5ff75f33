//! Finds the files systemd-networkd reads, as systemd.network(5) says it
//! does: `.netdev` and `.network` files from the search path, sorted by
//! file name regardless of directory; of several with one name the one in
//! the earliest directory wins; an empty file or a symlink to /dev/null
//! masks the name; `NAME.d/*.conf` drop-ins from every directory, the same
//! precedence per drop-in name, applied in lexical order after the main
//! file. Reading stops at the bounds of [`expect::MAX_NETWORKD_FILES`] and
//! [`expect::MAX_NETWORKD_FILE_BYTES`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use preflight_policy::expect::{self, ExpectError, NetworkdFile};

/// networkd's search path, highest precedence first.
pub const SEARCH_PATH: &[&str] = &[
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/local/lib/systemd/network",
    "/usr/lib/systemd/network",
];

/// Most directory entries looked at in one directory: a directory with
/// more is refused rather than listed without end.
const MAX_ENTRIES: usize = 4 * expect::MAX_NETWORKD_FILES;

fn fail(p: &Path, reason: String) -> ExpectError {
    ExpectError {
        file: p.display().to_string(),
        path: String::new(),
        reason,
    }
}

/// Whether `p` masks its name: a symlink to /dev/null or an empty file.
fn masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
        || std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// The entries of `dir` whose names `keep` accepts, by name; a missing
/// directory has none.
fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, PathBuf)>, ExpectError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(dir, format!("cannot list: {e}"))),
    };
    let mut out = Vec::new();
    for (i, e) in rd.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(fail(
                dir,
                format!("more than {MAX_ENTRIES} entries, the most preflight lists"),
            ));
        }
        let e = e.map_err(|err| fail(dir, format!("cannot list: {err}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if keep(&name) {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// By name, the winning path of each (`None`: masked), over `dirs` in
/// precedence order.
fn resolve(
    dirs: &[PathBuf],
    sub: &str,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<BTreeMap<String, Option<PathBuf>>, ExpectError> {
    let mut won: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    for d in dirs {
        for (name, p) in list(&d.join(sub), keep)? {
            if won.contains_key(&name) {
                continue;
            }
            let v = (!masked(&p)).then_some(p);
            won.insert(name, v);
        }
    }
    Ok(won)
}

fn read(p: &Path, budget: &mut usize) -> Result<String, ExpectError> {
    use std::io::Read;
    *budget = budget.checked_sub(1).ok_or_else(|| {
        fail(
            p,
            format!(
                "more than {} files, the most preflight reads",
                expect::MAX_NETWORKD_FILES
            ),
        )
    })?;
    let max = expect::MAX_NETWORKD_FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(p, format!("cannot read: {e}")))?;
    if bytes.len() > max {
        return Err(fail(
            p,
            format!("more than {max} bytes, the most preflight reads of a networkd file"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| fail(p, format!("not UTF-8: {e}")))
}

/// The files networkd reads from `dirs` (highest precedence first), in
/// the order it reads them.
///
/// # Errors
/// A directory or file that cannot be read, or one past the bounds.
pub fn collect(dirs: &[PathBuf]) -> Result<Vec<NetworkdFile>, ExpectError> {
    let unit = |n: &str| n.ends_with(".netdev") || n.ends_with(".network");
    let mut budget = expect::MAX_NETWORKD_FILES;
    let mut out = Vec::new();
    for (name, path) in resolve(dirs, "", unit)? {
        let Some(path) = path else { continue };
        let text = read(&path, &mut budget)?;
        let mut dropins = Vec::new();
        for (_, p) in resolve(dirs, &format!("{name}.d"), |n| n.ends_with(".conf"))? {
            if let Some(p) = p {
                dropins.push((p.display().to_string(), read(&p, &mut budget)?));
            }
        }
        out.push(NetworkdFile {
            path: path.display().to_string(),
            text,
            dropins,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/networkd/precedence"
    );

    /// /etc over /run over /usr/lib by name, masking by an empty file and
    /// by a /dev/null symlink, drop-ins from all directories in name order
    /// with the same precedence, files in name order across directories.
    #[test]
    fn precedence_masking_and_dropins_follow_systemd() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for d in ["etc", "run", "usr"] {
            let src = Path::new(DIR).join(d);
            let dst = root.join(d);
            copy_dir(&src, &dst);
        }
        // A symlink cannot live in the source tree portably: made here.
        std::os::unix::fs::symlink("/dev/null", root.join("etc/30-masked.network"))
            .expect("symlink");
        let dirs: Vec<PathBuf> = ["etc", "run", "usr"].iter().map(|d| root.join(d)).collect();
        let files = collect(&dirs).expect("collects");
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&format!("{}/", root.display()))
                    .unwrap_or(&f.path)
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "usr/10-bond0.netdev",
                "etc/20-eth0.network",
                "run/25-run.network"
            ],
            "30-masked (symlink) and 40-empty (empty file) are masked"
        );
        let eth0 = &files[1];
        assert!(eth0.text.contains("from etc"), "{}", eth0.text);
        let dropins: Vec<&str> = eth0
            .dropins
            .iter()
            .map(|(p, _)| p.strip_prefix(&format!("{}/", root.display())).unwrap_or(p))
            .collect();
        assert_eq!(
            dropins,
            [
                "usr/20-eth0.network.d/10-mtu.conf",
                "etc/20-eth0.network.d/50-addr.conf"
            ],
        );
        assert!(eth0.dropins[1].1.contains("from etc"));
    }

    /// `STACK[:PATH]` as `--expect` and `agent.expect` spell it.
    #[test]
    fn stack_specs_parse_or_name_the_problem() {
        use crate::expectations::{parse_spec, Source, Stack};
        assert_eq!(parse_spec("networkd"), Ok(("networkd", None)));
        assert_eq!(
            parse_spec("os-net-config:/x/c.yaml"),
            Ok(("os-net-config", Some(PathBuf::from("/x/c.yaml"))))
        );
        let e = parse_spec("wicked:/etc/wicked").expect_err("not a stack");
        assert!(e.contains("os-net-config, networkd"), "{e}");
        assert!(parse_spec("networkd:").is_err());
        let s = Source::networkd(None);
        assert_eq!(
            s.stack,
            Stack::Networkd(SEARCH_PATH.iter().map(PathBuf::from).collect())
        );
        assert_eq!(s.stack_name(), "networkd");
    }

    fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("list") {
            let e = e.expect("entry");
            let to = dst.join(e.file_name());
            if e.path().is_dir() {
                copy_dir(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).expect("copy");
            }
        }
    }

    /// Bounds: a file over the size bound and a file count over the bound
    /// are refused naming the file.
    #[test]
    fn bounds_are_enforced_with_the_file_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let big = tmp.path().join("10-big.network");
        std::fs::write(&big, "#".repeat(expect::MAX_NETWORKD_FILE_BYTES + 1)).expect("write");
        let e = collect(&[tmp.path().to_path_buf()]).expect_err("too big");
        assert!(
            e.file.ends_with("10-big.network") && e.reason.contains("bytes"),
            "{e}"
        );
        std::fs::remove_file(&big).expect("rm");
        for i in 0..=expect::MAX_NETWORKD_FILES {
            std::fs::write(
                tmp.path().join(format!("{i:05}.network")),
                "[Match]\nName=x\n",
            )
            .expect("write");
        }
        let e = collect(&[tmp.path().to_path_buf()]).expect_err("too many");
        assert!(e.reason.contains("files"), "{e}");
    }
}
