//! Loads the expected state from an os-net-config file (and optional nicN
//! mapping file) or from systemd-networkd's files, and reloads it when the
//! files change. A file that cannot
//! be read leaves the last good expectations in force and is reported as
//! EXPECTATIONS_INVALID by the evaluator.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use preflight_model::config::{at, ConfigError};
use preflight_model::Snapshot;
use preflight_policy::expect::{self, ExpectError, Expectations};
use preflight_policy::Evaluator;
use toml::Spanned;

pub mod ifupdown;
pub mod netplan;
pub mod networkd;
pub mod networkmanager;

/// Default locations os-net-config reads.
pub const DEFAULT_PATHS: &[&str] = &[
    "/etc/os-net-config/config.yaml",
    "/etc/os-net-config/config.json",
];

/// os-net-config's default mapping file (its `-m`): read when it exists and
/// no mapping file is configured, as os-net-config does.
pub const DEFAULT_MAPPING: &str = "/etc/os-net-config/mapping.yaml";

/// NICs os-net-config bound to DPDK (gone from the kernel); it numbers them.
pub const DPDK_MAPPING: &str = "/var/lib/os-net-config/dpdk_mapping.yaml";

/// SR-IOV PFs and VFs os-net-config configured; 18.x numbers the PFs.
pub const SRIOV_CONFIG: &str = "/var/lib/os-net-config/sriov_config.yaml";

/// The first default os-net-config file that exists.
#[must_use]
pub fn default_path() -> Option<PathBuf> {
    DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The network stack whose files declare the expected state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stack {
    /// os-net-config: one file (`path`).
    OsNetConfig,
    /// systemd-networkd: these directories, highest precedence first.
    Networkd(Vec<PathBuf>),
    /// NetworkManager: keyfile and configuration locations.
    NetworkManager(Box<networkmanager::NmPaths>),
    /// ifupdown / ifupdown2: this main file (`source` lines followed).
    Ifupdown(PathBuf),
    /// netplan: these directories, lowest precedence first.
    Netplan(Vec<PathBuf>),
}

/// The stacks `--expect` and `agent.expect` name.
pub const STACKS: &[&str] = &[
    "os-net-config",
    "networkd",
    "networkmanager",
    "ifupdown",
    "netplan",
];

/// Parses `STACK[:PATH]` (`--expect`, `agent.expect`): the stack's name
/// and the path in place of its own, if any.
///
/// # Errors
/// A stack preflight does not read, or an empty path, as a sentence.
pub fn parse_spec(spec: &str) -> Result<(&'static str, Option<PathBuf>), String> {
    let (stack, path) = match spec.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (spec, None),
    };
    let Some(stack) = STACKS.iter().find(|s| **s == stack) else {
        return Err(format!(
            "`{}` is not a stack preflight reads (one of {}, optionally followed by :PATH)",
            preflight_model::excerpt::excerpt(stack),
            STACKS.join(", ")
        ));
    };
    if path.is_some_and(str::is_empty) {
        return Err(format!("`{stack}:` names no path"));
    }
    Ok((stack, path.map(PathBuf::from)))
}

/// Where the expected state comes from, before the file system is asked.
// Built once per configuration load: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ExpectationsFrom {
    /// A configured os-net-config file.
    File(Source),
    /// os-net-config's default file, if one exists on this host.
    Default,
    /// os-net-config's default file with this mapping file.
    DefaultWith(Option<PathBuf>),
}

/// `expect` (`STACK[:PATH]`), else `os_net_config` (its older
/// spelling, not both) and `nic_mapping` (os-net-config's only).
pub(crate) fn from_config(
    prefix: &str,
    expect: Option<&Spanned<String>>,
    os_net_config: Option<&Spanned<String>>,
    nic_mapping: Option<&Spanned<String>>,
) -> Result<ExpectationsFrom, ConfigError> {
    if let Some(spec) = &expect {
        if let Some(o) = os_net_config {
            return Err(at(
                format!("{prefix}.os_net_config"),
                o,
                format!("give either {prefix}.expect or {prefix}.os_net_config, not both"),
            ));
        }
        let (stack, path) =
            parse_spec(spec.get_ref()).map_err(|e| at(format!("{prefix}.expect"), spec, e))?;
        if stack == "ifupdown" {
            if let Some(m) = nic_mapping {
                return Err(at(
                    format!("{prefix}.nic_mapping"),
                    m,
                    "is os-net-config's: ifupdown has no nicN names".to_owned(),
                ));
            }
            return Ok(ExpectationsFrom::File(Source::ifupdown(path)));
        }
        if stack == "netplan" {
            if let Some(m) = nic_mapping {
                return Err(at(
                    format!("{prefix}.nic_mapping"),
                    m,
                    "is os-net-config's: netplan has no nicN names".to_owned(),
                ));
            }
            return Ok(ExpectationsFrom::File(Source::netplan(path)));
        }
        if stack == "networkd" {
            if let Some(m) = nic_mapping {
                return Err(at(
                    format!("{prefix}.nic_mapping"),
                    m,
                    "is os-net-config's: systemd-networkd has no nicN names".to_owned(),
                ));
            }
            return Ok(ExpectationsFrom::File(Source::networkd(path)));
        }
        if stack == "networkmanager" {
            if let Some(m) = nic_mapping {
                return Err(at(
                    format!("{prefix}.nic_mapping"),
                    m,
                    "is os-net-config's: NetworkManager has no nicN names".to_owned(),
                ));
            }
            return Ok(ExpectationsFrom::File(Source::networkmanager(path)));
        }
        return match path {
            Some(p) => Ok(ExpectationsFrom::File(Source::new(
                p,
                nic_mapping.as_ref().map(|m| PathBuf::from(m.get_ref())),
            ))),
            None if nic_mapping.is_some() => Ok(ExpectationsFrom::DefaultWith(
                nic_mapping.as_ref().map(|m| PathBuf::from(m.get_ref())),
            )),
            None => Ok(ExpectationsFrom::Default),
        };
    }
    match (os_net_config, nic_mapping) {
        (Some(p), m) => Ok(ExpectationsFrom::File(Source::new(
            PathBuf::from(p.get_ref()),
            m.as_ref().map(|m| PathBuf::from(m.get_ref())),
        ))),
        (None, Some(m)) => Err(at(
            format!("{prefix}.nic_mapping"),
            m,
            format!("needs {prefix}.os_net_config"),
        )),
        (None, None) => Ok(ExpectationsFrom::Default),
    }
}

/// Where the expectations come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// os-net-config file; for networkd, the directory named (or the first
    /// of its search path).
    pub path: PathBuf,
    /// Whose files these are.
    pub stack: Stack,
    /// Optional mapping file (`interface_mapping:`).
    pub mapping: Option<PathBuf>,
    /// Where the node's files are: `/` on a node; a directory in tests.
    root: PathBuf,
    stamp: Option<Stamp>,
}

/// What a reload depends on: the files' modification times and the NICs.
type Stamp = ([SystemTime; 4], String);

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

/// The os-net-config version installed under `root`, from its Python
/// package metadata (`os_net_config-18.1.0.dist-info`,
/// `os_net_config-14.2.1-py3.9.egg-info`) in the system's Python library
/// directories; the newest when several are found.
fn installed_version(root: &Path) -> Option<String> {
    let mut found: Vec<String> = Vec::new();
    for lib in ["usr/lib", "usr/local/lib", "usr/lib64"] {
        let Ok(pythons) = std::fs::read_dir(root.join(lib)) else {
            continue;
        };
        for py in pythons.flatten() {
            if !py.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            for sub in ["site-packages", "dist-packages"] {
                let Ok(pkgs) = std::fs::read_dir(py.path().join(sub)) else {
                    continue;
                };
                for p in pkgs.flatten() {
                    let name = p.file_name().to_string_lossy().into_owned();
                    let Some(rest) = name
                        .strip_prefix("os_net_config-")
                        .or_else(|| name.strip_prefix("os-net-config-"))
                    else {
                        continue;
                    };
                    if !(rest.ends_with(".dist-info") || rest.ends_with(".egg-info")) {
                        continue;
                    }
                    let v: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.')
                        .collect();
                    let v = v.trim_end_matches('.').to_owned();
                    if !v.is_empty() {
                        found.push(v);
                    }
                }
            }
        }
    }
    found.into_iter().max_by_key(|v| {
        v.split('.')
            .map(|n| n.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    })
}

impl Source {
    /// A source that has not been read yet.
    #[must_use]
    pub fn new(path: PathBuf, mapping: Option<PathBuf>) -> Self {
        Self {
            path,
            mapping,
            stack: Stack::OsNetConfig,
            root: PathBuf::from("/"),
            stamp: None,
        }
    }

    /// systemd-networkd's files: `dir` in place of its search path, else
    /// the search path.
    #[must_use]
    pub fn networkd(dir: Option<PathBuf>) -> Self {
        let dirs = dir.map_or_else(
            || networkd::SEARCH_PATH.iter().map(PathBuf::from).collect(),
            |d| vec![d],
        );
        Self {
            path: dirs[0].clone(),
            mapping: None,
            stack: Stack::Networkd(dirs),
            root: PathBuf::from("/"),
            stamp: None,
        }
    }

    /// The stack's name as `--expect` and `agent.expect` spell it.
    #[must_use]
    pub fn stack_name(&self) -> &'static str {
        match self.stack {
            Stack::OsNetConfig => "os-net-config",
            Stack::Networkd(_) => "networkd",
            Stack::NetworkManager(_) => "networkmanager",
            Stack::Ifupdown(_) => "ifupdown",
            Stack::Netplan(_) => "netplan",
        }
    }

    /// The same source with os-net-config's own files (default mapping,
    /// DPDK and SR-IOV state, package metadata, sysfs) read under `root`
    /// instead of `/`.
    #[must_use]
    pub fn with_root(mut self, root: PathBuf) -> Self {
        self.root = root;
        self
    }

    fn under(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The mapping file os-net-config would use: the configured one, else
    /// its default when that exists.
    fn mapping_path(&self) -> Option<PathBuf> {
        self.mapping.clone().or_else(|| {
            let d = self.under(DEFAULT_MAPPING);
            d.exists().then_some(d)
        })
    }

    /// What os-net-config reads besides the kernel: the mapping file, its
    /// DPDK and SR-IOV state files (absent: none), and its version.
    fn osnc_state(&self) -> Result<expect::OsncState, ExpectError> {
        let read = |p: &Path| -> Result<Option<serde_json::Value>, ExpectError> {
            if !p.exists() {
                return Ok(None);
            }
            let name = p.display().to_string();
            expect::parse_document(&name, &read_bounded(p, expect::MAX_DOCUMENT_BYTES)?).map(Some)
        };
        let mapping = self.mapping_path();
        let mut st = match &mapping {
            Some(m) => {
                let text = read_bounded(m, expect::MAX_DOCUMENT_BYTES)?;
                let name = m.display().to_string();
                let doc = expect::parse_document(&name, &text)?;
                expect::OsncState::with_mapping(&name, Some(&doc))
            }
            None => expect::OsncState::default(),
        };
        let dpdk_path = self.under(DPDK_MAPPING);
        if let Some(doc) = read(&dpdk_path)? {
            st.dpdk = expect::dpdk_map(&dpdk_path.display().to_string(), &doc)?;
            for d in &mut st.dpdk {
                // `common.is_vf`: the PCI device has a physfn link.
                d.vf = self
                    .under(&format!("/sys/bus/pci/devices/{}/physfn", d.pci_address))
                    .is_dir()
                    || self
                        .under(&format!("/sys/class/net/{}/device/physfn", d.name))
                        .is_dir();
            }
        }
        if let Some(doc) = read(&self.under(SRIOV_CONFIG))? {
            (st.sriov_pfs, st.sriov_vfs) = expect::sriov_names(&doc);
        }
        st.version = installed_version(&self.root);
        // `common.is_vf_by_name`: a kernel NIC with device/physfn is a VF.
        if let Ok(dir) = std::fs::read_dir(self.under("/sys/class/net")) {
            st.kernel_vfs = dir
                .flatten()
                .filter(|e| e.path().join("device/physfn").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            st.kernel_vfs.sort();
        }
        Ok(st)
    }

    /// Reads and parses the files; nicN names are mapped against `snap`.
    ///
    /// # Errors
    /// Unreadable files, syntax errors, bad values (with the path in the document).
    pub fn load(&self, snap: &Snapshot) -> Result<Expectations, ExpectError> {
        if let Stack::NetworkManager(paths) = &self.stack {
            return Self::load_networkmanager(paths, snap);
        }
        if let Stack::Netplan(dirs) = &self.stack {
            return Self::load_netplan(dirs, snap);
        }
        if let Stack::Ifupdown(main) = &self.stack {
            let files = ifupdown::collect(main)?;
            return expect::from_ifupdown(&format!("ifupdown ({})", main.display()), &files, snap);
        }
        if let Stack::Networkd(dirs) = &self.stack {
            let files = networkd::collect(dirs)?;
            let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let mut e = expect::from_networkd(
                &format!("systemd-networkd ({})", shown.join(", ")),
                &files,
                snap,
            )?;
            e.files = files
                .iter()
                .flat_map(|f| std::iter::once(&f.path).chain(f.dropins.iter().map(|(p, _)| p)))
                .cloned()
                .collect();
            return Ok(e);
        }
        let file = self.path.display().to_string();
        let st = self.osnc_state()?;
        let doc = expect::parse_document(
            &file,
            &read_bounded(&self.path, expect::MAX_DOCUMENT_BYTES)?,
        )?;
        // Checked against the NICs the configuration was built on, never
        // against the numbering os-net-config would compute now (that one
        // shifts when a NIC loses its link: NIC_RENUMBERED).
        let nics = expect::in_force_mapping(snap, &doc, &st);
        let mut e = expect::from_os_net_config(&file, &doc, &nics)?;
        e.nics.osnc = st;
        Ok(e)
    }

    /// What a networkd reload depends on besides the NICs: every file and
    /// directory of the search path with its modification time (bounded
    /// like the reading itself).
    fn networkd_stamp(&self) -> String {
        let dirs = match &self.stack {
            Stack::Networkd(dirs) | Stack::Netplan(dirs) => dirs.clone(),
            Stack::NetworkManager(p) => p.all(),
            _ => return String::new(),
        };
        let mut out = String::new();
        for d in &dirs {
            out.push_str(&format!("|{}:{:?}", d.display(), mtime(d)));
            for e in std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .take(4 * expect::MAX_NETWORKD_FILES)
            {
                let p = e.path();
                out.push_str(&format!("|{}:{:?}", p.display(), mtime(&p)));
                if p.is_dir() {
                    for f in std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .take(expect::MAX_NETWORKD_FILES)
                    {
                        out.push_str(&format!("|{}:{:?}", f.path().display(), mtime(&f.path())));
                    }
                }
            }
        }
        out
    }

    /// Loads the files if they changed since the last call and updates the
    /// evaluator: new expectations on success; on failure the old ones stay
    /// and EXPECTATIONS_INVALID is raised. Returns whether anything changed.
    pub fn refresh(&mut self, snap: &Snapshot, ev: &mut Evaluator) -> bool {
        // A NIC that appears or goes (not one that loses its link) changes
        // the mapping in force: reload then too.
        let stamp = (
            [
                mtime(&self.path),
                self.mapping_path()
                    .as_deref()
                    .map_or(SystemTime::UNIX_EPOCH, mtime),
                mtime(&self.under(DPDK_MAPPING)),
                mtime(&self.under(SRIOV_CONFIG)),
            ],
            format!(
                "{}{}",
                expect::ordered_nics(snap, false).join(","),
                self.networkd_stamp() + &self.ifupdown_stamp()
            ),
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
mod tests;
