//! `preflight gate`: for pipelines. Exit 0 go, 1 no-go (blockers printed),
//! 2 could not decide, 64 a question the aggregator refuses. Fail-closed:
//! anything that is not a well-formed go is not go.

use crate::output::escape as esc;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use preflight_client::{Answered, GateResult};
use preflight_model::report::GateAnswer;
use preflight_model::Verdict;

use super::{parse_duration, ServerArgs, TokenArgs};
use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Label selector: `role=compute` or `role=compute,rack=r1`; all nodes when omitted.
    #[arg(long, default_value = "")]
    scope: String,
    /// Keep asking until the answer is go or --timeout passes.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// With --wait: time between questions.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Print the aggregator's answer as JSON.
    #[arg(long)]
    json: bool,
}

fn human(a: &GateAnswer) -> String {
    let mut o = String::new();
    let scope = if a.scope.is_empty() {
        "all nodes".to_string()
    } else {
        esc(&a.scope)
    };
    let _ = writeln!(
        o,
        "{}: {scope} ({} node{}: {} ready, {} blocked)",
        a.verdict.as_str().to_uppercase(),
        a.nodes,
        if a.nodes == 1 { "" } else { "s" },
        a.ready.len(),
        a.blocked.len()
    );
    for b in &a.blockers {
        let _ = writeln!(
            o,
            "  {:<14} {:<22} {:<18} {}",
            esc(&b.node),
            b.code,
            esc(&b.subject),
            esc(&b.message)
        );
    }
    for w in &a.waived {
        let _ = writeln!(
            o,
            "  waived #{} on {} ({} {}) by {} until {}: {}",
            w.id,
            esc(&w.node),
            esc(w.code.as_deref().unwrap_or("any code")),
            esc(w.subject.as_deref().unwrap_or("any subject")),
            esc(&w.author),
            preflight_model::time::format(w.expires_at),
            esc(&w.reason)
        );
    }
    if !a.ready.is_empty() && a.verdict == Verdict::NoGo {
        let _ = writeln!(o, "ready: {}", esc(&a.ready.join(",")));
    }
    o
}

/// Says on stderr when an answer came from a later server, so an operator
/// sees that one replica is down even while the gate keeps answering.
fn note_failover(a: &Answered<GateAnswer>) {
    if !a.skipped.is_empty() {
        eprintln!(
            "preflight gate: answered by {} ({} did not answer: {})",
            a.server,
            a.skipped.len(),
            esc(&a.skipped.join("; "))
        );
    }
}

pub async fn run(args: GateArgs) -> u8 {
    let client = match (args.server.client(), args.token.get()) {
        (Ok(c), Ok(t)) => c.with_token(t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let deadline = Instant::now() + args.timeout;
    let mut last_shown = String::new();
    loop {
        let (code, answer) = match client.gate(&args.scope).await {
            GateResult::Go(a) => (EXIT_GO, Some(a)),
            GateResult::NoGo(a) => (EXIT_NO_GO, Some(a)),
            GateResult::Refused(e) => {
                eprintln!("preflight gate: {}", esc(&e.to_string()));
                return EXIT_USAGE;
            }
            GateResult::Undecided(e) => {
                eprintln!(
                    "preflight gate: could not decide (treat as no-go): {}",
                    esc(&e.to_string())
                );
                (EXIT_UNDECIDED, None)
            }
        };
        if let Some(a) = &answer {
            note_failover(a);
        }
        let answer = answer.map(|a| a.value);
        let finished = code == EXIT_GO || !args.wait || Instant::now() + args.interval > deadline;
        if finished {
            if let Some(a) = &answer {
                if args.json {
                    emit(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(a).expect("answer serializes")
                    ));
                } else {
                    emit(&human(a));
                }
            }
            if args.wait && code != EXIT_GO {
                eprintln!(
                    "preflight gate: still not go after {}",
                    humantime::format_duration(args.timeout)
                );
            }
            return code;
        }
        if let Some(a) = &answer {
            let summary: Vec<String> = a
                .blockers
                .iter()
                .map(|b| format!("{} {} {}", esc(&b.node), b.code, esc(&b.subject)))
                .collect();
            let summary = summary.join("; ");
            if summary != last_shown {
                eprintln!("waiting: {} blocker(s): {summary}", a.blockers.len());
                last_shown = summary;
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}
