//! The `[aggregator]` section of preflight's configuration file: the raw
//! serde form (unknown keys are errors, values keep their spans for line
//! numbers), validated into an [`AggregatorSection`] without touching the
//! file system, one function per group of keys (who may call: `access`;
//! the gate's settings, scopes, inventory, database here), then resolved
//! into the service's [`AggregatorConfig`] by [`AggregatorSection::resolve`],
//! the step that reads token files. The binary only hands the section over.

mod access;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use preflight_model::config::{at, duration_at, ConfigError, Secret};
use serde::Deserialize;
use toml::Spanned;

use crate::auth::{Identity, Reads};
use crate::fleet::{FleetConfig, Selector, DEFAULT_MAX_WAIVERS, DEFAULT_MAX_WAIVERS_PER_NODE};
use crate::server::AggregatorConfig;
use crate::store::{is_postgres_url, Database, PgSettings};
use crate::tls::TlsSettings;
pub use access::IdentityKey;
use access::{Access, RawAccess};

pub use crate::server::DEFAULT_STATE_DIR;
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
/// Largest `maintenance_grace` and `max_lease`.
pub const MAX_MAINTENANCE: Duration = Duration::from_secs(7 * 86_400);
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
    state_dir: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    max_waiver: Option<Spanned<String>>,
    min_waiver: Option<Spanned<String>>,
    max_waivers_per_node: Option<Spanned<i64>>,
    max_waivers: Option<Spanned<i64>>,
    maintenance_grace: Option<Spanned<String>>,
    max_lease: Option<Spanned<String>>,
    max_connections_per_source: Option<Spanned<i64>>,
    #[serde(default)]
    closed_inventory: bool,
    report_token: Option<String>,
    report_token_file: Option<Spanned<String>>,
    admin_token: Option<String>,
    admin_token_file: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    tls: Option<access::RawTls>,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    fleet_report_token: bool,
    node_tokens_file: Option<Spanned<String>>,
    reads: Option<Spanned<String>>,
    #[serde(default)]
    identity: Vec<access::RawIdentity>,
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
    /// Where the file of acknowledged waiver removals is kept (`None`:
    /// the default for the database, see [`DEFAULT_STATE_DIR`]).
    pub state_dir: Option<PathBuf>,
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

/// A cap on waivers: 1 to [`MAX_WAIVER_COUNT`], `default` when absent.
fn count_at(key: String, v: &Option<Spanned<i64>>, default: usize) -> Result<usize, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let n = *v.get_ref();
    match usize::try_from(n) {
        Ok(c) if (1..=MAX_WAIVER_COUNT).contains(&c) => Ok(c),
        _ => Err(at(key, v, format!("{n}: expected 1 to {MAX_WAIVER_COUNT}"))),
    }
}

/// The expected nodes: `(name, labels)`.
type Inventory = Vec<(String, BTreeMap<String, String>)>;

impl RawAggregatorSection {
    /// Validates; `prefix` is the table's dotted path (`aggregator`).
    ///
    /// # Errors
    /// The first invalid value, with its key and why.
    pub fn validate(self, prefix: &str) -> Result<AggregatorSection, ConfigError> {
        let Self {
            listen,
            database,
            database_password_file,
            database_ca_file,
            state_dir,
            ttl,
            settle,
            max_waiver,
            min_waiver,
            max_waivers_per_node,
            max_waivers,
            maintenance_grace,
            max_lease,
            max_connections_per_source,
            closed_inventory,
            report_token,
            report_token_file,
            admin_token,
            admin_token_file,
            auth,
            tls,
            insecure_plaintext,
            fleet_report_token,
            node_tokens_file,
            reads,
            identity,
            scopes,
            node,
        } = self;
        let key = |k: &str| format!("{prefix}.{k}");
        let listen_span = listen.as_ref().map(Spanned::span);
        let listen = listen_at(prefix, listen.as_ref())?;
        let Access {
            report_token,
            admin_token,
            tls,
            node_tokens_file,
            reads,
            identities,
        } = RawAccess {
            report_token,
            report_token_file,
            admin_token,
            admin_token_file,
            auth,
            tls,
            insecure_plaintext,
            fleet_report_token,
            node_tokens_file,
            reads,
            identity,
        }
        .validate(prefix, listen, listen_span)?;
        let fleet = RawFleet {
            ttl,
            settle,
            max_waiver,
            min_waiver,
            max_waivers_per_node,
            max_waivers,
            maintenance_grace,
            max_lease,
            closed_inventory,
        }
        .validate(prefix)?;
        let scopes = scopes_at(prefix, &scopes)?;
        let inventory = inventory_at(prefix, node)?;
        let database = database_at(
            prefix,
            database.as_ref(),
            database_password_file.as_ref(),
            database_ca_file.as_ref(),
        )?;
        let state_dir = state_dir_at(prefix, state_dir.as_ref())?;
        Ok(AggregatorSection {
            state_dir,
            max_connections_per_source: crate::admit::per_source_at(
                key,
                max_connections_per_source.as_ref(),
            )?,
            listen,
            database,
            fleet,
            report_token,
            admin_token,
            scopes,
            inventory,
            tls,
            node_tokens_file,
            reads,
            identities,
        })
    }
}

/// `listen`: an address and port, [`DEFAULT_LISTEN`] when absent.
fn listen_at(prefix: &str, listen: Option<&Spanned<String>>) -> Result<SocketAddr, ConfigError> {
    let text = listen.map_or(DEFAULT_LISTEN, |v| v.get_ref().as_str());
    text.parse().map_err(|e| {
        ConfigError::new(
            format!("{prefix}.listen"),
            listen.map(Spanned::span),
            format!("`{text}` is not an address:port ({e}); e.g. 0.0.0.0:9100"),
        )
    })
}

/// The keys of `[aggregator]` that make the gate's [`FleetConfig`].
struct RawFleet {
    ttl: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    max_waiver: Option<Spanned<String>>,
    min_waiver: Option<Spanned<String>>,
    max_waivers_per_node: Option<Spanned<i64>>,
    max_waivers: Option<Spanned<i64>>,
    maintenance_grace: Option<Spanned<String>>,
    max_lease: Option<Spanned<String>>,
    closed_inventory: bool,
}

impl RawFleet {
    fn validate(self, prefix: &str) -> Result<FleetConfig, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let count = |k: &str, v, default| count_at(key(k), v, default);
        Ok(FleetConfig {
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
            maintenance_grace: duration_at(
                key("maintenance_grace"),
                self.maintenance_grace.as_ref(),
                crate::fleet::DEFAULT_MAINTENANCE_GRACE,
                Duration::ZERO,
                MAX_MAINTENANCE,
            )?,
            max_lease: duration_at(
                key("max_lease"),
                self.max_lease.as_ref(),
                crate::fleet::DEFAULT_MAX_LEASE,
                Duration::from_secs(60),
                MAX_MAINTENANCE,
            )?,
        })
    }
}

/// `scopes`: selectors.
fn scopes_at(prefix: &str, scopes: &[Spanned<String>]) -> Result<Vec<Selector>, ConfigError> {
    scopes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Selector::parse(s.get_ref())
                .map_err(|e| at(format!("{prefix}.scopes[{i}]"), s, e.to_string()))
        })
        .collect()
}

/// `[[aggregator.node]]`: valid names and labels, each name once.
fn inventory_at(prefix: &str, nodes: Vec<RawNode>) -> Result<Inventory, ConfigError> {
    let mut inventory: Inventory = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        preflight_model::names::check_node_name(n.name.get_ref())
            .and_then(|()| preflight_model::names::check_labels(&n.labels))
            .map_err(|e| at(format!("{prefix}.node[{i}]"), &n.name, e.to_string()))?;
        if inventory.iter().any(|(name, _)| name == n.name.get_ref()) {
            return Err(at(
                format!("{prefix}.node[{i}].name"),
                &n.name,
                "listed twice",
            ));
        }
        inventory.push((n.name.into_inner(), n.labels));
    }
    Ok(inventory)
}

/// `state_dir`: an absolute path (whether it can be written is checked at
/// start, when the aggregator opens its file there).
fn state_dir_at(
    prefix: &str,
    dir: Option<&Spanned<String>>,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(d) = dir else { return Ok(None) };
    let path = PathBuf::from(d.get_ref());
    if !path.is_absolute() {
        return Err(at(
            format!("{prefix}.state_dir"),
            d,
            format!(
                "`{}`: expected an absolute path, e.g. {DEFAULT_STATE_DIR}",
                d.get_ref()
            ),
        ));
    }
    Ok(Some(path))
}

/// `database`, `database_password_file`, `database_ca_file`: a SQLite file
/// ([`DEFAULT_DATABASE`] when absent), or a `postgres://` URL, the only
/// kind the two files are for.
fn database_at(
    prefix: &str,
    database: Option<&Spanned<String>>,
    password_file: Option<&Spanned<String>>,
    ca_file: Option<&Spanned<String>>,
) -> Result<Database, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    Ok(match (database, password_file, ca_file) {
        (Some(d), pw, ca) if is_postgres_url(d.get_ref()) => {
            let pg = PgSettings::parse(d.get_ref(), pw.map(|p| PathBuf::from(p.get_ref())))
                .map_err(|r| at(key("database"), d, r))?;
            Database::Postgres(match ca {
                Some(ca) => pg
                    .with_ca_file(Some(PathBuf::from(ca.get_ref())))
                    .map_err(|r| at(key("database_ca_file"), ca, r))?,
                None => pg,
            })
        }
        (_, _, Some(ca)) => {
            return Err(at(
                key("database_ca_file"),
                ca,
                "only for a postgres:// database",
            ))
        }
        (_, Some(pw), None) => {
            return Err(at(
                key("database_password_file"),
                pw,
                "only for a postgres:// database",
            ))
        }
        (d, None, None) => Database::Sqlite(PathBuf::from(
            d.map_or(DEFAULT_DATABASE, |d| d.get_ref().as_str()),
        )),
    })
}

impl AggregatorSection {
    /// The resolve step: reads the token files
    /// ([`AggregatorSection::resolve_auth`]) and composes the service's
    /// settings. `prefix` as in validation.
    ///
    /// # Errors
    /// As [`AggregatorSection::resolve_auth`].
    pub fn resolve(self, prefix: &str) -> Result<AggregatorConfig, ConfigError> {
        let auth = self.resolve_auth(prefix)?;
        Ok(AggregatorConfig {
            listen: self.listen,
            database: self.database,
            state_dir: self.state_dir,
            fleet: self.fleet,
            auth,
            tls: self.tls,
            scopes: self.scopes,
            inventory: self.inventory,
            max_connections_per_source: self.max_connections_per_source,
        })
    }
}

#[cfg(test)]
mod tests;
