//! `preflight inspect`: one-shot (or `--watch`) check of this node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use preflight_agent::expectations::Source;
use preflight_model::{Finding, NodeState, Verdict};
use preflight_policy::Evaluator;

use crate::{config, output, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Keep running and print one line per finding change as it happens
    /// (`+` appeared, `-` cleared). Stops on Ctrl-C or SIGTERM with the exit
    /// code of the last verdict.
    #[arg(long)]
    watch: bool,
    /// preflight configuration file (TOML): severities and thresholds.
    #[arg(long, short, value_name = "FILE", env = "PREFLIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Node name shown in the output [default: this host's name].
    #[arg(long)]
    node: Option<String>,
    /// Receive buffer of the netlink notification socket, in bytes (with
    /// --watch). Overruns are recovered by a full re-read; tests use a tiny
    /// buffer to force them.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, hide_short_help = true)]
    netlink_rcvbuf: usize,
    /// The node's os-net-config file: check the running state against it
    /// (DHCP fallback, missing addresses, routes, bond members, MTU, mode).
    /// Default: /etc/os-net-config/config.{yaml,json} when it exists.
    #[arg(long, value_name = "FILE")]
    os_net_config: Option<PathBuf>,
    /// os-net-config mapping file (`interface_mapping: {nic1: em3}`) for nicN
    /// names; without it nicN follow os-net-config's ordering rule.
    #[arg(long, value_name = "FILE", requires = "os_net_config")]
    nic_mapping: Option<PathBuf>,
}

fn exit_for(v: Verdict) -> u8 {
    match v {
        Verdict::Go => EXIT_GO,
        Verdict::NoGo => EXIT_NO_GO,
    }
}

pub async fn run(args: Args) -> u8 {
    let cfg = match config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("preflight: bad configuration: {e}");
            return EXIT_USAGE;
        }
    };
    let node = args.node.clone().unwrap_or(cfg.agent.node);
    let mut evaluator = Evaluator::new(cfg.policy);
    evaluator.set_configured_expectations(cfg.agent.configured_expectations.clone());
    let mut expected = match &args.os_net_config {
        Some(p) => Some(Source::new(p.clone(), args.nic_mapping.clone())),
        None => cfg.agent.expectations,
    };
    if args.watch {
        return watch(&args, &node, evaluator, expected).await;
    }
    let snap = match preflight_netlink::dump().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight: cannot read this node's network state: {e}");
            eprintln!("preflight: could not decide; treat as no-go");
            return EXIT_UNDECIDED;
        }
    };
    let note = expected.as_mut().map(|src| {
        src.refresh(&snap, &mut evaluator);
        expectation_note(src, &evaluator)
    });
    let findings = evaluator.evaluate(&snap, Instant::now(), SystemTime::now());
    let mut state = NodeState::new(node, &snap, findings);
    state.expected_from = expected.as_ref().map(|s| s.path.display().to_string());
    if args.json {
        match serde_json::to_string_pretty(&state) {
            Ok(s) => crate::emit(&format!("{s}\n")),
            Err(e) => {
                eprintln!("preflight: cannot encode JSON: {e}");
                return EXIT_UNDECIDED;
            }
        }
    } else {
        crate::emit(&output::table(&state, note.as_deref()));
    }
    exit_for(state.verdict)
}

fn line(sign: char, f: &Finding, json: bool, node: &str) -> String {
    let now = preflight_model::time::format(SystemTime::now());
    if json {
        serde_json::json!({
            "time": now,
            "node": node,
            "change": if sign == '+' { "appeared" } else { "cleared" },
            "finding": f,
        })
        .to_string()
    } else {
        format!(
            "{now} {sign} {:<8} {:<22} {:<16} {}",
            f.severity.as_str().to_uppercase(),
            f.code,
            f.subject,
            f.message
        )
    }
}

/// One line on what the expected state is and what of it is not checked.
fn expectation_note(src: &Source, ev: &Evaluator) -> String {
    match ev.expectations() {
        Some(e) => {
            let mapped: Vec<String> = e
                .interfaces
                .iter()
                .filter_map(|i| i.written_as.as_ref().map(|w| format!("{w}={}", i.name)))
                .collect();
            format!(
                "expected state: {} ({} interfaces{}{})",
                src.path.display(),
                e.interfaces.len(),
                if mapped.is_empty() {
                    String::new()
                } else {
                    format!("; {}", mapped.join(" "))
                },
                if e.unsupported.is_empty() {
                    String::new()
                } else {
                    format!("; not checked: {}", e.unsupported.join(", "))
                }
            )
        }
        None => format!(
            "expected state: {} could not be read (see EXPECTATIONS_INVALID)",
            src.path.display()
        ),
    }
}

async fn watch(
    args: &Args,
    node: &str,
    mut evaluator: Evaluator,
    mut expected: Option<Source>,
) -> u8 {
    let mut w = match preflight_netlink::watch(preflight_netlink::WatchConfig {
        receive_buffer: args.netlink_rcvbuf,
        ..preflight_netlink::WatchConfig::default()
    })
    .await
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("preflight: cannot watch this node's network state: {e}");
            return EXIT_UNDECIDED;
        }
    };
    let mut shown: BTreeMap<(String, String), Finding> = BTreeMap::new();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight: cannot install SIGTERM handler: {e}");
            return EXIT_UNDECIDED;
        }
    };
    let mut first = true;
    loop {
        let snap = w.snapshots.borrow_and_update().clone();
        if let Some(src) = expected.as_mut() {
            if src.refresh(&snap, &mut evaluator) && !args.json {
                crate::emit(&format!("{}\n", expectation_note(src, &evaluator)));
            }
        }
        let findings = evaluator.evaluate(&snap, Instant::now(), SystemTime::now());
        let verdict = Verdict::from_findings(&findings);
        let current: BTreeMap<(String, String), Finding> = findings
            .into_iter()
            .map(|f| ((f.code.clone(), f.subject.clone()), f))
            .collect();
        let mut out = String::new();
        for (k, f) in &current {
            if shown.get(k).is_none_or(|old| old.severity != f.severity) {
                out.push_str(&line('+', f, args.json, node));
                out.push('\n');
            }
        }
        for (k, f) in &shown {
            if !current.contains_key(k) {
                out.push_str(&line('-', f, args.json, node));
                out.push('\n');
            }
        }
        if first && !args.json {
            out.insert_str(
                0,
                &format!(
                    "watching {node}: {} ({} findings)\n",
                    verdict.as_str().to_uppercase(),
                    current.len()
                ),
            );
            first = false;
        }
        if !out.is_empty() {
            crate::emit(&out);
        }
        shown = current;
        let tick = evaluator.tick_interval();
        let needs_tick = evaluator.needs_tick();
        tokio::select! {
            r = w.snapshots.changed() => {
                if r.is_err() {
                    // The watch task ended: report why and stop, fail-closed.
                    let why = match (&mut w.task).await {
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(())) => "watch ended".into(),
                        Err(e) => e.to_string(),
                    };
                    eprintln!("preflight: lost the netlink watch: {why}");
                    return EXIT_UNDECIDED;
                }
            }
            () = tokio::time::sleep(tick), if needs_tick => {}
            _ = tokio::signal::ctrl_c() => return exit_for(verdict),
            _ = sigterm.recv() => return exit_for(verdict),
        }
    }
}
