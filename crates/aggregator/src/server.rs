//! Wires the store, the fleet, the background tasks and the router into a
//! running service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::api::router;
use crate::auth::Auth;
use crate::fleet::{Fleet, FleetConfig, Selector};
use crate::metrics::Metrics;
use crate::service::{RemovalLog, RestoreError, Service};
use crate::state::{AppState, Shared};
use crate::store::{Database, PendingReport, Store, StoreError};
use crate::tls::{ServerTls, TlsSettings};

/// Default `state_dir` with a PostgreSQL store (the packaged unit's
/// `StateDirectory=preflight`); with SQLite it is the database's directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/preflight";

/// Validated aggregator settings.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The store: a SQLite file or a PostgreSQL database.
    pub database: Database,
    /// Where the file of acknowledged waiver removals is kept
    /// (`aggregator.state_dir`; `None`: the default, see
    /// [`AggregatorConfig::removals_file`]).
    pub state_dir: Option<PathBuf>,
    /// Gate settings.
    pub fleet: FleetConfig,
    /// Credentials and roles.
    pub auth: Auth,
    /// HTTPS; `None`: plain HTTP (loopback, or `insecure_plaintext`).
    pub tls: Option<TlsSettings>,
    /// Scopes whose verdict is exported as a metric and shown on the page.
    pub scopes: Vec<Selector>,
    /// Nodes expected from the configuration (added to the stored inventory).
    pub inventory: Vec<(String, BTreeMap<String, String>)>,
    /// Connections one client address may hold
    /// (`aggregator.max_connections_per_source`; see [`crate::admit`]).
    pub max_connections_per_source: usize,
}

impl AggregatorConfig {
    /// The file of acknowledged waiver removals: `<database>.removals` for
    /// SQLite (beside the database unless `state_dir` is set),
    /// `waiver-removals-<listen port>` in `state_dir` (default
    /// [`DEFAULT_STATE_DIR`]) for PostgreSQL, so that replicas on one host
    /// do not share it.
    #[must_use]
    pub fn removals_file(&self) -> PathBuf {
        match &self.database {
            Database::Sqlite(db) => {
                let mut name = db.file_name().unwrap_or_default().to_owned();
                name.push(".removals");
                let dir = match (&self.state_dir, db.parent()) {
                    (Some(d), _) => d.clone(),
                    (None, Some(p)) if !p.as_os_str().is_empty() => p.to_owned(),
                    (None, _) => PathBuf::from("."),
                };
                dir.join(name)
            }
            Database::Postgres(_) => self
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
                .join(format!("waiver-removals-{}", self.listen.port())),
        }
    }
}

impl ServeError {
    /// Whether the operator must fix something before starting again (a
    /// database with a newer schema): the command exits 64 then.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::State(_))
            || matches!(self, Self::Store(e) if e.is_config())
    }
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configured inventory is invalid.
    #[error("inventory: {0}")]
    Inventory(#[from] crate::fleet::FleetError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The file of waiver removals cannot be used.
    #[error("aggregator.state_dir: cannot use the file of waiver removals {0} (set state_dir in [aggregator] to a directory only this aggregator writes)")]
    State(#[from] crate::service::LogError),
    /// Cannot bind or serve.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store and rebuilds the in-memory fleet from it (see
/// [`Service::restore`]): every node silent until it reports again.
///
/// # Errors
/// Store errors, invalid inventory.
pub fn build_state(
    cfg: &AggregatorConfig,
) -> Result<(AppState, std::sync::mpsc::Receiver<PendingReport>), ServeError> {
    let log = RemovalLog::open(&cfg.removals_file(), crate::clock::wall())?;
    if log.loaded() > 0 {
        tracing::info!(file = %log.path().display(), removals = log.loaded(), "waiver removals acknowledged before the restart, kept out of force");
    }
    let store = Store::open(&cfg.database)?;
    for role in cfg.auth.closed_roles() {
        tracing::warn!(
            %role,
            "no credential has the {role} role: its requests are refused (writes are open only while no credential of any kind is configured)"
        );
    }
    let fleet = Fleet::new(cfg.fleet.clone(), SystemTime::now());
    let metrics = Metrics::new();
    let (service, rx) = Service::restore_with_log(
        store,
        fleet,
        &cfg.inventory,
        &cfg.scopes,
        metrics.clone(),
        Some(log),
    )
    .map_err(|e| match e {
        RestoreError::Store(e) => ServeError::Store(e),
        RestoreError::Inventory(e) => ServeError::Inventory(e),
    })?;
    service.reload_leases()?;
    let state = AppState::new(Shared {
        service,
        auth: Arc::new(cfg.auth.clone()),
        metrics,
        scopes: Arc::new(cfg.scopes.clone()),
        answers: Arc::default(),
    });
    Ok((state, rx))
}

/// Runs the service until `shutdown` resolves. `on_ready` is called once the
/// socket is bound.
///
/// # Errors
/// Store, inventory or listen errors.
pub async fn run(
    cfg: AggregatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // Opening the store blocks (and PostgreSQL's client runs its own
    // runtime, which cannot start inside this one).
    let built = cfg.clone();
    let (state, rx) = tokio::task::spawn_blocking(move || build_state(&built))
        .await
        .expect("building the state does not panic")?;
    let tls = cfg
        .tls
        .clone()
        .map(|t| ServerTls::load(t, state.metrics.clone()).map(Arc::new))
        .transpose()?;
    let writer = state.service.spawn_report_writer(rx);
    if let Some(pg) = state.service.shared_store() {
        // Detached: it only reads and applies, and ends with the process.
        drop(crate::replicas::spawn_follower(state.service.clone(), pg));
    }
    let sweeper = tokio::spawn(state.service.clone().sweep());
    let lease_sweeper = tokio::spawn(state.service.clone().sweep_leases());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: cfg.listen,
        source,
    })?;
    tracing::info!(%addr, database = %cfg.database, tls = tls.is_some(), "aggregator listening");
    on_ready(addr);
    let metrics = state.metrics.clone();
    let app = router(state);
    let limits = crate::conn::ConnLimits {
        max_per_source: cfg.max_connections_per_source,
        ..crate::conn::ConnLimits::for_this_process()
    };
    let served = match tls {
        Some(tls) => {
            crate::tls::serve(listener, app, tls, limits, &metrics, shutdown).await;
            Ok(())
        }
        None => crate::conn::serve(listener, app, limits, &metrics, shutdown).await,
    };
    sweeper.abort();
    lease_sweeper.abort();
    drop(writer); // the writer ends when the last sender (in the router state) is dropped
    served.map_err(|source| ServeError::Listen { addr, source })
}
