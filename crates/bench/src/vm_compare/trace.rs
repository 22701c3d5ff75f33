//! Where a cable pull's time goes in `vm-compare`: what the host relay
//! saw of the agent's reports (host clock) and what the agent's own debug
//! lines say (guest clock), each reduced to per-stage figures.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The agent's log filter in the guest: warnings, and the debug lines of
/// the watch, the monitor and the pusher that [`guest_stages`] reads.
pub(super) const AGENT_LOG: &str = "warn,preflight_netlink=debug,preflight_agent=debug";

/// What the relay saw, on the host's clock: reports from the guest that
/// name ports as BOND_PORT_DOWN, and every answer back to the guest.
#[derive(Clone, Default)]
pub(super) struct RelayLog(Arc<Mutex<RelayEvents>>);

#[derive(Default)]
struct RelayEvents {
    /// (arrival, subjects of BOND_PORT_DOWN findings in the report).
    reports: Vec<(Instant, Vec<String>)>,
    /// Bytes from the aggregator to the guest (its answers).
    answers: Vec<Instant>,
}

/// Host-clock stages of one pull, ms after the monitor command was sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct HostStages {
    /// A report naming the port BOND_PORT_DOWN reached the relay.
    relay: f64,
    /// The aggregator's answer to it passed the relay back.
    answer: f64,
    /// The gate poll saw the finding.
    gate: f64,
}

impl RelayLog {
    pub(super) fn report(&self, chunk: &[u8]) {
        let subjects = port_down_subjects(chunk);
        if !subjects.is_empty() {
            let mut g = self.0.lock().expect("relay log");
            g.reports.push((Instant::now(), subjects));
        }
    }

    pub(super) fn answer(&self) {
        self.0
            .lock()
            .expect("relay log")
            .answers
            .push(Instant::now());
    }

    pub(super) fn clear(&self) {
        let mut g = self.0.lock().expect("relay log");
        g.reports.clear();
        g.answers.clear();
    }

    /// The stages of the pull of `subject` at `t0` that the gate saw
    /// `gate_ms` later; `None` when no report was seen (cannot happen if
    /// the gate saw it, unless the relay cut the finding across reads).
    pub(super) fn stages(&self, subject: &str, t0: Instant, gate_ms: f64) -> Option<HostStages> {
        let g = self.0.lock().expect("relay log");
        let (at, _) = g
            .reports
            .iter()
            .find(|(at, s)| *at >= t0 && s.iter().any(|x| x == subject))?;
        let answer = g.answers.iter().find(|a| *a >= at)?;
        let ms = |t: &Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
        Some(HostStages {
            relay: ms(at),
            answer: ms(answer),
            gate: gate_ms,
        })
    }
}

/// Subjects of the BOND_PORT_DOWN findings in (part of) a report body.
fn port_down_subjects(chunk: &[u8]) -> Vec<String> {
    const CODE: &str = "\"code\":\"BOND_PORT_DOWN\"";
    const SUBJECT: &str = "\"subject\":\"";
    let text = String::from_utf8_lossy(chunk);
    let mut out = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = rest.find(CODE) {
        rest = &rest[i + CODE.len()..];
        let Some(j) = rest.find(SUBJECT) else { break };
        let tail = &rest[j + SUBJECT.len()..];
        let Some(end) = tail.find('"') else { break };
        out.push(tail[..end].to_owned());
    }
    out
}

fn ms_stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let (m, p99, lo, hi) = crate::stats(v.to_vec());
    format!("median {m:.1} p99 {p99:.1} (min {lo:.1} max {hi:.1})")
}

pub(super) fn print_host_stages(interval: u64, host: &[Option<HostStages>]) {
    let seen: Vec<HostStages> = host.iter().flatten().copied().collect();
    println!(
        "    interval {interval} s, host clock, ms after the monitor command ({} of {} pulls traced at the relay):",
        seen.len(),
        host.len()
    );
    let col = |f: &dyn Fn(&HostStages) -> f64| ms_stats(&seen.iter().map(f).collect::<Vec<_>>());
    println!(
        "      report with the finding at the relay  {}",
        col(&|s| s.relay)
    );
    println!(
        "      aggregator answered it                {}",
        col(&|s| s.answer - s.relay)
    );
    println!(
        "      -> gate poll saw it (after the report) {}",
        col(&|s| s.gate - s.relay)
    );
    println!(
        "      gate poll saw it (end to end)          {}",
        col(&|s| s.gate)
    );
}

/// Guest-clock stages of one carrier loss, ms after the watch read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct GuestStages {
    evaluated: f64,
    push_started: f64,
    answered: f64,
}

/// Seconds of the day of a tracing line's RFC 3339 timestamp, and the rest.
fn stamp(line: &str) -> Option<(f64, &str)> {
    let t = line.find('T')?;
    let z = line[t..].find('Z')? + t;
    let mut secs = 0.0;
    for (k, part) in line[t + 1..z].split(':').enumerate() {
        let v: f64 = part.parse().ok()?;
        secs += v * [3600.0, 60.0, 1.0][k.min(2)];
    }
    Some((secs, &line[z + 1..]))
}

fn field(rest: &str, name: &str) -> Option<u64> {
    let i = rest.find(&format!("{name}="))? + name.len() + 1;
    rest[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// From the agent's debug lines: for each steady link's carrier loss, the
/// first state evaluated after it and the first full report of that state
/// (or a later one) answered by the aggregator.
pub(super) fn guest_stages(log: &str) -> Vec<GuestStages> {
    let mut lost = Vec::new();
    let mut evaluated = Vec::new();
    let mut answered = Vec::new();
    for line in log.lines() {
        let Some((t, rest)) = stamp(line) else {
            continue;
        };
        if rest.contains("steady link lost carrier") {
            lost.push(t);
        } else if rest.contains("state evaluated") {
            if let Some(v) = field(rest, "version") {
                evaluated.push((t, v));
            }
        } else if rest.contains("full report answered") && rest.contains("ok=true") {
            if let (Some(v), Some(rtt)) = (field(rest, "version"), field(rest, "rtt_us")) {
                answered.push((t, v, rtt as f64 / 1e6));
            }
        }
    }
    let mut out = Vec::new();
    for t in lost {
        let Some(&(te, v)) = evaluated.iter().find(|(te, _)| *te >= t) else {
            continue;
        };
        let Some(&(ta, _, rtt)) = answered.iter().find(|(ta, va, _)| *ta >= te && *va >= v) else {
            continue;
        };
        out.push(GuestStages {
            evaluated: (te - t) * 1000.0,
            push_started: (ta - rtt - t) * 1000.0,
            answered: (ta - t) * 1000.0,
        });
    }
    out
}

pub(super) fn print_guest_stages(interval: u64, g: &[GuestStages]) {
    println!(
        "    interval {interval} s, guest clock, ms after the watch read the carrier loss ({} steady-link losses):",
        g.len()
    );
    let col = |f: &dyn Fn(&GuestStages) -> f64| ms_stats(&g.iter().map(f).collect::<Vec<_>>());
    println!("      state evaluated       {}", col(&|s| s.evaluated));
    println!("      report sent           {}", col(&|s| s.push_started));
    println!("      aggregator answered   {}", col(&|s| s.answered));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_down_subjects_are_read_from_a_report_body() {
        let body = br#"{"node":"vm","findings":[{"code":"BOND_PORT_DOWN","severity":"critical","subject":"bond1/eth3","message":"x"},{"code":"LINK_NO_CARRIER","severity":"warning","subject":"eth9"},{"code":"BOND_PORT_DOWN","severity":"critical","subject":"bond2/eth5"}]}"#;
        assert_eq!(port_down_subjects(body), ["bond1/eth3", "bond2/eth5"]);
        assert!(port_down_subjects(b"POST /v1/reports HTTP/1.1\r\n").is_empty());
    }

    #[test]
    fn guest_stages_follow_a_carrier_loss_to_its_answered_report() {
        let log = "\
2026-11-26T02:45:00.100000Z DEBUG preflight_agent: full report answered version=3 rtt_us=4000 ok=true
2026-11-26T02:45:01.000000Z DEBUG preflight_netlink::socket: steady link lost carrier: publishing at once interface=eth3
2026-11-26T02:45:01.002000Z DEBUG preflight_agent::monitor: state evaluated version=4 findings=1
2026-11-26T02:45:01.020000Z DEBUG preflight_agent: full report answered version=4 rtt_us=15000 ok=true
2026-11-26T02:45:02.000000Z DEBUG preflight_netlink::socket: steady link lost carrier: publishing at once interface=eth5
";
        let g = guest_stages(log);
        assert_eq!(g.len(), 1, "the second loss has no evaluation yet: {g:?}");
        assert!((g[0].evaluated - 2.0).abs() < 1e-6, "{g:?}");
        assert!((g[0].push_started - 5.0).abs() < 1e-6, "{g:?}");
        assert!((g[0].answered - 20.0).abs() < 1e-6, "{g:?}");
    }
}
