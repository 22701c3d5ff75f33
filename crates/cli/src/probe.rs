//! `preflight probe TARGET...`: the agent's reachability probes, run once by
//! hand or by a pipeline: "does this node reach its gateway through bond0,
//! right now?" Exit 0 when every target answered, 1 when one did not, 2 when
//! a probe could not even be sent (no permission, no socket), 64 bad usage.

use std::fmt::Write as _;
use std::time::Duration;

use preflight_probe::{probe_once, ProbeError, Target};

use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED};

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The targets (see `--help`).
    #[arg(
        required = true,
        value_name = "TARGET",
        value_parser = parse_target,
        help = "What to probe: icmp:ADDRESS[@DEVICE], tcp:ADDRESS:PORT[@DEVICE] or arp:IPV4@DEVICE"
    )]
    targets: Vec<Target>,
    /// Probes per target; a target counts as reachable when every one is answered.
    #[arg(long, short = 'c', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    count: u16,
    /// Time between probes of one target.
    #[arg(long, default_value = "200ms", value_parser = crate::cmd::parse_duration)]
    interval: Duration,
    /// A probe without answer within this is lost.
    #[arg(long, default_value = "1s", value_parser = crate::cmd::parse_duration)]
    timeout: Duration,
    /// Print JSON (one object per target).
    #[arg(long)]
    json: bool,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse::<Target>().map_err(|e| e.to_string())
}

/// One target's results.
struct Outcome {
    target: Target,
    rtts: Vec<Duration>,
    errors: Vec<ProbeError>,
}

impl Outcome {
    fn reachable(&self) -> bool {
        self.errors.is_empty()
    }
    /// Nothing was answered and nothing could be sent: undecided.
    fn undecided(&self) -> bool {
        self.rtts.is_empty() && self.errors.iter().all(|e| e.local)
    }
    #[allow(clippy::cast_precision_loss)]
    fn mean_ms(&self) -> Option<f64> {
        (!self.rtts.is_empty()).then(|| {
            self.rtts.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
                / self.rtts.len() as f64
        })
    }
}

async fn run_target(target: Target, args: (u16, Duration, Duration)) -> Outcome {
    let (count, interval, timeout) = args;
    let mut o = Outcome {
        target,
        rtts: Vec::new(),
        errors: Vec::new(),
    };
    for seq in 1..=count {
        if seq > 1 {
            tokio::time::sleep(interval).await;
        }
        match probe_once(&o.target, seq, timeout).await {
            Ok(rtt) => o.rtts.push(rtt),
            Err(e) => o.errors.push(e),
        }
    }
    o
}

pub async fn run(args: ProbeArgs) -> u8 {
    let settings = (args.count, args.interval, args.timeout);
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in args.targets.into_iter().enumerate() {
        set.spawn(async move { (i, run_target(t, settings).await) });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                eprintln!("preflight probe: a probe task failed: {e}");
                return EXIT_UNDECIDED;
            }
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    if args.json {
        let v: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "target": o.target.to_string(),
                    "reachable": o.reachable(),
                    "sent": args.count,
                    "answered": o.rtts.len(),
                    "rtt_ms": o.mean_ms(),
                    "last_error": o.errors.last().map(ToString::to_string),
                    "could_not_send": o.undecided(),
                })
            })
            .collect();
        emit(&(serde_json::to_string_pretty(&v).expect("JSON") + "\n"));
    } else {
        let mut out = String::new();
        for o in &outcomes {
            let state = if o.reachable() {
                "ok"
            } else if o.undecided() {
                "CANNOT PROBE"
            } else {
                "FAILED"
            };
            let _ = write!(
                out,
                "{}: {state}, {}/{} answered",
                o.target,
                o.rtts.len(),
                args.count
            );
            if let Some(ms) = o.mean_ms() {
                let _ = write!(out, ", rtt {ms:.2} ms");
            }
            if let Some(e) = o.errors.last() {
                let _ = write!(out, " ({e})");
            }
            out.push('\n');
        }
        emit(&out);
    }
    if outcomes.iter().any(|o| !o.reachable() && !o.undecided()) {
        EXIT_NO_GO
    } else if outcomes.iter().any(Outcome::undecided) {
        EXIT_UNDECIDED
    } else {
        EXIT_GO
    }
}
