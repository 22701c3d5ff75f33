//! The `[agent]` section of preflight's configuration file: the raw serde
//! form (unknown keys are errors, values keep their spans for line numbers),
//! validated into an [`AgentSection`] without touching the file system, then
//! resolved into an [`AgentConfig`]: the step that reads token files, looks
//! for os-net-config's default file and asks the kernel for the host name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use preflight_client::{BaseUrl, TlsOptions};
use preflight_model::config::{at, duration_at, ConfigError, Secret};
use preflight_policy::expect::Expectations;
use preflight_policy::PolicyConfig;
use serde::Deserialize;
use toml::Spanned;

use crate::expectations::{self, Source};
use crate::AgentConfig;

/// Default heartbeat (a small report when nothing changed).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Shortest heartbeat.
pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest heartbeat.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(600);
/// Default address of the agent's `/metrics`, `/v1/report`, `/healthz`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";
/// Default full netlink re-read interval.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);
/// Shortest re-read interval.
pub const MIN_RESYNC: Duration = Duration::from_secs(5);
/// Longest re-read interval.
pub const MAX_RESYNC: Duration = Duration::from_secs(3600);
/// Default time between probes of one target.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest probe interval.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest probe interval.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(600);
/// Default wait for one probe's answer.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Shortest probe timeout.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest probe timeout.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default consecutive misses before REACHABILITY_FAILED.
pub const DEFAULT_PROBE_FAIL_AFTER: u32 = 3;
/// Default consecutive answers before it clears.
pub const DEFAULT_PROBE_RECOVER_AFTER: u32 = 2;
/// Largest fail/recover count.
pub const MAX_PROBE_COUNT: u32 = 100;
/// Probe results kept per target (for the loss figure).
pub const PROBE_WINDOW: usize = 30;
/// Default time between DHCP probes (`agent.dhcp_probe_interval`).
pub const DEFAULT_DHCP_PROBE_INTERVAL: Duration = Duration::from_secs(600);
/// Shortest: a DISCOVER is cheap, but not free for the DHCP server.
pub const MIN_DHCP_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest DHCP probe interval.
pub const MAX_DHCP_PROBE_INTERVAL: Duration = Duration::from_secs(86_400);

/// Default time between member path checks (`agent.member_path_check`).
pub const DEFAULT_MEMBER_PATH_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest: a round is a few ARP probes per member and network.
pub const MIN_MEMBER_PATH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest member path interval.
pub const MAX_MEMBER_PATH_INTERVAL: Duration = Duration::from_secs(600);

/// `[agent]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentSection {
    node: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    aggregators: Vec<Spanned<String>>,
    token: Option<String>,
    token_file: Option<Spanned<String>>,
    heartbeat: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    resync: Option<Spanned<String>>,
    os_net_config: Option<Spanned<String>>,
    nic_mapping: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    #[serde(default)]
    probes: Vec<Spanned<String>>,
    probe_gateways: Option<bool>,
    probe_gateways_arp: Option<bool>,
    probe_interval: Option<Spanned<String>>,
    probe_timeout: Option<Spanned<String>>,
    probe_fail_after: Option<Spanned<i64>>,
    probe_recover_after: Option<Spanned<i64>>,
    ovsdb: Option<Spanned<String>>,
    dhcp_probe: Option<bool>,
    dhcp_probe_interval: Option<Spanned<String>>,
    member_path_check: Option<Spanned<String>>,
    tls: Option<RawClientTls>,
}

/// `[agent.tls]`: how aggregators are verified and what the agent presents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

pub use crate::expectations::ExpectationsFrom;

/// `[agent]` validated: every value well-formed, nothing read from disk.
#[derive(Debug, Clone)]
pub struct AgentSection {
    /// Node name when configured; the host's otherwise.
    pub node: Option<String>,
    /// Labels sent with every full report.
    pub labels: BTreeMap<String, String>,
    /// Aggregators to push to.
    pub aggregators: Vec<BaseUrl>,
    /// Report token, inline or as a file.
    pub token: Option<Secret>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Local listener.
    pub listen: SocketAddr,
    /// Netlink re-read interval.
    pub resync: Duration,
    /// Expected state source.
    pub expectations: ExpectationsFrom,
    /// Configured probe targets.
    pub probes: Vec<preflight_probe::Target>,
    /// Probe expected gateways.
    pub probe_gateways: bool,
    /// Also by ARP.
    pub probe_gateways_arp: bool,
    /// Probe timing.
    pub probe: preflight_probe::ProbeConfig,
    /// OVSDB socket (`agent.ovsdb`): the default paths, one path, or `None`
    /// for `off`.
    pub ovsdb: Option<preflight_ovsdb::SocketPaths>,
    /// DHCP probe interval (`agent.dhcp_probe = true`); `None`: off.
    pub dhcp_probe: Option<Duration>,
    /// Member path check interval (`agent.member_path_check`); `None`: off.
    pub member_path_check: Option<Duration>,
    /// `[agent.tls]`.
    pub tls: TlsOptions,
}

fn count(key: String, v: Option<&Spanned<i64>>, default: u32) -> Result<u32, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    u32::try_from(*v.get_ref())
        .ok()
        .filter(|n| (1..=MAX_PROBE_COUNT).contains(n))
        .ok_or_else(|| {
            at(
                key,
                v,
                format!("must be an integer from 1 to {MAX_PROBE_COUNT}"),
            )
        })
}

impl RawAgentSection {
    /// Validates; `prefix` is the table's dotted path (`agent`). One
    /// function per group of keys, in the order the errors are reported.
    ///
    /// # Errors
    /// The first invalid value, with its key and why.
    pub fn validate(self, prefix: &str) -> Result<AgentSection, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        self.check_identity(prefix)?;
        let aggregators = self.aggregators(prefix)?;
        let token = Secret::from_parts(
            &key("token"),
            self.token.as_deref(),
            self.token_file
                .as_ref()
                .map(|f| (f.get_ref().as_str(), f.span())),
        )?;
        let listen = self.listen(prefix)?;
        let expectations = self.expectations(prefix)?;
        let probes = self.probes(prefix)?;
        let ovsdb = self.ovsdb(prefix)?;
        let dhcp_probe = self.dhcp_probe(prefix)?;
        let member_path_check = match &self.member_path_check {
            Some(v) if v.get_ref() == "off" => None,
            v => Some(duration_at(
                key("member_path_check"),
                v.as_ref(),
                DEFAULT_MEMBER_PATH_INTERVAL,
                MIN_MEMBER_PATH_INTERVAL,
                MAX_MEMBER_PATH_INTERVAL,
            )?),
        };
        let tls = tls(prefix, self.tls.unwrap_or_default(), &aggregators)?;
        Ok(AgentSection {
            tls,
            ovsdb,
            dhcp_probe,
            member_path_check,
            node: self.node.map(Spanned::into_inner),
            labels: self.labels,
            aggregators,
            token,
            heartbeat: duration_at(
                key("heartbeat"),
                self.heartbeat.as_ref(),
                DEFAULT_HEARTBEAT,
                MIN_HEARTBEAT,
                MAX_HEARTBEAT,
            )?,
            listen,
            resync: duration_at(
                key("resync"),
                self.resync.as_ref(),
                DEFAULT_RESYNC,
                MIN_RESYNC,
                MAX_RESYNC,
            )?,
            expectations,
            probes,
            probe_gateways: self.probe_gateways.unwrap_or(true),
            probe_gateways_arp: self.probe_gateways_arp.unwrap_or(true),
            probe: probe_timing(
                prefix,
                self.probe_interval.as_ref(),
                self.probe_timeout.as_ref(),
                self.probe_fail_after.as_ref(),
                self.probe_recover_after.as_ref(),
            )?,
        })
    }

    /// `node` and `labels`. An explicit name must be valid here; the host
    /// name is checked only by the commands that report under it (`agent`,
    /// `up`), so that `inspect` still works on a host whose name is
    /// unusable, e.g. "(none)".
    fn check_identity(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(n) = &self.node {
            preflight_model::names::check_node_name(n.get_ref())
                .map_err(|e| at(format!("{prefix}.node"), n, e.to_string()))?;
        }
        preflight_model::names::check_labels(&self.labels)
            .map_err(|e| ConfigError::new(format!("{prefix}.labels"), None, e.to_string()))
    }

    /// `aggregators`: base URLs.
    fn aggregators(&self, prefix: &str) -> Result<Vec<BaseUrl>, ConfigError> {
        self.aggregators
            .iter()
            .enumerate()
            .map(|(i, u)| {
                BaseUrl::parse(u.get_ref())
                    .map_err(|e| at(format!("{prefix}.aggregators[{i}]"), u, e.to_string()))
            })
            .collect()
    }

    /// `listen`: an address and port, [`DEFAULT_LISTEN`] when absent.
    fn listen(&self, prefix: &str) -> Result<SocketAddr, ConfigError> {
        let listen_text = self
            .listen
            .as_ref()
            .map_or(DEFAULT_LISTEN, |v| v.get_ref().as_str());
        listen_text.parse().map_err(|e| {
            ConfigError::new(
                format!("{prefix}.listen"),
                self.listen.as_ref().map(Spanned::span),
                format!("`{listen_text}` is not an address:port ({e}); e.g. 127.0.0.1:9101"),
            )
        })
    }

    /// `expect`, `os_net_config` and `nic_mapping`.
    fn expectations(&self, prefix: &str) -> Result<ExpectationsFrom, ConfigError> {
        expectations::from_config(
            prefix,
            self.expect.as_ref(),
            self.os_net_config.as_ref(),
            self.nic_mapping.as_ref(),
        )
    }

    /// `probes`: probe targets.
    fn probes(&self, prefix: &str) -> Result<Vec<preflight_probe::Target>, ConfigError> {
        self.probes
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.get_ref()
                    .parse()
                    .map_err(|e: preflight_probe::BadTarget| {
                        at(format!("{prefix}.probes[{i}]"), t, e.to_string())
                    })
            })
            .collect()
    }

    /// `ovsdb`: the default sockets, an absolute path, or `"off"`.
    fn ovsdb(&self, prefix: &str) -> Result<Option<preflight_ovsdb::SocketPaths>, ConfigError> {
        match &self.ovsdb {
            None => Ok(Some(preflight_ovsdb::SocketPaths::default())),
            Some(v) if v.get_ref() == "off" => Ok(None),
            Some(v) if v.get_ref().starts_with('/') => {
                Ok(Some(preflight_ovsdb::SocketPaths::explicit(v.get_ref())))
            }
            Some(v) => Err(at(
                format!("{prefix}.ovsdb"),
                v,
                "must be an absolute path to ovsdb-server's unix socket, or \"off\"",
            )),
        }
    }

    /// `dhcp_probe` and `dhcp_probe_interval` (only with the former on).
    fn dhcp_probe(&self, prefix: &str) -> Result<Option<Duration>, ConfigError> {
        let key = format!("{prefix}.dhcp_probe_interval");
        match (self.dhcp_probe, &self.dhcp_probe_interval) {
            (Some(true), i) => Ok(Some(duration_at(
                key,
                i.as_ref(),
                DEFAULT_DHCP_PROBE_INTERVAL,
                MIN_DHCP_PROBE_INTERVAL,
                MAX_DHCP_PROBE_INTERVAL,
            )?)),
            (_, Some(i)) => Err(at(key, i, format!("needs {prefix}.dhcp_probe = true"))),
            (_, None) => Ok(None),
        }
    }
}

/// `[agent.tls]`: a client certificate needs both files, and any setting
/// needs every aggregator on `https://`.
fn tls(
    prefix: &str,
    tls: RawClientTls,
    aggregators: &[BaseUrl],
) -> Result<TlsOptions, ConfigError> {
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(ConfigError::new(
            format!("{prefix}.tls"),
            None,
            "a client certificate needs both cert and key",
        ));
    }
    let tls = TlsOptions {
        ca: tls.ca.map(PathBuf::from),
        cert: tls.cert.map(PathBuf::from),
        key: tls.key.map(PathBuf::from),
    };
    if tls != TlsOptions::default() && !aggregators.iter().all(BaseUrl::is_tls) {
        return Err(ConfigError::new(
            format!("{prefix}.tls"),
            None,
            "set, but an aggregator URL is http://: use https:// for every aggregator",
        ));
    }
    Ok(tls)
}

/// `probe_interval`, `probe_timeout`, `probe_fail_after`,
/// `probe_recover_after`.
fn probe_timing(
    prefix: &str,
    interval: Option<&Spanned<String>>,
    timeout: Option<&Spanned<String>>,
    fail_after: Option<&Spanned<i64>>,
    recover_after: Option<&Spanned<i64>>,
) -> Result<preflight_probe::ProbeConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    Ok(preflight_probe::ProbeConfig {
        interval: duration_at(
            key("probe_interval"),
            interval,
            DEFAULT_PROBE_INTERVAL,
            MIN_PROBE_INTERVAL,
            MAX_PROBE_INTERVAL,
        )?,
        timeout: duration_at(
            key("probe_timeout"),
            timeout,
            DEFAULT_PROBE_TIMEOUT,
            MIN_PROBE_TIMEOUT,
            MAX_PROBE_TIMEOUT,
        )?,
        fail_after: count(
            key("probe_fail_after"),
            fail_after,
            DEFAULT_PROBE_FAIL_AFTER,
        )?,
        recover_after: count(
            key("probe_recover_after"),
            recover_after,
            DEFAULT_PROBE_RECOVER_AFTER,
        )?,
        window: PROBE_WINDOW,
    })
}

/// This host's name, from the kernel (`localhost` when it has none).
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl AgentSection {
    /// The resolve step: reads the token file, finds os-net-config's default
    /// file, and names the node (configured, else `$PREFLIGHT_NODE`, else
    /// the host name); `policy` and `configured_expectations` come from the
    /// file's other sections. `prefix` is the table's dotted path.
    ///
    /// # Errors
    /// A token file that cannot be read or is empty.
    pub fn resolve(
        self,
        prefix: &str,
        policy: PolicyConfig,
        configured_expectations: Option<Expectations>,
    ) -> Result<AgentConfig, ConfigError> {
        let token = self
            .token
            .map(|t| t.resolve(&format!("{prefix}.token")))
            .transpose()?;
        if self.aggregators.iter().any(BaseUrl::is_tls) {
            // Read the files now: a bad one is a configuration error (exit
            // 64), not a push failure found later.
            self.tls
                .client_config()
                .map_err(|e| ConfigError::new(format!("{prefix}.tls"), None, e.to_string()))?;
        }
        let node = self.node.unwrap_or_else(|| {
            std::env::var("PREFLIGHT_NODE")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(hostname)
        });
        Ok(AgentConfig {
            node,
            labels: self.labels,
            aggregators: self.aggregators,
            token,
            heartbeat: self.heartbeat,
            listen: Some(self.listen),
            policy,
            resync: self.resync,
            expectations: match self.expectations {
                ExpectationsFrom::File(s) => Some(s),
                ExpectationsFrom::Default => {
                    expectations::default_path().map(|p| Source::new(p, None))
                }
                ExpectationsFrom::DefaultWith(m) => {
                    expectations::default_path().map(|p| Source::new(p, m))
                }
            },
            configured_expectations,
            probes: self.probes,
            probe_gateways: self.probe_gateways,
            probe_gateways_arp: self.probe_gateways_arp,
            probe: self.probe,
            ovsdb: self.ovsdb,
            dhcp_probe: self.dhcp_probe,
            member_path_check: self.member_path_check,
            tls: self.tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(src: &str) -> Result<AgentSection, ConfigError> {
        toml::from_str::<RawAgentSection>(src)
            .expect("parses")
            .validate("agent")
    }

    #[test]
    fn defaults_bounds_and_keys() {
        let s = section("").expect("empty is fine");
        assert_eq!(s.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(s.probe.fail_after, DEFAULT_PROBE_FAIL_AFTER);
        let e = section("probe_fail_after = 0").expect_err("zero");
        assert_eq!(e.key, "agent.probe_fail_after");
        let e = section("resync = \"1s\"").expect_err("too often");
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("agent.resync", "must be between 5s and 1h")
        );
        let e = section("nic_mapping = \"/m\"").expect_err("alone");
        assert_eq!(e.reason, "needs agent.os_net_config");
        let e = section("node = \"a b\"").expect_err("bad name");
        assert_eq!(e.key, "agent.node");
        let e = section("probes = [\"ftp:1.2.3.4\"]").expect_err("bad probe");
        assert_eq!(e.key, "agent.probes[0]");
    }

    #[test]
    fn member_path_check_is_on_by_default_and_can_be_switched_off() {
        let on = section("").expect("default").member_path_check;
        assert_eq!(on, Some(DEFAULT_MEMBER_PATH_INTERVAL));
        assert!(on.is_some_and(|d| d <= Duration::from_secs(10)));
        let off = section("member_path_check = \"off\"").expect("off");
        assert_eq!(off.member_path_check, None);
        let e = section("member_path_check = \"100ms\"").expect_err("too often");
        assert_eq!(e.key, "agent.member_path_check");
    }

    #[test]
    fn dhcp_probe_is_off_by_default_and_not_too_often() {
        assert_eq!(section("").expect("default").dhcp_probe, None);
        assert_eq!(section("dhcp_probe = false").expect("off").dhcp_probe, None);
        assert_eq!(
            section("dhcp_probe = true").expect("on").dhcp_probe,
            Some(DEFAULT_DHCP_PROBE_INTERVAL)
        );
        assert_eq!(
            section("dhcp_probe = true\ndhcp_probe_interval = \"2m\"")
                .expect("2m")
                .dhcp_probe,
            Some(Duration::from_secs(120))
        );
        let e = section("dhcp_probe = true\ndhcp_probe_interval = \"10s\"").expect_err("too often");
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("agent.dhcp_probe_interval", "must be between 1m and 1day")
        );
        let e = section("dhcp_probe_interval = \"5m\"").expect_err("alone");
        assert_eq!(e.reason, "needs agent.dhcp_probe = true");
        assert!(toml::from_str::<RawAgentSection>("dhcp_probe = \"yes\"").is_err());
    }

    #[test]
    fn ovsdb_is_the_default_sockets_a_path_or_off() {
        assert_eq!(
            section("").expect("default").ovsdb,
            Some(preflight_ovsdb::SocketPaths::default())
        );
        assert_eq!(
            section("ovsdb = \"/tmp/db.sock\"").expect("path").ovsdb,
            Some(preflight_ovsdb::SocketPaths::explicit("/tmp/db.sock"))
        );
        assert_eq!(section("ovsdb = \"off\"").expect("off").ovsdb, None);
        let e = section("ovsdb = \"db.sock\"").expect_err("relative");
        assert_eq!(e.key, "agent.ovsdb");
        assert!(e.reason.contains("absolute path"), "{}", e.reason);
    }

    #[test]
    fn the_token_file_is_read_when_resolving_not_validating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let src = format!(
            "token_file = {:?}\nnode = \"n1\"",
            path.display().to_string()
        );
        // Validation does not read it: the file need not exist yet.
        let s = section(&src).expect("valid");
        let e = s
            .clone()
            .resolve("agent", PolicyConfig::default(), None)
            .expect_err("missing file");
        assert_eq!((e.key.as_str(), e.span.is_some()), ("agent.token", true));
        std::fs::write(&path, "s3cret\n").expect("write");
        let c = s
            .resolve("agent", PolicyConfig::default(), None)
            .expect("resolves");
        assert_eq!(
            (c.token.as_deref(), c.node.as_str()),
            (Some("s3cret"), "n1")
        );
    }
}
