//! Wires the store, the fleet, the background tasks and the router into a
//! running service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::api::router;
use crate::auth::Auth;
use crate::fleet::{Fleet, FleetConfig, Selector};
use crate::metrics::Metrics;
use crate::service::{RestoreError, Service};
use crate::state::{AppState, Shared};
use crate::store::{Database, PendingReport, Store, StoreError};
use crate::tls::{ServerTls, TlsSettings};

/// Validated aggregator settings.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The store: a SQLite file or a PostgreSQL database.
    pub database: Database,
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

impl ServeError {
    /// Whether the operator must fix something before starting again (a
    /// database with a newer schema): the command exits 64 then.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Tls(_)) || matches!(self, Self::Store(e) if e.is_config())
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
    let store = Store::open(&cfg.database)?;
    for role in cfg.auth.closed_roles() {
        tracing::warn!(
            %role,
            "no credential has the {role} role: its requests are refused (writes are open only while no credential of any kind is configured)"
        );
    }
    let fleet = Fleet::new(cfg.fleet.clone(), SystemTime::now());
    let metrics = Metrics::new();
    let (service, rx) =
        Service::restore(store, fleet, &cfg.inventory, &cfg.scopes, metrics.clone()).map_err(
            |e| match e {
                RestoreError::Store(e) => ServeError::Store(e),
                RestoreError::Inventory(e) => ServeError::Inventory(e),
            },
        )?;
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
    drop(writer); // the writer ends when the last sender (in the router state) is dropped
    served.map_err(|source| ServeError::Listen { addr, source })
}
