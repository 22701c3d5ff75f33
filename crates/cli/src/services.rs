//! `preflight agent`, `preflight aggregator` and `preflight up`.

use std::path::PathBuf;

use preflight_client::BaseUrl;

use crate::{config, EXIT_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct ServiceArgs {
    /// Configuration file (TOML; see docs/operations.md).
    #[arg(long, short, value_name = "FILE", env = "PREFLIGHT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct AggregatorArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Start on a SQLite store that is not the one written here (it is
    /// empty, truncated, lost its WAL, or is another store's file), as it
    /// is: its waivers and audit log are gone. Without it such a store is
    /// refused (exit 64).
    #[arg(long)]
    accept_empty_store: bool,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Aggregator address (the gate, the page, /metrics).
    #[arg(long, default_value = config::DEFAULT_AGGREGATOR_LISTEN)]
    listen: std::net::SocketAddr,
    /// Agent address (/metrics, /v1/report).
    #[arg(long, default_value = config::DEFAULT_AGENT_LISTEN)]
    agent_listen: std::net::SocketAddr,
    /// SQLite file for inventory, waivers and the audit log.
    #[arg(long, default_value = "preflight.db")]
    database: PathBuf,
    /// Optional configuration file; its `[policy]` and `[agent]` sections apply.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Start on a store that is not the one written here (emptied,
    /// truncated, lost its WAL), as it is; see `preflight aggregator`.
    #[arg(long)]
    accept_empty_store: bool,
}

pub use preflight_agentd::shutdown_signal;

fn load(path: Option<&std::path::Path>) -> Result<config::Config, u8> {
    config::load(path).map_err(|e| {
        eprintln!("preflight: bad configuration: {e}");
        EXIT_USAGE
    })
}

/// The node name a report goes out under must be valid; the host name may
/// not be (`(none)` in a bare VM).
fn check_node(cfg: &config::Config) -> Result<(), u8> {
    preflight_model::names::check_node_name(&cfg.agent.node).map_err(|e| {
        eprintln!("preflight: {e}; set `node` in the [agent] section of the configuration");
        EXIT_USAGE
    })
}

/// `preflight agent`: the same loader and daemon as `preflight-agent`.
pub async fn agent(args: ServiceArgs) -> u8 {
    // The packaged agent's own loader: `preflight agent` and
    // `preflight-agent` accept and refuse the same files (an
    // `[aggregator]` section is the aggregator's to check).
    match preflight_agentd::config::load(args.config.as_deref()) {
        Ok(cfg) => preflight_agentd::serve(cfg).await,
        Err(e) => {
            eprintln!("preflight: bad configuration: {e}");
            EXIT_USAGE
        }
    }
}

/// Adopts the store as it is when `--accept-empty-store` asks for it.
fn accept_empty(accept: bool, db: &preflight_aggregator::store::Database) -> Result<(), u8> {
    if !accept {
        return Ok(());
    }
    preflight_aggregator::store::Store::accept_empty(db).map_err(|e| {
        eprintln!("preflight: {e}");
        if e.is_config() {
            EXIT_USAGE
        } else {
            EXIT_UNDECIDED
        }
    })
}

pub async fn aggregator(args: AggregatorArgs) -> u8 {
    let cfg = match load(args.service.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = accept_empty(args.accept_empty_store, &cfg.aggregator.database) {
        return code;
    }
    match preflight_aggregator::server::run(cfg.aggregator, shutdown_signal(), |_| {
        crate::sd_notify_ready()
    })
    .await
    {
        Ok(()) => EXIT_GO,
        Err(e) => {
            eprintln!("preflight aggregator: {e}");
            // A database from a newer preflight is a configuration problem:
            // restarting will not help, so say so with the usage code.
            if e.is_config() {
                EXIT_USAGE
            } else {
                EXIT_UNDECIDED
            }
        }
    }
}

pub async fn up(args: UpArgs) -> u8 {
    let mut cfg = match load(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = check_node(&cfg) {
        return code;
    }
    if !args.listen.ip().is_loopback() {
        eprintln!("preflight up: --listen must be a loopback address (up runs without authentication); use `preflight aggregator` with tokens otherwise");
        return EXIT_USAGE;
    }
    cfg.aggregator.listen = args.listen;
    cfg.aggregator.database = preflight_aggregator::store::Database::Sqlite(args.database.clone());
    if let Err(code) = accept_empty(args.accept_empty_store, &cfg.aggregator.database) {
        return code;
    }
    cfg.aggregator.auth = preflight_aggregator::auth::Auth::default();
    cfg.aggregator.tls = None;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_agg = stop_rx.clone();
    let agg = tokio::spawn(preflight_aggregator::server::run(
        cfg.aggregator.clone(),
        async move {
            let _ = stop_agg.wait_for(|s| *s).await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let Ok(addr) = addr_rx.await else {
        return match agg.await {
            Ok(Err(e)) => {
                eprintln!("preflight up: {e}");
                // As `preflight aggregator`: a store from a newer preflight
                // or one that was emptied is not fixed by trying again.
                if e.is_config() {
                    EXIT_USAGE
                } else {
                    EXIT_UNDECIDED
                }
            }
            _ => EXIT_UNDECIDED,
        };
    };
    let base = format!("http://{addr}");
    cfg.agent.aggregators =
        vec![BaseUrl::parse(&base).expect("a bound socket address is a valid URL")];
    cfg.agent.listen = Some(args.agent_listen);
    cfg.agent.token = None;
    let node = cfg.agent.node.clone();
    let mut stop_agent = stop_rx.clone();
    let agent = tokio::spawn(preflight_agent::run(
        cfg.agent,
        async move {
            let _ = stop_agent.wait_for(|s| *s).await;
        },
        move |agent_addr| {
            let agent_addr = agent_addr.map_or_else(|| "-".into(), |a| a.to_string());
            println!(
                "preflight is up: aggregator + local agent for node {node}\n\n  \
                 on-call page   {base}/\n  \
                 gate           {base}/v1/gate      (preflight gate --server {base})\n  \
                 fleet status   preflight status --server {base}\n  \
                 metrics        {base}/metrics  and  http://{agent_addr}/metrics\n  \
                 store          {}\n\n\
                 The gate answers no-go until the node has reported and stayed unchanged for {} (settle time).\n\
                 Ctrl-C stops.",
                args.database.display(),
                humantime::format_duration(cfg.aggregator.fleet.settle)
            );
            crate::sd_notify_ready();
        },
    ));
    tokio::pin!(agg);
    tokio::pin!(agent);
    let code = tokio::select! {
        () = shutdown_signal() => EXIT_GO,
        r = &mut agg => { report("aggregator", r); EXIT_UNDECIDED }
        r = &mut agent => { report("agent", r); EXIT_UNDECIDED }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = (&mut agg).await;
        let _ = (&mut agent).await;
    })
    .await;
    code
}

fn report<E: std::fmt::Display>(what: &str, r: Result<Result<(), E>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => eprintln!("preflight up: {what} stopped"),
        Ok(Err(e)) => eprintln!("preflight up: {what}: {e}"),
        Err(e) => eprintln!("preflight up: {what} failed: {e}"),
    }
}
