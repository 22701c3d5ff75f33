//! What every request handler shares: the [`Service`] (fleet and store), the
//! credentials, the metrics and the configured scopes. The API and the
//! on-call page both depend on this module, never on each other.

use std::sync::Arc;

use crate::answers::GateCache;
use crate::auth::Auth;
use crate::fleet::Selector;
use crate::metrics::Metrics;
use crate::service::Service;

/// Shared state of the app: one reference count per clone. axum clones the
/// state for every request and every layer that extracts it; with the
/// handles below cloned one by one, that was about ten atomic counts per
/// clone, bounced between the CPUs of 11,000 report requests a second
/// (about 3% of the aggregator's CPU at 100,000 nodes, `perf`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
pub struct Shared {
    /// The fleet and its store; every change goes through it.
    pub service: Service,
    /// Credentials and roles.
    pub auth: Arc<Auth>,
    /// Metrics.
    pub metrics: Metrics,
    /// Scopes whose verdict is exported as a metric and shown on the page.
    pub scopes: Arc<Vec<Selector>>,
    /// Gate answers rendered once per change of their scope.
    pub answers: Arc<GateCache>,
}

impl AppState {
    /// The state over `shared`.
    #[must_use]
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
