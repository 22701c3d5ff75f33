//! Wires the store, the fleet, the background tasks and the router into a
//! running service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::api::{router, AppState, Tokens};
use crate::fleet::{Fleet, FleetConfig, Selector};
use crate::metrics::Metrics;
use crate::store::{PendingReport, Store, StoreError};

/// Validated aggregator settings.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// SQLite file.
    pub database: PathBuf,
    /// Gate settings.
    pub fleet: FleetConfig,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Scopes whose verdict is exported as a metric and shown on the page.
    pub scopes: Vec<Selector>,
    /// Nodes expected from the configuration (added to the stored inventory).
    pub inventory: Vec<(String, BTreeMap<String, String>)>,
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

/// Opens the store and rebuilds the in-memory fleet from it: inventory and
/// waivers as they were, last reports for display, but every node silent
/// until it reports again (fail-closed after a restart).
///
/// # Errors
/// Store errors, invalid inventory.
pub fn build_state(
    cfg: &AggregatorConfig,
) -> Result<(AppState, std::sync::mpsc::Receiver<PendingReport>), ServeError> {
    let mut store = Store::open(&cfg.database)?;
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut fleet = Fleet::new(cfg.fleet.clone(), wall);
    for (name, labels) in &cfg.inventory {
        fleet.upsert_node(name, labels.clone(), now, wall)?;
        store.upsert_node(name, labels, "config", wall)?;
    }
    for (name, labels) in store.nodes()? {
        if !cfg.inventory.iter().any(|(n, _)| *n == name) {
            fleet.upsert_node(&name, labels, now, wall)?;
        }
    }
    for r in store.reports()? {
        fleet.restore_report(&r.node, r.boot_id, r.seq, r.state, r.received_at);
    }
    for w in store.active_waivers(wall)? {
        if fleet.status(&w.node).is_some() {
            let left = w.expires_at.duration_since(wall).unwrap_or_default();
            fleet.add_waiver(w, left, now);
        }
    }
    for s in &cfg.scopes {
        fleet.track_scope(s);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let state = AppState {
        fleet: Arc::new(Mutex::new(fleet)),
        store: Arc::new(Mutex::new(store)),
        reports_tx: tx,
        tokens: Arc::new(cfg.tokens.clone()),
        metrics: Metrics::new(),
        scopes: Arc::new(cfg.scopes.clone()),
    };
    Ok((state, rx))
}

/// Writes reports in batches (latest per node wins) until the channel closes.
pub fn spawn_report_writer(
    state: &AppState,
    rx: std::sync::mpsc::Receiver<PendingReport>,
) -> std::thread::JoinHandle<()> {
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    std::thread::Builder::new()
        .name("report-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch: BTreeMap<String, PendingReport> = BTreeMap::new();
                batch.insert(first.node.clone(), first);
                while let Ok(more) = rx.try_recv() {
                    batch.insert(more.node.clone(), more);
                    if batch.len() >= 2000 {
                        break;
                    }
                }
                let batch: Vec<PendingReport> = batch.into_values().collect();
                let result = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).save_reports(&batch);
                if let Err(e) = result {
                    metrics.store_errors.inc();
                    tracing::error!(error = %e, reports = batch.len(), "cannot persist reports (they are replaced by the next ones)");
                }
            }
        })
        .expect("spawn report writer thread")
}

/// Processes TTL, settle and waiver deadlines as they come due; expired
/// waivers are recorded in the store and the audit log.
pub async fn sweeper(state: AppState) {
    loop {
        let next = state
            .fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_deadline();
        let max = Instant::now() + Duration::from_secs(1);
        tokio::time::sleep_until(next.map_or(max, |n| n.min(max))).await;
        let expired = state
            .fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tick(Instant::now());
        for w in expired {
            let store = state.store.clone();
            let metrics = state.metrics.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let r = store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .end_waiver(&w, "aggregator", "waiver.expire", SystemTime::now());
                if let Err(e) = r {
                    metrics.store_errors.inc();
                    tracing::error!(error = %e, waiver = w.id, "cannot record waiver expiry");
                }
            })
            .await;
        }
    }
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
    let (state, rx) = build_state(&cfg)?;
    let writer = spawn_report_writer(&state, rx);
    let sweeper = tokio::spawn(sweeper(state.clone()));
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
    tracing::info!(%addr, database = %cfg.database.display(), "aggregator listening");
    on_ready(addr);
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    drop(writer); // the writer ends when the last sender (in the router state) is dropped
    served.map_err(|source| ServeError::Listen { addr, source })
}
