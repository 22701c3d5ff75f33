//! `preflight probe TARGET...`: the agent's reachability probes, run once by
//! hand or by a pipeline: "does this node reach its gateway through bond0,
//! right now?" Exit 0 when every target answered, 1 when one did not, 2 when
//! a probe could not even be sent (no permission, no socket), 64 bad usage.
//! `dhcp@IFACE` asks instead whether any DHCP server offers an address on
//! an interface (one DHCPDISCOVER, never a REQUEST): exit 0 an offer came,
//! 1 none came.

use std::fmt::Write as _;
use std::time::Duration;

use preflight_model::DhcpProbeResult;
use preflight_probe::{probe_once, ProbeError, Target};

use crate::output::escape;
use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED};

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The targets (see `--help`).
    #[arg(
        required = true,
        value_name = "TARGET",
        value_parser = parse_target,
        help = "What to probe: icmp:ADDRESS[@DEVICE], tcp:ADDRESS:PORT[@DEVICE], arp:IPV4@DEVICE, path:IPV4@MEMBER[/VLAN] (one bond member alone, as the member path check sends it) or dhcp@DEVICE"
    )]
    targets: Vec<CliTarget>,
    /// Probes per target; a target counts as reachable when every one is
    /// answered. A dhcp target always sends exactly one DHCPDISCOVER.
    #[arg(long, short = 'c', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    count: u16,
    /// Time between probes of one target.
    #[arg(long, default_value = "200ms", value_parser = crate::cmd::parse_duration)]
    interval: Duration,
    /// A probe without answer within this is lost [default: 1s; 5s for dhcp].
    #[arg(long, value_parser = crate::cmd::parse_duration)]
    timeout: Option<Duration>,
    /// Print JSON (one object per target).
    #[arg(long)]
    json: bool,
}

/// A target of this command: a reachability probe, or a DHCP probe.
#[derive(Debug, Clone)]
enum CliTarget {
    Reach(Target),
    Dhcp(String),
}

fn parse_target(s: &str) -> Result<CliTarget, String> {
    if let Some(dev) = s.strip_prefix("dhcp") {
        return match dev.strip_prefix('@') {
            Some(d) if preflight_probe::dhcp::valid_device(d) => {
                Ok(CliTarget::Dhcp(d.to_owned()))
            }
            _ => Err(format!(
                "probe target `{s}`: expected dhcp@DEVICE (an interface name: 1 to 15 characters, no `/`, `:` or white space)"
            )),
        };
    }
    s.parse::<Target>()
        .map(CliTarget::Reach)
        .map_err(|e| e.to_string())
}

/// One reachability target's results.
struct Reach {
    target: Target,
    rtts: Vec<Duration>,
    errors: Vec<ProbeError>,
}

impl Reach {
    fn reachable(&self) -> bool {
        self.errors.is_empty()
    }
    /// Nothing was answered and nothing could be sent: undecided.
    fn undecided(&self) -> bool {
        self.rtts.is_empty() && self.errors.iter().all(|e| e.local)
    }
    fn mean_ms(&self) -> Option<f64> {
        (!self.rtts.is_empty()).then(|| {
            self.rtts.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
                / self.rtts.len() as f64
        })
    }
}

/// One target's results.
enum Outcome {
    Reach(Reach),
    Dhcp(DhcpProbeResult),
}

impl Outcome {
    /// Sent, and not (fully) answered.
    fn failed(&self) -> bool {
        match self {
            Self::Reach(r) => !r.reachable() && !r.undecided(),
            Self::Dhcp(d) => !d.offered && d.error.is_none(),
        }
    }
    /// Could not be sent: this node cannot tell.
    fn undecided(&self) -> bool {
        match self {
            Self::Reach(r) => r.undecided(),
            Self::Dhcp(d) => d.error.is_some(),
        }
    }

    fn json(&self, count: u16) -> serde_json::Value {
        match self {
            Self::Reach(o) => serde_json::json!({
                "target": o.target.to_string(),
                "reachable": o.reachable(),
                "sent": count,
                "answered": o.rtts.len(),
                "rtt_ms": o.mean_ms(),
                "last_error": o.errors.last().map(ToString::to_string),
                "could_not_send": o.undecided(),
            }),
            Self::Dhcp(d) => {
                let mut v = serde_json::json!({
                    "target": format!("dhcp via {}", d.interface),
                    "could_not_send": d.error.is_some(),
                });
                if let (Some(m), Ok(serde_json::Value::Object(r))) =
                    (v.as_object_mut(), serde_json::to_value(d))
                {
                    m.extend(r);
                }
                v
            }
        }
    }

    fn line(&self, count: u16, out: &mut String) {
        match self {
            Self::Reach(o) => {
                let state = if o.reachable() {
                    "ok"
                } else if o.undecided() {
                    "CANNOT PROBE"
                } else {
                    "FAILED"
                };
                let _ = write!(
                    out,
                    "{}: {state}, {}/{count} answered",
                    escape(&o.target.to_string()),
                    o.rtts.len(),
                );
                if let Some(ms) = o.mean_ms() {
                    let _ = write!(out, ", rtt {ms:.2} ms");
                }
                if let Some(e) = o.errors.last() {
                    let _ = write!(out, " ({})", escape(&e.to_string()));
                }
            }
            Self::Dhcp(d) => out.push_str(&dhcp_line(d)),
        }
        out.push('\n');
    }
}

/// One DHCP probe result for people (also used by `preflight inspect`).
pub fn dhcp_line(d: &DhcpProbeResult) -> String {
    let mut out = format!("dhcp via {}: ", escape(&d.interface));
    if let Some(e) = &d.error {
        let _ = write!(out, "CANNOT PROBE ({})", escape(e));
    } else if d.offered {
        let _ = write!(
            out,
            "offer of {} from {}",
            d.address.map_or("-".into(), |a| a.to_string()),
            d.server
                .map_or("a server without id".into(), |a| a.to_string())
        );
        if let Some(ms) = d.rtt_ms {
            let _ = write!(out, ", rtt {ms:.2} ms");
        }
    } else if let Some(why) = &d.invalid_offer {
        let _ = write!(
            out,
            "NO OFFER: no valid DHCP offer ({}; a client would ignore it)",
            escape(why)
        );
    } else {
        out.push_str("NO OFFER: no DHCP server answered");
    }
    out
}

async fn run_target(target: Target, args: (u16, Duration, Duration)) -> Reach {
    let (count, interval, timeout) = args;
    let mut o = Reach {
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
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in args.targets.into_iter().enumerate() {
        let (count, interval) = (args.count, args.interval);
        set.spawn(async move {
            let o = match t {
                CliTarget::Reach(t) => {
                    let timeout = args.timeout.unwrap_or(Duration::from_secs(1));
                    Outcome::Reach(run_target(t, (count, interval, timeout)).await)
                }
                CliTarget::Dhcp(dev) => {
                    let timeout = args
                        .timeout
                        .unwrap_or(preflight_probe::dhcp::DEFAULT_TIMEOUT);
                    Outcome::Dhcp(preflight_probe::dhcp::check(&dev, timeout).await)
                }
            };
            (i, o)
        });
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
        let v: Vec<serde_json::Value> = outcomes.iter().map(|o| o.json(args.count)).collect();
        emit(&(serde_json::to_string_pretty(&v).expect("JSON") + "\n"));
    } else {
        let mut out = String::new();
        for o in &outcomes {
            o.line(args.count, &mut out);
        }
        emit(&out);
    }
    if outcomes.iter().any(Outcome::failed) {
        EXIT_NO_GO
    } else if outcomes.iter().any(Outcome::undecided) {
        EXIT_UNDECIDED
    } else {
        EXIT_GO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_targets_parse_and_bad_ones_say_why() {
        assert!(matches!(parse_target("dhcp@eth1"), Ok(CliTarget::Dhcp(d)) if d == "eth1"));
        for bad in [
            "dhcp",
            "dhcp@",
            "dhcp:eth1",
            "dhcp@a/b",
            "dhcp@0123456789abcdef",
        ] {
            let e = parse_target(bad).expect_err(bad);
            assert!(e.contains("dhcp@DEVICE"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_target("arp:10.0.0.1@eth0"),
            Ok(CliTarget::Reach(_))
        ));
    }

    #[test]
    fn a_dhcp_line_shows_hidden_characters_escaped() {
        let evil = "c\u{202e}0\u{1b}[2J";
        let mut d = DhcpProbeResult {
            interface: evil.into(),
            offered: false,
            invalid_offer: None,
            server: None,
            address: None,
            rtt_ms: None,
            error: Some(format!("no interface {evil}")),
            checked_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let line = dhcp_line(&d);
        crate::output::escape_tests::assert_shown_as_is(&line);
        assert!(line.contains("c\\u{202e}0"), "{line}");
        d.error = None;
        crate::output::escape_tests::assert_shown_as_is(&dhcp_line(&d));
    }

    /// An invalid OFFER is no offer: exit 1, never 0.
    #[test]
    fn an_invalid_offer_is_no_offer() {
        let d = DhcpProbeResult {
            interface: "c0".into(),
            offered: false,
            invalid_offer: Some(
                "an OFFER of 0.0.0.0 from 10.0.0.1, not an address a client can take".into(),
            ),
            server: None,
            address: None,
            rtt_ms: None,
            error: None,
            checked_at: std::time::SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            dhcp_line(&d),
            "dhcp via c0: NO OFFER: no valid DHCP offer (an OFFER of 0.0.0.0 from 10.0.0.1, not an address a client can take; a client would ignore it)"
        );
        let o = Outcome::Dhcp(d);
        assert!(o.failed() && !o.undecided());
    }
}
