//! What every request handler shares: the [`Service`] (fleet and store), the
//! credentials, the metrics and the configured scopes. The API and the
//! on-call page both depend on this module, never on each other.

use std::sync::Arc;

use crate::answers::GateCache;
use crate::auth::Auth;
use crate::fleet::Selector;
use crate::metrics::Metrics;
use crate::service::Service;

/// Shared state of the app.
#[derive(Clone)]
pub struct AppState {
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
