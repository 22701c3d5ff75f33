//! `preflight baseline save|compare`: record this node's healthy state before
//! an update, and after it report every difference as a finding (exit 1), so
//! a pipeline stops the rollout on the first node that came back different.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use preflight_model::{sort_findings, LldpNeighbor, NodeState, Verdict};
use preflight_policy::expect::{self, Expectations};
use preflight_policy::Evaluator;

use crate::{config, emit, output, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Save the current state (interfaces, bonds, static addresses, default route, MTUs).
    Save {
        /// Where to write it.
        #[arg(long, short)]
        out: PathBuf,
        /// How long to listen for each bond member's switch over LLDP (kept
        /// in the baseline; ends early once every member was heard; `0s`: none).
        #[arg(long, value_name = "DURATION", default_value = "35s", value_parser = crate::cmd::parse_duration)]
        lldp_wait: Duration,
    },
    /// Compare the current state with a saved baseline: exit 0 same, 1 different, 2 could not decide.
    #[command(
        after_help = "Every difference is a finding: EXPECTED_INTERFACE_MISSING, BOND_MEMBER_MISSING,\n\
EXPECTED_ADDRESS_MISSING, UNEXPECTED_DHCP, DEFAULT_ROUTE_MISSING, MTU_MISMATCH, BOND_MODE_MISMATCH,\n\
LLDP_NEIGHBOR_CHANGED (a bond member on another switch or port);\n\
the default rules (BOND_PORT_DOWN, ...) apply as well."
    )]
    Compare {
        /// A file written by `preflight baseline save`.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// preflight configuration (policy settings).
        #[arg(long, short, value_name = "FILE", env = "PREFLIGHT_CONFIG")]
        config: Option<PathBuf>,
        /// How long to listen for the members' switches when the baseline
        /// has LLDP neighbours (ends early once every member was heard).
        #[arg(long, value_name = "DURATION", default_value = "35s", value_parser = crate::cmd::parse_duration)]
        lldp_wait: Duration,
    },
}

/// The LLDP neighbours a baseline file holds beside its expectations.
#[derive(serde::Deserialize)]
struct BaselineLldp {
    #[serde(default)]
    lldp: Vec<LldpNeighbor>,
}

pub async fn run(args: BaselineArgs) -> u8 {
    let mut snap = match preflight_netlink::dump().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight baseline: cannot read this node's network state: {e}");
            return EXIT_UNDECIDED;
        }
    };
    match args.action {
        Action::Save { out, lldp_wait } => {
            let b = expect::from_snapshot(&snap, &out.display().to_string());
            // The neighbours ride beside the expectations: a reader that
            // does not know them (an older preflight) ignores the key.
            let mut v = serde_json::to_value(&b).expect("baseline serializes");
            let heard = crate::lldp::heard(&snap, lldp_wait).await;
            v["lldp"] = serde_json::to_value(&heard.neighbors).expect("neighbours serialize");
            let text = serde_json::to_string_pretty(&v).expect("baseline serializes");
            match std::fs::write(&out, text + "\n") {
                Ok(()) => {
                    emit(&format!(
                        "baseline of {} interfaces written to {}\n",
                        b.interfaces.len(),
                        out.display()
                    ));
                    EXIT_GO
                }
                Err(e) => {
                    eprintln!("preflight baseline: cannot write {}: {e}", out.display());
                    EXIT_UNDECIDED
                }
            }
        }
        Action::Compare {
            file,
            json,
            config,
            lldp_wait,
        } => {
            let cfg = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("preflight: bad configuration: {e}");
                    return EXIT_USAGE;
                }
            };
            let parsed = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    let e = serde_json::from_str::<Expectations>(&t);
                    let l = serde_json::from_str::<BaselineLldp>(&t);
                    e.and_then(|e| Ok((e, l?.lldp)))
                        .map_err(|e| format!("not a baseline file: {e}"))
                });
            let (baseline, neighbors) = match parsed {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("preflight baseline: {}: {e}", file.display());
                    return EXIT_USAGE;
                }
            };
            let mut ev = Evaluator::new(cfg.policy);
            ev.set_expectations(Some(Expectations {
                source: file.display().to_string(),
                ..baseline
            }));
            if !neighbors.is_empty() {
                snap.lldp = crate::lldp::heard(&snap, lldp_wait).await;
            }
            let now = SystemTime::now();
            let mut findings = ev.evaluate(&snap, Instant::now(), now);
            findings.extend(preflight_policy::lldp::findings(
                preflight_policy::lldp::changed(&snap, &neighbors),
                ev.config(),
                now,
            ));
            sort_findings(&mut findings);
            let mut state = NodeState::new(cfg.agent.node, &snap, findings);
            state.expected_from = Some(file.display().to_string());
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&state).expect("serializes")
                ));
            } else {
                emit(&output::table(
                    &state,
                    Some(&format!("compared with baseline {}", file.display())),
                ));
            }
            if state.verdict == Verdict::Go {
                EXIT_GO
            } else {
                EXIT_NO_GO
            }
        }
    }
}
