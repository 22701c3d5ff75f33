//! `preflight baseline save|compare`: record this node's healthy state before
//! an update, and after it report every difference as a finding (exit 1), so
//! a pipeline stops the rollout on the first node that came back different.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use preflight_model::{NodeState, Verdict};
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
    },
    /// Compare the current state with a saved baseline: exit 0 same, 1 different, 2 could not decide.
    #[command(
        after_help = "Every difference is a finding: EXPECTED_INTERFACE_MISSING, BOND_MEMBER_MISSING,\n\
EXPECTED_ADDRESS_MISSING, UNEXPECTED_DHCP, DEFAULT_ROUTE_MISSING, MTU_MISMATCH, BOND_MODE_MISMATCH;\n\
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
    },
}

pub async fn run(args: BaselineArgs) -> u8 {
    let snap = match preflight_netlink::dump().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight baseline: cannot read this node's network state: {e}");
            return EXIT_UNDECIDED;
        }
    };
    match args.action {
        Action::Save { out } => {
            let b = expect::from_snapshot(&snap, &out.display().to_string());
            let text = serde_json::to_string_pretty(&b).expect("baseline serializes");
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
        Action::Compare { file, json, config } => {
            let cfg = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("preflight: bad configuration: {e}");
                    return EXIT_USAGE;
                }
            };
            let baseline: Expectations = match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_json::from_str(&t).map_err(|e| format!("not a baseline file: {e}"))
                }) {
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
            let findings = ev.evaluate(&snap, Instant::now(), SystemTime::now());
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
