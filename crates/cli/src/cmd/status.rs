//! `preflight status`: every node's gate status and first blocker. Exit 0
//! when every node is go, 1 otherwise, 2 when no aggregator answered.

use crate::output::escape as esc;
use std::fmt::Write as _;

use super::{ServerArgs, TokenArgs};
use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED};

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> u8 {
    let client = match (args.server.client(), args.token.get()) {
        (Ok(c), Ok(t)) => c.with_token(t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let nodes = match client.nodes().await {
        Ok(n) => n.value,
        Err(e) => {
            eprintln!("preflight status: {}", esc(&e.to_string()));
            return EXIT_UNDECIDED;
        }
    };
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&nodes).expect("serializes")
        ));
    } else {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<24} {:<9} {:<28} {:>8} {:<20} FIRST BLOCKER",
            "NODE", "STATUS", "LABELS", "FINDINGS", "LAST REPORT"
        );
        for n in &nodes {
            let labels: Vec<String> = n
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect();
            let _ = writeln!(
                o,
                "{:<24} {:<9} {:<28} {:>8} {:<20} {}",
                esc(&n.node),
                esc(&n.status),
                labels.join(","),
                n.findings.len(),
                n.last_report
                    .map_or_else(|| "never".into(), preflight_model::time::format),
                n.blockers.first().map_or_else(String::new, |b| format!(
                    "{} {}",
                    b.code,
                    esc(&b.subject)
                ))
            );
        }
        emit(&o);
    }
    if nodes.iter().all(|n| n.status == "go") && !nodes.is_empty() {
        EXIT_GO
    } else {
        EXIT_NO_GO
    }
}
