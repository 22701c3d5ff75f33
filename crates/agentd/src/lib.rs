//! The agent daemon's process glue, shared by the small `preflight-agent`
//! binary and `preflight agent`: reading the agent's part of the
//! configuration file, logging, systemd notification, the shutdown signal
//! and running `preflight_agent::run` with the exit codes of the CLI. It
//! depends on nothing the aggregator or the operator commands need, so the
//! binary built from it holds only the agent's code.

pub mod config;
pub mod sdnotify;

pub use config::BadConfig;

/// Exit code: the daemon stopped cleanly.
pub const EXIT_OK: u8 = 0;
/// Exit code: the daemon could not run (fail-closed).
pub const EXIT_UNDECIDED: u8 = 2;
/// Exit code: bad command line or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Logs to stderr, filtered by `PREFLIGHT_LOG` (default `info`); in
/// colour only on a terminal and without `NO_COLOR` (the journal and files
/// get plain text).
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("PREFLIGHT_LOG").ok().as_deref());
    // The builder's own level filter is INFO unless told otherwise; the
    // `Targets` layer below decides, so it must let everything through.
    tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .finish()
        .with(filter)
        .init();
}

/// Whether log lines get colour codes: on a terminal, unless `NO_COLOR`
/// is set to anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The filter `PREFLIGHT_LOG` asks for: a default level and/or
/// `target=level` pairs, comma-separated (`debug`,
/// `warn,preflight_agent=debug`); unset, empty or unreadable: `info`.
/// Targets only, not tracing's env-filter syntax with span and field
/// matchers: that one links a regex engine (about 230 KB of code, a good
/// part of it paged in) into every agent for a debugging aid.
fn log_filter(var: Option<&str>) -> tracing_subscriber::filter::Targets {
    var.filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    sdnotify::stopping();
}

/// Runs the agent daemon until SIGTERM or Ctrl-C; returns the exit code.
pub async fn serve(agent: preflight_agent::AgentConfig) -> u8 {
    // The node name a report goes out under must be valid; the host name
    // may not be (`(none)` in a bare VM).
    if let Err(e) = preflight_model::names::check_node_name(&agent.node) {
        eprintln!("preflight agent: {e}; set `node` in the [agent] section of the configuration");
        return EXIT_USAGE;
    }
    if agent.aggregators.is_empty() {
        tracing::warn!("no [agent] aggregators configured: serving /metrics and /v1/report only");
    }
    match preflight_agent::run(agent, shutdown_signal(), |addr| {
        if let Some(a) = addr {
            tracing::info!(%a, "agent listening");
        }
        sdnotify::ready();
    })
    .await
    {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("preflight agent: {e}");
            EXIT_UNDECIDED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{colour, log_filter};
    use std::ffi::OsStr;
    use tracing::Level;

    /// Issue 32: colour codes only on a terminal, and never with NO_COLOR.
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a pipe or the journal");
    }

    #[test]
    fn log_filter_reads_levels_and_targets() {
        let f = log_filter(None);
        assert!(f.would_enable("preflight_agent", &Level::INFO));
        assert!(!f.would_enable("preflight_agent", &Level::DEBUG));
        let f = log_filter(Some("debug"));
        assert!(f.would_enable("hyper", &Level::DEBUG));
        let f = log_filter(Some("warn,preflight_agent=debug"));
        assert!(f.would_enable("preflight_agent::monitor", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::WARN));
        // Unreadable or empty: the default, not silence.
        for v in ["", "  ", "preflight_agent=loud"] {
            let f = log_filter(Some(v));
            assert!(f.would_enable("x", &Level::INFO), "{v:?}");
            assert!(!f.would_enable("x", &Level::DEBUG), "{v:?}");
        }
    }
}
