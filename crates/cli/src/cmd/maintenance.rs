//! `preflight maintenance list|end`: the maintenance leases a rolling update
//! holds (taken by `preflight plan --take`). A request the aggregator
//! refuses (4xx) exits 64; no answer exits 2.

use std::fmt::Write as _;
use std::time::SystemTime;

use preflight_client::ClientError;

use super::{ServerArgs, TokenArgs};
use crate::output::escape as esc;
use crate::{emit, EXIT_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the leases in force, oldest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a lease now (operator token): its nodes have the aggregator's
    /// maintenance_grace to be back and go, else MAINTENANCE_OVERRUN.
    End {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Lease id (`preflight maintenance list`).
        id: i64,
    },
}

fn failed(e: &ClientError) -> u8 {
    eprintln!("preflight maintenance: {}", esc(&e.to_string()));
    match e {
        ClientError::Refused { .. } => EXIT_USAGE,
        ClientError::NoAnswer(_) => EXIT_UNDECIDED,
    }
}

pub async fn run(args: MaintenanceArgs) -> u8 {
    match args.action {
        Action::List {
            server,
            token,
            json,
        } => {
            let client = match (server.client(), token.get()) {
                (Ok(c), Ok(t)) => c.with_token(t),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            let leases = match client.leases().await {
                Ok(l) => l.value,
                Err(e) => return failed(&e),
            };
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&leases).expect("leases serialize")
                ));
                return EXIT_GO;
            }
            let now = SystemTime::now();
            let mut o = String::new();
            for l in &leases {
                let left = l.expires_at.duration_since(now).map_or_else(
                    |_| "ended".to_owned(),
                    |d| {
                        humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                            .to_string()
                    },
                );
                let _ = writeln!(
                    o,
                    "#{:<5} {:<16} until {} ({left} left) by {}: {}\n       {}",
                    l.id,
                    esc(&l.pipeline),
                    preflight_model::time::format(l.expires_at),
                    esc(&l.author),
                    esc(&l.reason),
                    esc(&l.nodes.join(" "))
                );
            }
            if leases.is_empty() {
                o.push_str("no leases in force\n");
            }
            emit(&o);
            EXIT_GO
        }
        Action::End { server, token, id } => {
            let client = match (server.client(), token.get()) {
                (Ok(c), Ok(t)) => c.with_token(t),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            match client.end_lease(id).await {
                Ok(_) => {
                    emit(&format!("lease #{id} ended\n"));
                    EXIT_GO
                }
                Err(e) => failed(&e),
            }
        }
    }
}
