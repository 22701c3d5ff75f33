//! The per-node agent: runs the netlink watch and the policy continuously,
//! keeps its metrics current, serves `/metrics`, `/v1/report` and `/healthz`,
//! and pushes reports to every configured aggregator: a full report on every
//! change (as the monitor coalesces them, not delayed here), a heartbeat
//! otherwise.
//!
//! Each aggregator has its own pusher task reading the latest state from a
//! watch channel, so a slow or dead aggregator delays only its own reports
//! and never the netlink watch. An aggregator given by name gets one pusher
//! per address the name resolves to (`fanout`): every replica behind it.

#![warn(missing_docs)]

pub mod config;
pub mod dhcp;
pub mod expectations;
pub mod fanout;
pub mod lldp;
pub mod member_path;
pub mod metrics;
pub mod monitor;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use preflight_model::report::{AckStatus, Report, ReportAck, ReportBody, MAX_REPORT_BYTES};
use preflight_policy::PolicyConfig;
use tokio::sync::{watch, Notify};

pub use config::RawAgentSection;
pub use metrics::AgentMetrics;
pub use monitor::{MonitorConfig, NodeMonitor, Pipeline, ProbePlan, Versioned};
pub use preflight_client::BaseUrl;
use preflight_client::{AggregatorClient, ClientError};

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node: String,
    /// Labels sent with every full report.
    pub labels: BTreeMap<String, String>,
    /// Aggregators to push to (each independently).
    pub aggregators: Vec<BaseUrl>,
    /// Bearer token for reports.
    pub token: Option<String>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Local HTTP listener (`/metrics`, `/v1/report`, `/healthz`); `None`: off.
    pub listen: Option<SocketAddr>,
    /// Policy.
    pub policy: PolicyConfig,
    /// Netlink full re-read interval.
    pub resync: Duration,
    /// Expected state (os-net-config file), re-read when it changes.
    pub expectations: Option<expectations::Source>,
    /// Expected state from preflight's own configuration (`[expect]`).
    pub configured_expectations: Option<preflight_policy::expect::Expectations>,
    /// Reachability probe targets given in the configuration.
    pub probes: Vec<preflight_probe::Target>,
    /// Also probe the default gateway of each expected interface, through it.
    pub probe_gateways: bool,
    /// With `probe_gateways`, also probe each IPv4 gateway by ARP (needs
    /// CAP_NET_RAW): the gateway must answer ARP even when it drops ICMP.
    pub probe_gateways_arp: bool,
    /// Probe timing and thresholds.
    pub probe: preflight_probe::ProbeConfig,
    /// Where OVSDB is (`agent.ovsdb`); `None`: not read (`off`).
    pub ovsdb: Option<preflight_ovsdb::SocketPaths>,
    /// DHCP probe interval (`agent.dhcp_probe`); `None`: off.
    pub dhcp_probe: Option<Duration>,
    /// Member path check interval (`agent.member_path_check`); `None`: off.
    pub member_path_check: Option<Duration>,
    /// How `https://` aggregators are verified, and the client certificate.
    pub tls: preflight_client::TlsOptions,
}

impl AgentConfig {
    /// The probes this configuration asks for.
    #[must_use]
    pub fn probe_plan(&self) -> ProbePlan {
        ProbePlan {
            configured: self.probes.clone(),
            gateways: self.probe_gateways,
            gateways_arp: self.probe_gateways_arp,
            aggregators: self
                .aggregators
                .iter()
                .filter_map(BaseUrl::socket_addr)
                .collect(),
            config: self.probe.clone(),
        }
    }

    /// The member path check this configuration asks for.
    #[must_use]
    pub fn member_paths(&self) -> Option<member_path::PathCheckConfig> {
        self.member_path_check
            .map(|interval| member_path::PathCheckConfig {
                interval,
                per_try: self.probe.timeout,
                tries: member_path::TRIES,
                probe: self.probe.clone(),
                configured: member_path::configured_addresses(&self.probes),
            })
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The netlink watch failed.
    #[error("netlink: {0}")]
    Netlink(#[from] preflight_netlink::NetlinkError),
    /// A task of the pipeline panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Task(String),
    /// The TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] preflight_client::HttpError),
    /// The local listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// A random id for this agent process (sequence numbers restart with it).
#[must_use]
pub fn new_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_or_else(
        |_| {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{}-{}", std::process::id(), t.as_nanos())
        },
        |s| s.trim().to_owned(),
    )
}

/// Runs the agent until `shutdown` resolves. `on_ready` is called once the
/// first snapshot is taken and the listener (if any) is bound.
///
/// # Errors
/// When the watch cannot start or fails, or the listener cannot bind.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Option<SocketAddr>),
) -> Result<(), AgentError> {
    let mut monitor = NodeMonitor::start(MonitorConfig {
        node: cfg.node.clone(),
        policy: cfg.policy.clone(),
        watch: preflight_netlink::WatchConfig {
            resync_interval: cfg.resync,
            ..preflight_netlink::WatchConfig::default()
        },
        expectations: cfg.expectations.clone(),
        configured_expectations: cfg.configured_expectations.clone(),
        probes: Some(cfg.probe_plan()),
        ovsdb: cfg.ovsdb.clone(),
        dhcp_probe: cfg.dhcp_probe,
        member_paths: cfg.member_paths(),
    })
    .await?;
    let metrics = AgentMetrics::new();
    let rx = monitor.states.clone();
    metrics.update(&rx.borrow().state);
    metrics.update_watch(&monitor.stats);
    metrics.follow_lldp(Arc::clone(&monitor.lldp_stats));
    let metrics_task = tokio::spawn(follow_metrics(
        rx.clone(),
        Arc::clone(&monitor.stats),
        metrics.clone(),
    ));

    let boot_id = new_boot_id();
    let mut pushers = Vec::new();
    let resolver: Arc<dyn fanout::Resolver> = Arc::new(fanout::SystemResolver);
    // TLS files are read once, here: a bad one stops the agent at start.
    // Without https aggregators or [agent.tls] nothing is read (a host
    // without a CA bundle must still push over plain http).
    // Nor is the system's CA store: parsing it kept ~80 KiB of heap and
    // its code resident in an agent that pushes over http (or not at all).
    let timeout = Duration::from_secs(5);
    let template = if cfg.tls != preflight_client::TlsOptions::default()
        || cfg.aggregators.iter().any(BaseUrl::is_tls)
    {
        AggregatorClient::http_only(Vec::new(), timeout).with_tls(&cfg.tls)?
    } else {
        AggregatorClient::http_only(Vec::new(), timeout)
    }
    .with_token(cfg.token.clone());
    for url in &cfg.aggregators {
        // One client per aggregator address: each gets every report (no failover).
        let (cfg, boot_id, rx, metrics) =
            (cfg.clone(), boot_id.clone(), rx.clone(), metrics.clone());
        let template = template.clone();
        let start = move |url: BaseUrl, unreachable: Arc<Notify>| {
            let client = template.for_servers(vec![url]);
            tokio::spawn(push_loop(
                client,
                cfg.clone(),
                boot_id.clone(),
                rx.clone(),
                metrics.clone(),
                unreachable,
            ))
        };
        pushers.push(tokio::spawn(fanout::fan_out(
            url.clone(),
            Arc::clone(&resolver),
            start,
        )));
    }

    let mut bound = None;
    let mut server = None;
    if let Some(addr) = cfg.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Listen { addr, source })?;
        bound = Some(
            listener
                .local_addr()
                .map_err(|source| AgentError::Listen { addr, source })?,
        );
        let app = local_router(LocalState {
            state: rx.clone(),
            metrics: metrics.clone(),
        });
        server = Some(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "agent listener failed");
            }
        }));
    }
    on_ready(bound);
    tracing::info!(node = %cfg.node, aggregators = cfg.aggregators.len(), "agent running");

    let result = tokio::select! {
        r = monitor.finished() => r,
        () = shutdown => Ok(()),
    };
    metrics_task.abort();
    for p in pushers {
        p.abort();
    }
    if let Some(s) = server {
        s.abort();
    }
    result
}

/// Keeps the agent's metrics on the latest state.
async fn follow_metrics(
    mut rx: watch::Receiver<Versioned>,
    stats: Arc<preflight_netlink::WatchStats>,
    metrics: AgentMetrics,
) {
    while rx.changed().await.is_ok() {
        let state = Arc::clone(&rx.borrow_and_update().state);
        metrics.update(&state);
        metrics.update_watch(&stats);
    }
}

/// `d` stretched by a random 0-50 %, so that agents that lost the same
/// aggregator do not all come back in the same millisecond.
fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let salt = nanos ^ std::process::id().wrapping_mul(0x9E37_79B9);
    d + d.mul_f64(f64::from(salt % 1000) / 2000.0)
}

/// Says why an aggregator refused a report for its size: without this the
/// refusal is one error among others while the aggregator shows the node as
/// stale ("stopped reporting"), and the real cause is invisible.
fn too_large(aggregator: &str, report: &Report, e: &ClientError) {
    /// Counts what is written, keeping nothing.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut size = Count(0);
    // The client serialized the same report a moment ago.
    let bytes = serde_json::to_writer(&mut size, report).map_or(0, |()| size.0);
    let findings = match &report.body {
        ReportBody::Full { state, .. } => state.findings.len(),
        ReportBody::Heartbeat { .. } => 0,
    };
    tracing::error!(
        aggregator = %aggregator,
        bytes,
        limit = MAX_REPORT_BYTES,
        findings,
        error = %e,
        "report refused as too large: {bytes} bytes, over the aggregator's limit of {MAX_REPORT_BYTES}; the aggregator shows this node as stale until a report fits (see preflight inspect for what makes it this large)"
    );
}

async fn push_loop(
    client: AggregatorClient,
    cfg: AgentConfig,
    mut boot_id: String,
    mut rx: watch::Receiver<Versioned>,
    metrics: AgentMetrics,
    unreachable: Arc<Notify>,
) {
    let label = client
        .servers()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut seq = 0u64;
    let mut sent_version = 0u64;
    let mut state_seq = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let current = rx.borrow_and_update().clone();
        let full = current.version != sent_version || state_seq == 0;
        seq += 1;
        let body = if full {
            ReportBody::Full {
                labels: cfg.labels.clone(),
                state: Box::new((*current.state).clone()),
            }
        } else {
            ReportBody::Heartbeat { state_seq }
        };
        let report = Report {
            node: cfg.node.clone(),
            boot_id: boot_id.clone(),
            seq,
            body,
        };
        let sent = std::time::Instant::now();
        let answer = client.post_report(&report).await.map(|a| a.value);
        if full {
            // The bench (vm-compare) reads these to split a cable pull's
            // time: netlink -> evaluation -> report answered.
            tracing::debug!(
                version = current.version,
                rtt_us = sent.elapsed().as_micros(),
                ok = answer.is_ok(),
                "full report answered"
            );
        }
        let ok = match answer {
            Ok(ReportAck {
                status: AckStatus::Accepted,
            }) => {
                if full {
                    sent_version = current.version;
                    state_seq = seq;
                }
                true
            }
            Ok(ReportAck {
                status: AckStatus::NeedFull,
            }) => {
                state_seq = 0;
                true
            }
            Err(e @ ClientError::Refused { status, .. }) => {
                let reason = if status == 413 {
                    too_large(&label, &report, &e);
                    "too_large"
                } else {
                    tracing::warn!(aggregator = %label, error = %e, "report rejected");
                    "refused"
                };
                metrics
                    .rejected
                    .with_label_values(&[label.as_str(), reason])
                    .inc();
                if status == 409 {
                    // The aggregator holds a later sequence for this boot id
                    // than ours (a clone, or someone who sent one with our
                    // boot id). Start a new boot id, which resets the
                    // sequence: a jump by any amount could be outrun, and
                    // the aggregator refuses jumps far ahead.
                    boot_id = new_boot_id();
                    seq = 0;
                    state_seq = 0;
                }
                false
            }
            Err(e @ ClientError::NoAnswer(_)) => {
                tracing::warn!(aggregator = %label, error = %e, "cannot push report; retrying");
                // The replica may be gone: check the name again.
                unreachable.notify_one();
                false
            }
        };
        metrics
            .pushes
            .with_label_values(&[label.as_str(), if ok { "ok" } else { "error" }])
            .inc();
        metrics
            .reachable
            .with_label_values(&[label.as_str()])
            .set(i64::from(ok));
        if ok {
            backoff = Duration::from_millis(100);
            if state_seq == 0 {
                continue; // need_full: send it now
            }
            let next_heartbeat = tokio::time::Instant::now() + cfg.heartbeat;
            tokio::select! {
                // No debounce here: the watch's pacer (and the monitor,
                // for its other sources) already turns a burst into one
                // state per window, and a steady link losing carrier into
                // one state at once.
                r = rx.changed() => {
                    if r.is_err() { return; }
                }
                () = tokio::time::sleep_until(next_heartbeat) => {}
            }
        } else {
            // Back off, but a change still goes out as soon as the backoff ends.
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

#[derive(Clone)]
struct LocalState {
    state: watch::Receiver<Versioned>,
    metrics: AgentMetrics,
}

fn local_router(s: LocalState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/v1/report",
            get(|State(s): State<LocalState>| async move { Json((*s.state.borrow().state).clone()) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<LocalState>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
            }),
        )
        .with_state(s)
}

#[cfg(test)]
mod tests;
