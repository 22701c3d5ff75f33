//! The `[aggregator]` section of preflight's configuration file: the raw
//! serde form (unknown keys are errors, values keep their spans for line
//! numbers), validated into an [`AggregatorSection`] without touching the
//! file system; [`AggregatorSection::resolve_tokens`] is the step that reads
//! token files. The binary turns the section into the service's
//! [`crate::server::AggregatorConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use preflight_model::config::{parse_duration_in, ConfigError, Secret};
use serde::Deserialize;
use toml::Spanned;

use crate::api::Tokens;
use crate::fleet::{FleetConfig, Selector};
use crate::store::{is_postgres_url, Database, PgSettings};

/// Default address of the aggregator.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
/// Default SQLite file.
pub const DEFAULT_DATABASE: &str = "preflight.db";
/// Default report TTL: three default agent heartbeats (10 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Shortest TTL.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Default settle time.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);
/// Longest settle time (zero is allowed).
pub const MAX_SETTLE: Duration = Duration::from_secs(3600);
/// Default longest waiver.
pub const DEFAULT_MAX_WAIVER: Duration = Duration::from_secs(7 * 86_400);
/// Smallest cap on waivers.
pub const MIN_MAX_WAIVER: Duration = Duration::from_secs(60);
/// Largest cap on waivers.
pub const MAX_MAX_WAIVER: Duration = Duration::from_secs(90 * 86_400);

/// `[aggregator]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregatorSection {
    listen: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    database_password_file: Option<Spanned<String>>,
    database_ca_file: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    max_waiver: Option<Spanned<String>>,
    #[serde(default)]
    closed_inventory: bool,
    report_token: Option<String>,
    report_token_file: Option<Spanned<String>>,
    admin_token: Option<String>,
    admin_token_file: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    node: Vec<RawNode>,
}

/// `[[aggregator.node]]`: one expected node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `[aggregator]` validated: every value well-formed, nothing read from disk.
#[derive(Debug, Clone)]
pub struct AggregatorSection {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The store: a SQLite file, or a `postgres://` URL.
    pub database: Database,
    /// Gate settings.
    pub fleet: FleetConfig,
    /// Report token (agents).
    pub report_token: Option<Secret>,
    /// Admin token (waivers, inventory).
    pub admin_token: Option<Secret>,
    /// Scopes exported as metrics and shown on the page.
    pub scopes: Vec<Selector>,
    /// Nodes expected.
    pub inventory: Vec<(String, BTreeMap<String, String>)>,
}

fn at<T>(key: impl Into<String>, v: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, Some(v.span()), reason)
}

fn duration(
    key: String,
    v: Option<&Spanned<String>>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |v| {
        parse_duration_in(v.get_ref(), min, max).map_err(|r| at(key, v, r))
    })
}

fn secret(
    key: String,
    inline: Option<&String>,
    file: Option<&Spanned<String>>,
) -> Result<Option<Secret>, ConfigError> {
    Secret::from_parts(
        &key,
        inline.map(String::as_str),
        file.map(|f| (f.get_ref().as_str(), f.span())),
    )
}

impl RawAggregatorSection {
    /// Validates; `prefix` is the table's dotted path (`aggregator`).
    ///
    /// # Errors
    /// The first invalid value, with its key and why.
    pub fn validate(self, prefix: &str) -> Result<AggregatorSection, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let listen_text = self
            .listen
            .as_ref()
            .map_or(DEFAULT_LISTEN, |v| v.get_ref().as_str());
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            ConfigError::new(
                key("listen"),
                self.listen.as_ref().map(Spanned::span),
                format!("`{listen_text}` is not an address:port ({e}); e.g. 0.0.0.0:9100"),
            )
        })?;
        let report_token = secret(
            key("report_token"),
            self.report_token.as_ref(),
            self.report_token_file.as_ref(),
        )?;
        let admin_token = secret(
            key("admin_token"),
            self.admin_token.as_ref(),
            self.admin_token_file.as_ref(),
        )?;
        let auth_err = |reason: String| {
            ConfigError::new(key("auth"), self.auth.as_ref().map(Spanned::span), reason)
        };
        match self.auth.as_ref().map_or("token", |a| a.get_ref().as_str()) {
            "token" => {
                if (report_token.is_none() || admin_token.is_none()) && !listen.ip().is_loopback() {
                    return Err(auth_err(format!("listening on {listen} needs report_token and admin_token (or their _file forms); set auth = \"none\" only on a loopback address")));
                }
            }
            "none" => {
                if !listen.ip().is_loopback() {
                    return Err(auth_err(format!(
                        "auth = \"none\" is allowed only on a loopback address, not {listen}"
                    )));
                }
            }
            other => {
                return Err(auth_err(format!(
                    "`{other}`: expected \"token\" or \"none\""
                )))
            }
        }
        let fleet = FleetConfig {
            ttl: duration(key("ttl"), self.ttl.as_ref(), DEFAULT_TTL, MIN_TTL, MAX_TTL)?,
            settle: duration(
                key("settle"),
                self.settle.as_ref(),
                DEFAULT_SETTLE,
                Duration::ZERO,
                MAX_SETTLE,
            )?,
            closed_inventory: self.closed_inventory,
            max_waiver: duration(
                key("max_waiver"),
                self.max_waiver.as_ref(),
                DEFAULT_MAX_WAIVER,
                MIN_MAX_WAIVER,
                MAX_MAX_WAIVER,
            )?,
        };
        let scopes = self
            .scopes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Selector::parse(s.get_ref())
                    .map_err(|e| at(key(&format!("scopes[{i}]")), s, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut inventory: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        for (i, n) in self.node.into_iter().enumerate() {
            preflight_model::names::check_node_name(n.name.get_ref())
                .and_then(|()| preflight_model::names::check_labels(&n.labels))
                .map_err(|e| at(key(&format!("node[{i}]")), &n.name, e.to_string()))?;
            if inventory.iter().any(|(name, _)| name == n.name.get_ref()) {
                return Err(at(key(&format!("node[{i}].name")), &n.name, "listed twice"));
            }
            inventory.push((n.name.into_inner(), n.labels));
        }
        let database = match (&self.database, &self.database_password_file) {
            (Some(d), pw) if is_postgres_url(d.get_ref()) => {
                let pg =
                    PgSettings::parse(d.get_ref(), pw.as_ref().map(|p| PathBuf::from(p.get_ref())))
                        .map_err(|r| at(key("database"), d, r))?;
                Database::Postgres(match &self.database_ca_file {
                    Some(ca) => pg
                        .with_ca_file(Some(PathBuf::from(ca.get_ref())))
                        .map_err(|r| at(key("database_ca_file"), ca, r))?,
                    None => pg,
                })
            }
            (_, _) if self.database_ca_file.is_some() => {
                let ca = self.database_ca_file.as_ref().expect("checked");
                return Err(at(
                    key("database_ca_file"),
                    ca,
                    "only for a postgres:// database",
                ));
            }
            (_, Some(pw)) => {
                return Err(at(
                    key("database_password_file"),
                    pw,
                    "only for a postgres:// database",
                ))
            }
            (d, None) => Database::Sqlite(PathBuf::from(
                d.as_ref()
                    .map_or(DEFAULT_DATABASE, |d| d.get_ref().as_str()),
            )),
        };
        Ok(AggregatorSection {
            listen,
            database,
            fleet,
            report_token,
            admin_token,
            scopes,
            inventory,
        })
    }
}

impl AggregatorSection {
    /// The resolve step: reads token files. `prefix` as in validation.
    ///
    /// # Errors
    /// A token file that cannot be read or is empty.
    pub fn resolve_tokens(&self, prefix: &str) -> Result<Tokens, ConfigError> {
        let read = |s: Option<&Secret>, k: &str| {
            s.map(|s| s.resolve(&format!("{prefix}.{k}"))).transpose()
        };
        Ok(Tokens {
            report: read(self.report_token.as_ref(), "report_token")?,
            admin: read(self.admin_token.as_ref(), "admin_token")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(src: &str) -> Result<AggregatorSection, ConfigError> {
        toml::from_str::<RawAggregatorSection>(src)
            .expect("parses")
            .validate("aggregator")
    }

    #[test]
    fn defaults_bounds_and_keys() {
        let s = section("").expect("empty is fine");
        assert_eq!(s.fleet.ttl, DEFAULT_TTL);
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
        let e = section("max_waiver = \"1s\"").expect_err("too short");
        assert_eq!(e.key, "aggregator.max_waiver");
        let e = section("auth = \"kerberos\"").expect_err("unknown auth");
        assert!(
            e.reason.contains("expected \"token\" or \"none\""),
            "{}",
            e.reason
        );
        let e = section("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n").expect_err("twice");
        assert_eq!(e.key, "aggregator.node[1].name");
        let e = section("report_token = \"r\"\nreport_token_file = \"/f\"").expect_err("both");
        assert_eq!(e.key, "aggregator.report_token");
    }

    #[test]
    fn database_is_a_file_or_postgres() {
        assert_eq!(
            section("").expect("default").database,
            Database::Sqlite(DEFAULT_DATABASE.into())
        );
        let s = section("database = \"postgres://agg@db:5432/preflight?sslmode=disable\"\ndatabase_password_file = \"/run/pw\"").expect("pg");
        assert!(matches!(s.database, Database::Postgres(_)));
        let s = section("database = \"postgres://agg@db/preflight?sslmode=verify-full\"\ndatabase_ca_file = \"/etc/pg-ca.pem\"").expect("tls");
        match s.database {
            Database::Postgres(pg) => {
                assert_eq!(pg.ca_file, Some(PathBuf::from("/etc/pg-ca.pem")));
            }
            Database::Sqlite(_) => panic!("postgres expected"),
        }
        let e =
            section("database = \"postgres://agg@db/preflight?sslmode=allow\"").expect_err("allow");
        assert_eq!(e.key, "aggregator.database");
        let e = section(
            "database = \"postgres://agg@db/p?sslmode=disable\"\ndatabase_ca_file = \"/ca\"",
        )
        .expect_err("CA without TLS");
        assert_eq!(e.key, "aggregator.database_ca_file");
        let e = section("database_ca_file = \"/ca\"").expect_err("sqlite");
        assert_eq!(e.key, "aggregator.database_ca_file");
        let e = section("database_password_file = \"/run/pw\"").expect_err("sqlite");
        assert_eq!(e.key, "aggregator.database_password_file");
    }

    #[test]
    fn token_files_are_read_when_resolving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("admin");
        std::fs::write(&f, "  a \n").expect("write");
        let s = section(&format!(
            "listen = \"0.0.0.0:9100\"\nreport_token = \"r\"\nadmin_token_file = {:?}",
            f.display().to_string()
        ))
        .expect("valid");
        let t = s.resolve_tokens("aggregator").expect("resolves");
        assert_eq!(
            (t.report.as_deref(), t.admin.as_deref()),
            (Some("r"), Some("a"))
        );
        std::fs::write(&f, "\n").expect("write");
        let e = s.resolve_tokens("aggregator").expect_err("empty file");
        assert_eq!(e.key, "aggregator.admin_token");
    }
}
