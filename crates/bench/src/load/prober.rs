//! The load bench's gate prober: a pipeline asking the gate while the
//! simulated agents report, on a real-time thread of its own, and the
//! aggregator's own account of those questions from its metrics.
//!
//! Only the asking is real-time. The answers are parsed on another thread
//! at nice 19, timed in that thread's CPU time: parsing a whole-fleet
//! answer at 100,000 nodes takes tens of milliseconds, and a real-time
//! thread doing it took a whole CPU from the aggregator it measures (the
//! scheduler does not move the aggregator's thread off that CPU at once:
//! `perf sched` showed an aggregator worker waiting 26 ms behind the
//! prober's parse). A pipeline parses on its own machine.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use preflight_client::{HttpClient, TlsOptions};
use preflight_model::report::GateAnswer;

/// The rack scope the gate prober asks about, listed in the aggregator's
/// `scopes` (what an operator whose pipelines gate rack by rack
/// configures: its answer is kept up to date with every change).
pub(super) const RACK: &str = "rack=r07";
/// A rack scope of the same size that is not configured: answered from
/// the label index, a walk of its members per change (see
/// `Fleet::scope_members`).
pub(super) const AD_HOC_RACK: &str = "rack=r08";

/// The aggregator's own account of its gate questions
/// (`preflight_aggregator_gate_seconds`): the bucket bounds under which half
/// and 99% of them were answered once read.
pub(super) fn gate_server_line(metrics: &str) -> String {
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("preflight_aggregator_gate_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"}")?;
            Some((le.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect();
    let Some(&(_, total)) = buckets.last() else {
        return "gate time in the aggregator: not in its metrics (a build before they were added)"
            .into();
    };
    let bound = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
    };
    format!(
        "gate time in the aggregator once read (its histogram, {total} questions): p50 <= {} ms, p99 <= {} ms",
        bound(0.5),
        bound(0.99)
    )
}

/// Gate answer times, in milliseconds, by question.
#[derive(Default)]
pub(super) struct GateTimes {
    pub(super) rack: Vec<f64>,
    pub(super) adhoc: Vec<f64>,
    pub(super) all: Vec<f64>,
    pub(super) short: Vec<f64>,
    /// `GET /healthz` on the same connection: the floor of a question
    /// (loopback, HTTP, wake-ups; no fleet work).
    pub(super) floor: Vec<f64>,
    pub(super) rack_parsed: Vec<f64>,
    pub(super) all_parsed: Vec<f64>,
}

/// Makes the calling thread a real-time one (SCHED_FIFO, priority 10, with
/// `chrt`, as root): the prober then runs as soon as an answer arrives
/// instead of waiting for a CPU the load generator holds, so its times are
/// the aggregator's (a pipeline asks from a machine of its own).
fn realtime_priority() {
    let tid = nix::unistd::gettid().to_string();
    match Command::new("chrt").args(["-f", "-p", "10", &tid]).status() {
        Ok(s) if s.success() => {}
        other => eprintln!(
            "  cannot make the gate prober real-time (chrt -f -p 10 {tid}: {other:?}); its times include waiting for a CPU"
        ),
    }
}

/// Which question an answer is for.
#[derive(Clone, Copy)]
enum Asked {
    Rack,
    All,
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Parses answers as `preflight gate` does, at nice 19, and returns the
/// times "received and parsed": the time to the last byte plus the parse's
/// CPU time.
fn parse_answers<B: AsRef<[u8]>>(rx: &mpsc::Receiver<(Asked, f64, B)>) -> (Vec<f64>, Vec<f64>) {
    super::nice_this_thread(19);
    let (mut rack, mut all) = (vec![], vec![]);
    for (asked, ms, body) in rx {
        let before = thread_cpu();
        if serde_json::from_slice::<GateAnswer>(body.as_ref()).is_ok() {
            let parsed_ms = ms + (thread_cpu() - before).as_secs_f64() * 1000.0;
            match asked {
                Asked::Rack => rack.push(parsed_ms),
                Asked::All => all.push(parsed_ms),
            }
        }
    }
    (rack, all)
}

/// Asks the gate every 50 ms until `stop`, over one keep-alive connection,
/// on a current-thread runtime of this thread's own: the rack, the whole
/// fleet, the ad-hoc rack, the whole fleet with `ready=false`, and
/// `/healthz` (the floor), in turn.
pub(super) fn probe_gate(base: &str, tls: Option<&TlsOptions>, stop: Instant) -> GateTimes {
    let (to_parser, parsed) = mpsc::channel();
    let parser = std::thread::spawn(move || parse_answers(&parsed));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the prober's runtime");
    realtime_priority();
    let mut t = rt.block_on(async {
        let http = match tls {
            Some(tls) => HttpClient::with_tls(Duration::from_secs(10), tls).expect("the bench CA"),
            None => HttpClient::new(Duration::from_secs(10)),
        };
        let mut t = GateTimes::default();
        let mut i = 0usize;
        while Instant::now() < stop {
            let path = match i % 5 {
                0 => format!("/v1/gate?scope={}", RACK.replace('=', "%3D")),
                1 => "/v1/gate?scope=".to_owned(),
                2 => format!("/v1/gate?scope={}", AD_HOC_RACK.replace('=', "%3D")),
                3 => "/v1/gate?scope=&ready=false".to_owned(),
                _ => "/healthz".to_owned(),
            };
            let q = Instant::now();
            let r = http.get(&format!("{base}{path}")).await;
            let ms = q.elapsed().as_secs_f64() * 1000.0;
            if let Ok((status, body)) = r {
                if status.as_u16() == 200 || status.as_u16() == 503 {
                    let (times, asked) = match i % 5 {
                        0 => (&mut t.rack, Some(Asked::Rack)),
                        1 => (&mut t.all, Some(Asked::All)),
                        2 => (&mut t.adhoc, None),
                        3 => (&mut t.short, None),
                        _ => (&mut t.floor, None),
                    };
                    times.push(ms);
                    if let Some(asked) = asked {
                        let _ = to_parser.send((asked, ms, body));
                    }
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t
    });
    drop(to_parser);
    (t.rack_parsed, t.all_parsed) = parser.join().expect("the answer parser");
    t
}
