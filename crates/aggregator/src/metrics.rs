//! Prometheus metrics of the aggregator. Label values are bounded: states,
//! verdicts and reasons are fixed sets; scopes are the configured ones; nodes
//! are the inventory.

use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The aggregator's metrics: a shared handle (every request clones it, so a
/// clone is one reference count, not one per metric family).
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

/// The metric families behind [`Metrics`].
#[derive(Debug)]
pub struct Families {
    /// Held by a scrape while it sets the fleet's gauges and renders them,
    /// so that two scrapes do not interleave.
    pub scrape: std::sync::Mutex<()>,
    /// Registry to render.
    pub registry: Registry,
    /// Nodes by gate state.
    pub nodes: IntGaugeVec,
    /// Per node: 1 when the node blocks the gate.
    pub node_blocked: IntGaugeVec,
    /// Gate verdict per configured scope (1 go, 0 no-go).
    pub scope_go: IntGaugeVec,
    /// Gate requests by verdict.
    pub gate_requests: IntCounterVec,
    /// Time a gate request spent in the aggregator once read: waiting for
    /// the fleet's lock and rendering (or finding the kept answer).
    pub gate_seconds: Histogram,
    /// Reports accepted by kind.
    pub reports: IntCounterVec,
    /// Reports rejected by reason.
    pub reports_rejected: IntCounterVec,
    /// Active waivers.
    pub waivers_active: IntGauge,
    /// Store errors.
    pub store_errors: IntCounter,
    /// 1 when the last call to the store succeeded, 0 when it failed.
    pub store_up: IntGauge,
    /// 1 when acknowledged waiver and inventory changes are on a
    /// synchronous standby (or the store is a SQLite file), 0 when a
    /// failover of the PostgreSQL primary could lose them.
    pub store_synchronous: IntGauge,
    /// Reloads of the TLS certificate files, by result.
    pub tls_reloads: IntCounterVec,
    /// Connections refused or closed before their first request, by
    /// reason ([`crate::admit`]).
    pub connections_refused: IntCounterVec,
    /// Waiver ends (removals, expiries) in force in memory that the store
    /// has not recorded yet.
    pub waiver_ends_unrecorded: IntGauge,
    /// Reloads from a shared store, by what they read, in seconds.
    pub replica_reload: HistogramVec,
    /// How long a reload held the fleet's write lock (only reloads that
    /// found something to change take it).
    pub replica_reload_lock: Histogram,
    /// Nodes under a maintenance lease or back from one within their grace.
    pub nodes_in_maintenance: IntGauge,
    /// Nodes blocked by MAINTENANCE_OVERRUN.
    pub maintenance_overruns: IntGauge,
}

/// Reasons a report can be rejected (the complete label set).
pub const REJECT_REASONS: &[&str] = &[
    "bad_request",
    "too_large",
    "unauthorized",
    "forbidden",
    "unknown_node",
    "stale_sequence",
    "sequence_jump",
    "store_error",
];

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Never in practice: names are static and unique.
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let nodes = IntGaugeVec::new(
            Opts::new(
                "preflight_aggregator_nodes",
                "Nodes in the inventory by gate state.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let node_blocked = IntGaugeVec::new(
            Opts::new(
                "preflight_aggregator_node_blocked",
                "1 when the node blocks the gate (no-go, settling, stale or silent), 0 when it is go.",
            ),
            &["node"],
        )
        .expect("valid metric");
        let scope_go = IntGaugeVec::new(
            Opts::new(
                "preflight_aggregator_scope_go",
                "Gate verdict of each configured scope: 1 go, 0 no-go.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        let gate_requests = IntCounterVec::new(
            Opts::new(
                "preflight_aggregator_gate_requests_total",
                "Gate requests answered, by verdict.",
            ),
            &["verdict"],
        )
        .expect("valid metric");
        let reports = IntCounterVec::new(
            Opts::new(
                "preflight_aggregator_reports_received_total",
                "Agent reports accepted, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reports_rejected = IntCounterVec::new(
            Opts::new(
                "preflight_aggregator_reports_rejected_total",
                "Agent reports rejected, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let waivers_active =
            IntGauge::new("preflight_aggregator_waivers_active", "Waivers in force.")
                .expect("valid metric");
        let store_errors = IntCounter::new(
            "preflight_aggregator_store_errors_total",
            "Failed writes or reads of the store.",
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "preflight_aggregator_store_up",
            "1 when the last call to the store (SQLite file or PostgreSQL) succeeded, 0 when it failed: waivers and inventory cannot be changed then; the gate answers from memory.",
        )
        .expect("valid metric");
        store_up.set(1);
        let store_synchronous = IntGauge::new(
            "preflight_aggregator_store_synchronous",
            "1 when every acknowledged waiver, inventory and audit change is on a synchronous PostgreSQL standby before its answer (or the store is a local SQLite file, which has no standby to fail over to); 0 when the primary has no synchronous standby streaming, so a failover can lose an acknowledged waiver removal (the aggregator re-applies the removals it made, until it restarts). Checked at start, every full reload and every /readyz.",
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "preflight_aggregator_tls_reloads_total",
                "Reloads of the TLS certificate, key or client CA after a file changed, by result; on error the previous certificate stays in use.",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["ok", "error"] {
            tls_reloads.with_label_values(&[r]);
        }
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "preflight_aggregator_connections_refused_total",
                "New connections refused (closed at once) because their address holds aggregator.max_connections_per_source connections (`per_source`) or no slot is left (`capacity`), and connections closed before their first request to make room for a new one (`evicted`).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for r in crate::admit::REFUSE_REASONS {
            connections_refused.with_label_values(&[r]);
        }
        let waiver_ends_unrecorded = IntGauge::new(
            "preflight_aggregator_waiver_ends_unrecorded",
            "Waivers removed or expired in memory (no longer in force) whose end the store has not recorded yet; retried every second. Until it is 0, a restart would bring them back.",
        )
        .expect("valid metric");
        let nodes_in_maintenance = IntGauge::new(
            "preflight_aggregator_nodes_in_maintenance",
            "Nodes under a maintenance lease, or whose lease ended and that are not back and go yet within the grace time: out of every scope (they neither block nor count as ready).",
        )
        .expect("valid metric");
        let maintenance_overruns = IntGauge::new(
            "preflight_aggregator_maintenance_overruns",
            "Nodes blocked by MAINTENANCE_OVERRUN: their lease ended and they were not back and go within the grace time.",
        )
        .expect("valid metric");
        // 1 ms .. 16 s: a reload of 100,000 nodes takes a fraction of a second.
        let buckets = prometheus::exponential_buckets(0.001, 4.0, 8).expect("valid buckets");
        let replica_reload = HistogramVec::new(
            HistogramOpts::new(
                "preflight_aggregator_replica_reload_seconds",
                "Reloads of inventory and waivers from the shared PostgreSQL (changes made through other replicas), by scope: `all` (inventory and waivers) or `waivers`.",
            )
            .buckets(buckets.clone()),
            &["scope"],
        )
        .expect("valid metric");
        for s in ["all", "waivers"] {
            replica_reload.with_label_values(&[s]);
        }
        let replica_reload_lock = Histogram::with_opts(
            HistogramOpts::new(
                "preflight_aggregator_replica_reload_lock_seconds",
                "How long a reload from the shared store held the fleet's write lock (reports and gate answers wait meanwhile); a reload that found nothing to change does not take it.",
            )
            .buckets(buckets),
        )
        .expect("valid metric");
        // 0.1 ms .. 1.6 s: a kept answer takes microseconds, a whole fleet
        // of 100,000 nodes rendered anew about a millisecond.
        let gate_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "preflight_aggregator_gate_seconds",
                "Time a gate question spent in the aggregator once its request was read: waiting for the fleet's lock and rendering the answer, or finding it kept. Not the time before (queued on a busy worker) or sending the body.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 15).expect("valid buckets")),
        )
        .expect("valid metric");
        for c in [
            Box::new(nodes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(gate_seconds.clone()),
            Box::new(node_blocked.clone()),
            Box::new(scope_go.clone()),
            Box::new(gate_requests.clone()),
            Box::new(reports.clone()),
            Box::new(reports_rejected.clone()),
            Box::new(waivers_active.clone()),
            Box::new(store_errors.clone()),
            Box::new(store_up.clone()),
            Box::new(store_synchronous.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(connections_refused.clone()),
            Box::new(waiver_ends_unrecorded.clone()),
            Box::new(replica_reload.clone()),
            Box::new(replica_reload_lock.clone()),
            Box::new(nodes_in_maintenance.clone()),
            Box::new(maintenance_overruns.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for v in ["go", "no-go", "error"] {
            gate_requests.with_label_values(&[v]);
        }
        for k in ["full", "heartbeat"] {
            reports.with_label_values(&[k]);
        }
        for r in REJECT_REASONS {
            reports_rejected.with_label_values(&[r]);
        }
        Self(Arc::new(Families {
            scrape: std::sync::Mutex::new(()),
            registry,
            nodes,
            node_blocked,
            scope_go,
            gate_requests,
            gate_seconds,
            reports,
            reports_rejected,
            waivers_active,
            store_errors,
            store_up,
            store_synchronous,
            tls_reloads,
            connections_refused,
            waiver_ends_unrecorded,
            replica_reload,
            replica_reload_lock,
            nodes_in_maintenance,
            maintenance_overruns,
        }))
    }

    /// Text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
