//! `preflight plan`: which nodes of a scope may go down for an update now
//! (`--take`: under a maintenance lease). The batch goes to stdout one name
//! a line, for `--limit` or `add_host`; the held nodes and why go to
//! stderr. Exit 0 a batch, 1 none may start now, 2 could not tell, 64 a
//! question the aggregator refuses. Fail-closed: anything that is not a
//! well-formed batch starts nothing.

use std::fmt::Write as _;

use preflight_client::{LeaseTerms, PlanAnswer, PlanQuery, PlanResult};

use super::{parse_duration, ServerArgs, TokenArgs};
use crate::output::escape as esc;
use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

/// The loop a pipeline runs (shown by `--help`).
pub const AFTER_HELP: &str = "\
Exit codes: 0 a batch may start (names on stdout), 1 nothing may start now \
(held nodes and why on stderr), 2 could not tell (aggregator unreachable, an \
answer that does not parse: start nothing), 64 bad usage or a question the \
aggregator refuses (bad selector, budget, a node already leased).

A rolling update, two nodes at a time, at most one per rack. The plan does \
not know which nodes a pipeline has updated: ask with a scope the update \
moves nodes out of (a label the update changes, e.g. os=9.2: the agent's \
labels, or PUT /v1/nodes/NODE for an inventory node), or keep a list and \
stop when the batch holds only nodes already done.

  export PREFLIGHT_SERVER=https://agg:9100 PREFLIGHT_TOKEN=$(cat operator.token)
  while true; do
    batch=$(preflight plan --scope role=compute,os=9.2 --max-unavailable 2 \\
              --per rack:1 --take --for 30m --reason \"os 9.3\" --pipeline update-42)
    rc=$?
    case $rc in
      0) ;;                      # leased: update it
      1) preflight gate --scope role=compute || exit 1   # blocked or overrun: stop
         sleep 30; continue ;;   # the batch before is not back yet
      *) exit $rc ;;            # 2 cannot tell, 64 refused (an empty scope: done)
    esac
    ansible-playbook update.yml --limit \"$(echo $batch | tr ' ' ,)\" || exit 1
    # End the lease: the batch has maintenance_grace to be back and go, and
    # counts against --max-unavailable until it is; one that is not back by
    # then is MAINTENANCE_OVERRUN and the gate below stops the loop.
    for id in $(preflight maintenance list --json |
                jq -r '.[] | select(.pipeline==\"update-42\") | .id'); do
      preflight maintenance end \"$id\" || exit $?
    done
    preflight gate --scope role=compute --wait --timeout 20m || exit 1
  done

A node that does not come back within its lease plus the aggregator's \
maintenance_grace is MAINTENANCE_OVERRUN (named by every gate answer, with \
its last findings): the loop stops there. --max-unavailable 1 without --per \
is kured's one-node lock.";

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Label selector: `role=compute`; all nodes when omitted.
    #[arg(long, default_value = "")]
    scope: String,
    /// How many nodes of the scope may be down at once, leases included:
    /// `N` or `P%` [aggregator's default: 1].
    #[arg(long, value_name = "N|P%")]
    max_unavailable: Option<String>,
    /// At most K nodes of one failure domain (value of LABEL) down at once.
    #[arg(long, value_name = "LABEL:K")]
    per: Option<String>,
    /// Take the batch under one maintenance lease (operator token).
    #[arg(long, requires_all = ["duration", "reason", "pipeline"])]
    take: bool,
    /// With --take: how long the lease lasts (30m).
    #[arg(long = "for", value_name = "DURATION", requires = "take")]
    duration: Option<String>,
    /// With --take: why (in the audit log and the lease).
    #[arg(long, requires = "take")]
    reason: Option<String>,
    /// With --take: the pipeline taking the lease.
    #[arg(long, requires = "take")]
    pipeline: Option<String>,
    /// Print the aggregator's answer as JSON on stdout instead of the names.
    #[arg(long)]
    json: bool,
}

/// The held nodes and the lease, for people (stderr).
fn held(a: &PlanAnswer) -> String {
    let mut o = String::new();
    if let Some(l) = &a.lease {
        let _ = writeln!(
            o,
            "leased #{} ({} node{}) to {} until {}",
            l.id,
            l.nodes.len(),
            if l.nodes.len() == 1 { "" } else { "s" },
            esc(&l.pipeline),
            preflight_model::time::format(l.expires_at)
        );
    }
    let _ = writeln!(
        o,
        "{} of {} node{} may go ({} out for maintenance, at most {} at once)",
        a.batch.len(),
        a.members,
        if a.members == 1 { "" } else { "s" },
        a.unavailable.len(),
        a.max_unavailable
    );
    for h in &a.held {
        let _ = writeln!(
            o,
            "  held {:<20} {:<15} {}",
            esc(&h.node),
            esc(&h.reason),
            esc(&h.detail)
        );
    }
    o
}

pub async fn run(args: PlanArgs) -> u8 {
    let client = match (args.server.client(), args.token.get()) {
        (Ok(c), Ok(t)) => c.with_token(t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let query = PlanQuery {
        scope: args.scope,
        max_unavailable: args.max_unavailable,
        per: args.per,
    };
    let result = if args.take {
        let (Some(duration), Some(reason), Some(pipeline)) =
            (args.duration, args.reason, args.pipeline)
        else {
            eprintln!("preflight plan: --take needs --for, --reason and --pipeline");
            return EXIT_USAGE;
        };
        if let Err(e) = parse_duration(&duration) {
            eprintln!("preflight plan: --for {}", esc(&e));
            return EXIT_USAGE;
        }
        let terms = LeaseTerms {
            duration,
            reason,
            pipeline,
        };
        client.take_plan(&query, &terms).await
    } else {
        client.plan(&query).await
    };
    let (code, answered) = match result {
        PlanResult::Batch(a) => (EXIT_GO, a),
        PlanResult::Empty(a) => (EXIT_NO_GO, a),
        PlanResult::Refused(e) => {
            eprintln!("preflight plan: {}", esc(&e.to_string()));
            return EXIT_USAGE;
        }
        PlanResult::Undecided(e) => {
            eprintln!(
                "preflight plan: could not tell (start nothing): {}",
                esc(&e.to_string())
            );
            return EXIT_UNDECIDED;
        }
    };
    if !answered.skipped.is_empty() {
        eprintln!(
            "preflight plan: answered by {} ({} did not answer: {})",
            answered.server,
            answered.skipped.len(),
            esc(&answered.skipped.join("; "))
        );
    }
    let a = answered.value;
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&a).expect("a plan serializes")
        ));
    } else {
        let names: String = a.batch.iter().map(|n| format!("{}\n", esc(n))).collect();
        emit(&names);
    }
    eprint!("{}", held(&a));
    code
}
