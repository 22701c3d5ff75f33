//! What every request handler shares: the [`Service`] (fleet and store), the
//! bearer tokens, the metrics and the configured scopes. The API and the
//! on-call page both depend on this module, never on each other.

use std::sync::Arc;

use crate::fleet::Selector;
use crate::metrics::Metrics;
use crate::service::Service;

/// Bearer tokens; `None` disables the check for that class of request.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Token agents send with reports.
    pub report: Option<String>,
    /// Token for waivers and inventory changes.
    pub admin: Option<String>,
}

/// Shared state of the app.
#[derive(Clone)]
pub struct AppState {
    /// The fleet and its store; every change goes through it.
    pub service: Service,
    /// Tokens.
    pub tokens: Arc<Tokens>,
    /// Metrics.
    pub metrics: Metrics,
    /// Scopes whose verdict is exported as a metric and shown on the page.
    pub scopes: Arc<Vec<Selector>>,
}
