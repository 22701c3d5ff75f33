//! `preflight waive add|list|remove`: time-limited waivers. A request the
//! aggregator refuses (4xx) exits 64; no answer exits 2.

use crate::output::escape as esc;
use std::fmt::Write as _;

use preflight_client::ClientError;
use preflight_model::api::WaiverRequest;

use super::{parse_duration, ServerArgs, TokenArgs};
use crate::{emit, EXIT_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct WaiveArgs {
    #[command(subcommand)]
    action: WaiveAction,
}

#[derive(clap::Subcommand)]
enum WaiveAction {
    /// Create a time-limited waiver.
    Add {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Node the waiver applies to.
        #[arg(long)]
        node: String,
        /// Finding code to waive (BOND_PORT_DOWN); all reported findings when omitted.
        /// NODE_SILENT and NODE_STALE are waived only when named.
        #[arg(long)]
        code: Option<String>,
        /// Subject to waive (bond0/eth1); any subject when omitted.
        #[arg(long)]
        subject: Option<String>,
        /// Why (shown on every answer the waiver changes).
        #[arg(long)]
        reason: String,
        /// How long the waiver lasts (2h, 3d); the aggregator refuses one longer
        /// than its `max_waiver` (default 7 days) or shorter than `min_waiver`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Who [default: $USER].
        #[arg(long, env = "USER")]
        author: String,
    },
    /// List waivers in force.
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a waiver now.
    Remove {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Waiver id.
        id: i64,
        /// Who [default: $USER].
        #[arg(long, env = "USER", default_value = "cli")]
        author: String,
    },
}

/// Exit code for a waiver request that did not succeed: the aggregator
/// refusing it (4xx) is a usage error, no answer is undecided.
fn failed(e: &ClientError) -> u8 {
    eprintln!("preflight waive: {}", esc(&e.to_string()));
    match e {
        ClientError::Refused { .. } => EXIT_USAGE,
        ClientError::NoAnswer(_) => EXIT_UNDECIDED,
    }
}

pub async fn run(args: WaiveArgs) -> u8 {
    match args.action {
        WaiveAction::Add {
            server,
            token,
            node,
            code,
            subject,
            reason,
            duration,
            author,
        } => {
            let (Ok(client), Ok(tok)) = (server.client(), token.get()) else {
                return EXIT_USAGE;
            };
            if let Err(e) = parse_duration(&duration) {
                eprintln!("preflight waive: --for {e}");
                return EXIT_USAGE;
            }
            let req = WaiverRequest {
                node,
                code,
                subject,
                reason,
                author,
                expires_at: None,
                duration: Some(duration),
            };
            match client.with_token(tok).add_waiver(&req).await {
                Ok(w) => {
                    let w = w.value;
                    emit(&format!(
                        "waiver #{} on {} until {}\n",
                        w.id,
                        esc(&w.node),
                        preflight_model::time::format(w.expires_at)
                    ));
                    EXIT_GO
                }
                Err(e) => failed(&e),
            }
        }
        WaiveAction::List {
            server,
            token,
            json,
        } => {
            let (Ok(client), Ok(tok)) = (server.client(), token.get()) else {
                return EXIT_USAGE;
            };
            let ws = match client.with_token(tok).waivers().await {
                Ok(ws) => ws.value,
                Err(e) => return failed(&e),
            };
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&ws).expect("serializes")
                ));
            } else {
                let mut o = String::new();
                for w in &ws {
                    let _ = writeln!(
                        o,
                        "#{:<5} {:<20} {:<22} {:<16} until {}  by {}: {}",
                        w.id,
                        esc(&w.node),
                        esc(w.code.as_deref().unwrap_or("(any code)")),
                        esc(w.subject.as_deref().unwrap_or("(any)")),
                        preflight_model::time::format(w.expires_at),
                        esc(&w.author),
                        esc(&w.reason)
                    );
                }
                if ws.is_empty() {
                    o.push_str("no waivers in force\n");
                }
                emit(&o);
            }
            EXIT_GO
        }
        WaiveAction::Remove {
            server,
            token,
            id,
            author,
        } => {
            let (Ok(client), Ok(tok)) = (server.client(), token.get()) else {
                return EXIT_USAGE;
            };
            match client.with_token(tok).remove_waiver(id, &author).await {
                Ok(_) => {
                    emit(&format!("waiver #{id} removed\n"));
                    EXIT_GO
                }
                Err(e) => failed(&e),
            }
        }
    }
}
