//! The load bench's gate prober: a pipeline asking the gate while the
//! simulated agents report, on a real-time thread of its own, and the
//! aggregator's own account of those questions from its metrics.

use std::process::Command;
use std::time::{Duration, Instant};

use preflight_client::{HttpClient, TlsOptions};
use preflight_model::report::GateAnswer;

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
    pub(super) all: Vec<f64>,
    pub(super) short: Vec<f64>,
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

/// Asks the gate every 50 ms until `stop`, over one keep-alive connection,
/// on a current-thread runtime of this thread's own.
pub(super) fn probe_gate(base: &str, tls: Option<&TlsOptions>, stop: Instant) -> GateTimes {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the prober's runtime");
    realtime_priority();
    rt.block_on(async {
        let http = match tls {
            Some(tls) => HttpClient::with_tls(Duration::from_secs(10), tls).expect("the bench CA"),
            None => HttpClient::new(Duration::from_secs(10)),
        };
        let mut t = GateTimes::default();
        let mut i = 0usize;
        while Instant::now() < stop {
            let query = match i % 4 {
                0 | 2 => "scope=rack%3Dr07",
                1 => "scope=",
                _ => "scope=&ready=false",
            };
            let q = Instant::now();
            let r = http.get(&format!("{base}/v1/gate?{query}")).await;
            let ms = q.elapsed().as_secs_f64() * 1000.0;
            if let Ok((status, body)) = r {
                if status.as_u16() == 200 || status.as_u16() == 503 {
                    let parsed = serde_json::from_slice::<GateAnswer>(&body).is_ok();
                    let parsed_ms = q.elapsed().as_secs_f64() * 1000.0;
                    let (times, parsed_times) = match i % 4 {
                        0 | 2 => (&mut t.rack, Some(&mut t.rack_parsed)),
                        1 => (&mut t.all, Some(&mut t.all_parsed)),
                        _ => (&mut t.short, None),
                    };
                    times.push(ms);
                    if let (true, Some(p)) = (parsed, parsed_times) {
                        p.push(parsed_ms);
                    }
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t
    })
}
