//! The `[aggregator]` section of preflight's configuration file: the raw
//! serde form (unknown keys are errors, values keep their spans for line
//! numbers), validated into an [`AggregatorSection`] without touching the
//! file system; [`AggregatorSection::resolve_auth`] is the step that reads
//! token files. The binary turns the section into the service's
//! [`crate::server::AggregatorConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use preflight_model::config::{at, duration_at, ConfigError, Secret};
use serde::Deserialize;
use toml::Spanned;

use crate::auth::{parse_digest, parse_node_tokens, Auth, Identity, Nodes, Reads, Roles};
use crate::fleet::{FleetConfig, Selector, DEFAULT_MAX_WAIVERS, DEFAULT_MAX_WAIVERS_PER_NODE};
use crate::store::{is_postgres_url, Database, PgSettings};
use crate::tls::TlsSettings;

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
/// Default shortest waiver: a waiver shorter than a minute is a typo
/// (`0s`), not an exception an operator means to grant.
pub const DEFAULT_MIN_WAIVER: Duration = Duration::from_secs(60);
/// Smallest cap on waivers.
pub const MIN_MAX_WAIVER: Duration = Duration::from_secs(60);
/// Largest cap on waivers.
pub const MAX_MAX_WAIVER: Duration = Duration::from_secs(90 * 86_400);
/// Largest `max_waivers` and `max_waivers_per_node`.
pub const MAX_WAIVER_COUNT: usize = 1_000_000;

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
    min_waiver: Option<Spanned<String>>,
    max_waivers_per_node: Option<Spanned<i64>>,
    max_waivers: Option<Spanned<i64>>,
    max_connections_per_source: Option<Spanned<i64>>,
    #[serde(default)]
    closed_inventory: bool,
    report_token: Option<String>,
    report_token_file: Option<Spanned<String>>,
    admin_token: Option<String>,
    admin_token_file: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    tls: Option<RawTls>,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    fleet_report_token: bool,
    node_tokens_file: Option<Spanned<String>>,
    reads: Option<Spanned<String>>,
    #[serde(default)]
    identity: Vec<RawIdentity>,
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

/// `[aggregator.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    client_ca: Option<Spanned<String>>,
}

/// `[[aggregator.identity]]`: a token digest or a certificate name, and
/// what it may do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: Spanned<String>,
    cert_san: Option<String>,
    token_sha256: Option<String>,
    roles: Vec<String>,
    node: Option<String>,
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
    /// HTTPS files.
    pub tls: Option<TlsSettings>,
    /// `node sha256` lines, read when resolving.
    pub node_tokens_file: Option<PathBuf>,
    /// Who may read without a credential.
    pub reads: Reads,
    /// Connections one client address may hold.
    pub max_connections_per_source: usize,
    /// `[[aggregator.identity]]`, validated: digest or SAN, and identity.
    pub identities: Vec<(IdentityKey, Identity)>,
}

/// How a configured identity is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKey {
    /// The SHA-256 of its bearer token.
    Token([u8; 32]),
    /// A DNS name in its client certificate.
    CertSan(String),
}

/// A cap on waivers: 1 to [`MAX_WAIVER_COUNT`], `default` when absent.
fn count_at(key: String, v: &Option<Spanned<i64>>, default: usize) -> Result<usize, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let n = *v.get_ref();
    match usize::try_from(n) {
        Ok(c) if (1..=MAX_WAIVER_COUNT).contains(&c) => Ok(c),
        _ => Err(at(key, v, format!("{n}: expected 1 to {MAX_WAIVER_COUNT}"))),
    }
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
        let loopback = listen.ip().is_loopback();
        let tls = self.tls.as_ref().map(|t| TlsSettings {
            cert: PathBuf::from(t.cert.get_ref()),
            key: PathBuf::from(t.key.get_ref()),
            client_ca: t.client_ca.as_ref().map(|c| PathBuf::from(c.get_ref())),
        });
        if tls.is_none() && !loopback && !self.insecure_plaintext {
            return Err(ConfigError::new(key("tls"), self.listen.as_ref().map(Spanned::span), format!("listening on {listen} without TLS would send tokens in clear: set [{prefix}.tls] cert and key, or insecure_plaintext = true on a trusted network")));
        }
        if report_token.is_some() && !loopback && !self.fleet_report_token {
            return Err(ConfigError::new(key("report_token"), None, format!("one report token for the whole fleet lets any node report for any other: use node tokens ({prefix}.node_tokens_file) or client certificates ({prefix}.tls.client_ca), or set fleet_report_token = true on a trusted network")));
        }
        if self.fleet_report_token && report_token.is_none() {
            return Err(ConfigError::new(
                key("fleet_report_token"),
                None,
                "needs report_token (or report_token_file)",
            ));
        }
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let mut identities = Vec::new();
        for (i, id) in self.identity.iter().enumerate() {
            let k = key(&format!("identity[{i}]"));
            let err = |r: String| at(k.clone(), &id.name, r);
            let roles = Roles::parse(&id.roles).map_err(&err)?;
            if roles == Roles::default() {
                return Err(err(
                    "roles is empty: give one or more of \"agent\", \"reader\", \"operator\""
                        .into(),
                ));
            }
            if let Some(n) = &id.node {
                preflight_model::names::check_node_name(n).map_err(|e| err(e.to_string()))?;
            }
            let (ik, nodes) = match (&id.cert_san, &id.token_sha256) {
                (Some(san), None) => {
                    if !mtls {
                        return Err(err(format!("cert_san needs {prefix}.tls.client_ca")));
                    }
                    let mut nodes = vec![san.to_ascii_lowercase()];
                    nodes.extend(id.node.clone());
                    (IdentityKey::CertSan(san.clone()), nodes)
                }
                (None, Some(h)) => {
                    if roles.agent && id.node.is_none() {
                        return Err(err("a token with the agent role needs node = \"NAME\" (the node it reports for)".into()));
                    }
                    (
                        IdentityKey::Token(parse_digest(h).map_err(&err)?),
                        id.node.clone().into_iter().collect(),
                    )
                }
                _ => return Err(err("give exactly one of cert_san or token_sha256".into())),
            };
            identities.push((
                ik,
                Identity {
                    name: id.name.get_ref().clone(),
                    roles,
                    nodes: Nodes::Only(nodes),
                },
            ));
        }
        let reads = match self.reads.as_ref().map(|r| (r, r.get_ref().as_str())) {
            None if loopback => Reads::Open,
            None => Reads::Authenticated,
            Some((_, "open")) => Reads::Open,
            Some((_, "authenticated")) => Reads::Authenticated,
            Some((_, "reader")) => Reads::Reader,
            Some((r, other)) => {
                return Err(at(
                    key("reads"),
                    r,
                    format!("`{other}`: expected \"open\", \"authenticated\" or \"reader\""),
                ))
            }
        };
        match self.auth.as_ref().map_or("token", |a| a.get_ref().as_str()) {
            "token" => {
                let operator =
                    admin_token.is_some() || identities.iter().any(|(_, i)| i.roles.operator);
                let agent = report_token.is_some()
                    || self.node_tokens_file.is_some()
                    || mtls
                    || identities.iter().any(|(_, i)| i.roles.agent);
                if !(loopback || operator && agent) {
                    return Err(auth_err(format!("listening on {listen} needs credentials for agents (node_tokens_file, tls.client_ca, or report_token with fleet_report_token) and for operators (admin_token or an identity with the operator role); set auth = \"none\" only on a loopback address")));
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
        let count = |k: &str, v, default| count_at(key(k), v, default);
        let fleet = FleetConfig {
            ttl: duration_at(key("ttl"), self.ttl.as_ref(), DEFAULT_TTL, MIN_TTL, MAX_TTL)?,
            settle: duration_at(
                key("settle"),
                self.settle.as_ref(),
                DEFAULT_SETTLE,
                Duration::ZERO,
                MAX_SETTLE,
            )?,
            closed_inventory: self.closed_inventory,
            max_waiver: duration_at(
                key("max_waiver"),
                self.max_waiver.as_ref(),
                DEFAULT_MAX_WAIVER,
                MIN_MAX_WAIVER,
                MAX_MAX_WAIVER,
            )?,
            min_waiver: duration_at(
                key("min_waiver"),
                self.min_waiver.as_ref(),
                DEFAULT_MIN_WAIVER,
                Duration::from_secs(1),
                MIN_MAX_WAIVER,
            )?,
            max_waivers_per_node: count(
                "max_waivers_per_node",
                &self.max_waivers_per_node,
                DEFAULT_MAX_WAIVERS_PER_NODE,
            )?,
            max_waivers: count("max_waivers", &self.max_waivers, DEFAULT_MAX_WAIVERS)?,
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
        let per_source = self.max_connections_per_source.as_ref();
        Ok(AggregatorSection {
            max_connections_per_source: crate::admit::per_source_at(key, per_source)?,
            listen,
            database,
            fleet,
            report_token,
            admin_token,
            scopes,
            inventory,
            tls,
            node_tokens_file: self.node_tokens_file.map(|f| PathBuf::from(f.into_inner())),
            reads,
            identities,
        })
    }
}

impl AggregatorSection {
    /// The resolve step: reads token files and the node tokens file and
    /// builds the credentials. `prefix` as in validation.
    ///
    /// # Errors
    /// A file that cannot be read, is empty or has a bad line; the same
    /// token given to two identities.
    pub fn resolve_auth(&self, prefix: &str) -> Result<Auth, ConfigError> {
        let read = |s: Option<&Secret>, k: &str| {
            s.map(|s| s.resolve(&format!("{prefix}.{k}"))).transpose()
        };
        let dup = |k: &str| {
            let k = format!("{prefix}.{k}");
            move |r: String| ConfigError::new(k, None, r)
        };
        let mut auth = Auth::new(self.reads);
        auth.set_mtls(self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
        if let Some(t) = read(self.report_token.as_ref(), "report_token")? {
            auth.add_fleet_report_token(&t)
                .map_err(dup("report_token"))?;
        }
        if let Some(t) = read(self.admin_token.as_ref(), "admin_token")? {
            auth.add_admin_token(&t).map_err(dup("admin_token"))?;
        }
        if let Some(f) = &self.node_tokens_file {
            let k = format!("{prefix}.node_tokens_file");
            let text = std::fs::read_to_string(f).map_err(|e| {
                ConfigError::new(&k, None, format!("cannot read {}: {e}", f.display()))
            })?;
            let lines = parse_node_tokens(&text)
                .map_err(|r| ConfigError::new(&k, None, format!("{}: {r}", f.display())))?;
            for (node, d) in lines {
                auth.add_node_token(&node, d)
                    .map_err(dup("node_tokens_file"))?;
            }
        }
        for (i, (k, id)) in self.identities.iter().enumerate() {
            match k {
                IdentityKey::Token(d) => auth
                    .add_token(*d, id.clone())
                    .map_err(dup(&format!("identity[{i}]")))?,
                IdentityKey::CertSan(san) => auth.add_cert(san, id.clone()),
            }
        }
        Ok(auth)
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
        let nodes = dir.path().join("nodes");
        std::fs::write(
            &nodes,
            format!(
                "n1 {}\n",
                crate::auth::hex(&crate::auth::token_digest("t1"))
            ),
        )
        .expect("write");
        let s = section(&format!(
            "listen = \"0.0.0.0:9100\"\ninsecure_plaintext = true\nnode_tokens_file = {:?}\nadmin_token_file = {:?}",
            nodes.display().to_string(),
            f.display().to_string()
        ))
        .expect("valid");
        assert_eq!(s.reads, Reads::Authenticated, "not loopback");
        s.resolve_auth("aggregator").expect("resolves");
        std::fs::write(&f, "\n").expect("write");
        let e = s.resolve_auth("aggregator").expect_err("empty file");
        assert_eq!(e.key, "aggregator.admin_token");
        std::fs::write(&f, "t1").expect("write");
        let e = s.resolve_auth("aggregator").expect_err("same token twice");
        assert!(e.reason.contains("distinct"), "{}", e.reason);
        std::fs::write(&nodes, "n1 zz\n").expect("write");
        let e = s.resolve_auth("aggregator").expect_err("bad line");
        assert_eq!(e.key, "aggregator.node_tokens_file");
    }

    #[test]
    fn tls_and_credentials_off_loopback() {
        let e =
            section("listen = \"0.0.0.0:9100\"\nadmin_token = \"a\"\nnode_tokens_file = \"/n\"")
                .expect_err("plaintext");
        assert_eq!(e.key, "aggregator.tls");
        let tls =
            "listen = \"0.0.0.0:9100\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\"\n";
        let e = section(&format!("report_token = \"r\"\nadmin_token = \"a\"\n{tls}"))
            .expect_err("fleet token without opt-in");
        assert_eq!(e.key, "aggregator.report_token");
        section(&format!(
            "report_token = \"r\"\nfleet_report_token = true\nadmin_token = \"a\"\n{tls}"
        ))
        .expect("opted in");
        let e = section(tls).expect_err("no operator credential");
        assert_eq!(e.key, "aggregator.auth");
        let s = section(&format!(
            "{tls}[[identity]]\nname = \"ci\"\ntoken_sha256 = \"{}\"\nroles = [\"operator\"]\n\n[[identity]]\nname = \"mon\"\ncert_san = \"mon.example.com\"\nroles = [\"reader\"]\n",
            "ab".repeat(32)
        ))
        .expect("identities with mTLS");
        assert_eq!(s.identities.len(), 2);
        let e = section("[[identity]]\nname = \"x\"\ntoken_sha256 = \"00\"\nroles = [\"agent\"]\n")
            .expect_err("agent token without node");
        assert_eq!(e.key, "aggregator.identity[0]");
        let e = section("[[identity]]\nname = \"x\"\ncert_san = \"a\"\nroles = [\"reader\"]\n")
            .expect_err("cert_san without client_ca");
        assert!(e.reason.contains("client_ca"), "{}", e.reason);
        let e = section("reads = \"all\"").expect_err("bad reads");
        assert_eq!(e.key, "aggregator.reads");
    }
}
