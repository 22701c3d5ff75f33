//! Aggregator load: N simulated agents against a real `preflight aggregator`
//! process on loopback. Each node heartbeats every 10 s and 1% of nodes per
//! second send a changed full report; a prober asks the gate meanwhile.
//! The window is measured after one heartbeat period of that load (the
//! warm-up), so that it opens on a fleet whose every node reported within
//! its TTL. The
//! store is a fresh SQLite file, or a fresh database on a PostgreSQL
//! cluster (`Store::Postgres`), per run.
//!
//! [`LoadOptions`]: the reports are sent by 64 workers over shared
//! keep-alive connections, or by one task per simulated agent over a
//! connection of its own (`agent_connections`, as real agents do); plain
//! HTTP or HTTPS (`tls`: a throwaway CA and server certificate made with the
//! `openssl` CLI, verified by every client); and optionally the aggregator
//! pinned to CPU 1 (`taskset -c 1`) and the load generator to CPU 0
//! (`sched_setaffinity`), so that they do not take each other's core.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

mod prober;
mod summary;

use crate::load_env::{
    cpu_ticks, make_certs, nice_this_thread, pin_to, raise_nofile, run_delay_ns, sockets,
    steal_ticks,
};
use prober::{gate_server_line, probe_gate, RACK};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
pub use summary::{growth_per_day, pooled, GateSamples};
use summary::{nodes_line, pctl, reload_line};

use preflight_client::{AggregatorClient, BaseUrl, HttpClient, TlsOptions};
use preflight_model::report::{Report, ReportBody};
use preflight_model::{Finding, NodeState, Severity, Snapshot};

fn rss_kib(pid: u32) -> u64 {
    crate::rss_kib(pid).unwrap_or(0)
}

fn state(node: &str, broken: bool) -> NodeState {
    // A realistic node: the active-backup fixture shape, ~3 KiB of JSON.
    let mut snap = Snapshot::default();
    for (i, name) in ["lo", "eno1", "eno2", "bond0", "vlan20", "br-ex"]
        .iter()
        .enumerate()
    {
        let idx = u32::try_from(i + 1).expect("small");
        snap.interfaces.insert(
            idx,
            preflight_model::Interface {
                index: idx,
                name: (*name).into(),
                admin_up: true,
                carrier: true,
                oper_state: preflight_model::OperState::Up,
                mtu: 9000,
                mac: Some("52:54:00:12:34:56".into()),
                ..Default::default()
            },
        );
    }
    let findings = if broken {
        vec![Finding {
            code: preflight_model::Code::BondPortDown,
            severity: Severity::Critical,
            subject: "bond0/eno2".into(),
            message: "bond0 port eno2 is down (MII status down, 1 link failures)".into(),
            since: SystemTime::now(),
        }]
    } else {
        vec![]
    };
    NodeState::new(node.into(), &snap, findings)
}

pub struct LoadResult {
    pub offered_per_s: f64,
    pub accepted_per_s: f64,
    pub errors: u64,
    /// [`prober::RACK`], a configured scope.
    pub gate_rack_p50_ms: f64,
    pub gate_rack_p99_ms: f64,
    /// [`prober::AD_HOC_RACK`], the same size, not configured.
    pub gate_adhoc_p50_ms: f64,
    pub gate_adhoc_p99_ms: f64,
    pub gate_all_p50_ms: f64,
    pub gate_all_p99_ms: f64,
    /// The whole fleet with `ready=false`.
    pub gate_all_short_p50_ms: f64,
    pub gate_all_short_p99_ms: f64,
    /// `GET /healthz` on the prober's connection: the floor of a question.
    pub floor_p50_ms: f64,
    pub floor_p99_ms: f64,
    /// As the `preflight gate` client sees it: answer received and parsed.
    pub gate_rack_parsed_p99_ms: f64,
    pub gate_all_parsed_p99_ms: f64,
    /// Every answer's time (ms) in the window, by question: a rep's p99
    /// over its ~100 questions of a kind is nearly its largest, so the
    /// summary also pools the reps' questions ([`pooled`]).
    pub gate_ms: GateSamples,
    pub rss_mib: f64,
    /// The aggregator's CPU over the steady window, % of one core.
    pub cpu_pct: f64,
    /// Client connections the aggregator held (sockets it had open),
    /// sampled every 5 s in the steady window: median and minimum.
    pub conns_median: f64,
    pub conns_min: f64,
    pub db_bytes: u64,
    pub full_per_s: f64,
    /// (seconds into the steady window, SQLite file + WAL bytes), every 10 s.
    pub db_samples: Vec<(f64, u64)>,
    /// (seconds into the steady window, aggregator RSS KiB), every 10 s.
    pub rss_samples: Vec<(f64, u64)>,
}

/// How the load is generated and served (see the module comment).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// One connection per simulated agent instead of 64 shared workers.
    pub agent_connections: bool,
    /// HTTPS with a throwaway CA.
    pub tls: bool,
    /// Aggregator on CPU 1, load generator on CPU 0.
    pub pin: bool,
    /// The load generator at nice 19 (the agents it plays run elsewhere).
    pub nice_load: bool,
    /// The aggregator's worker threads (`PREFLIGHT_THREADS`); its own
    /// default when `None`.
    pub threads: Option<usize>,
    /// A steady fleet: this many nodes in a thousand registered broken,
    /// and each full report broken with the same chance, so the blocked
    /// share stays put through the window. `None`: registered healthy and
    /// each full report broken half of the time (the blocked share grows
    /// through the window, towards one half).
    pub broken_per_mille: Option<u64>,
}

/// The aggregator's store for one run.
pub enum Store<'a> {
    /// A SQLite file in the run's temp dir.
    Sqlite,
    /// A new database (named by the string) on this cluster.
    Postgres(&'a preflight_tests::pg::Pg, String),
}

impl Store<'_> {
    /// The short name printed with the figures.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres(..) => "PostgreSQL",
        }
    }
}

fn labels_of(i: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("role".into(), "compute".into()),
        ("rack".into(), format!("r{:02}", i % 100)),
    ])
}

/// Counters the senders share.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    full: AtomicU64,
    errors: AtomicU64,
    registered: AtomicU64,
}

/// One simulated agent's next report: a full one (half of them with a
/// critical finding, or `broken_per_mille` in a thousand) one time in 11,
/// a heartbeat otherwise.
fn next_report(
    i: usize,
    seq: &mut u64,
    state_seq: &mut u64,
    rng: &mut u64,
    broken_per_mille: Option<u64>,
) -> (Report, bool) {
    *seq += 1;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let is_full = *rng % 11 == 0;
    let node = format!("n{i:06}");
    let body = if is_full {
        *state_seq = *seq;
        ReportBody::Full {
            labels: labels_of(i),
            state: Box::new(state(
                &node,
                broken_per_mille.map_or(*rng % 2 == 0, |pm| (*rng >> 20) % 1000 < pm),
            )),
        }
    } else {
        ReportBody::Heartbeat {
            state_seq: *state_seq,
        }
    };
    let r = Report {
        node,
        boot_id: "load".into(),
        seq: *seq,
        body,
    };
    (r, is_full)
}

async fn send(client: &AggregatorClient, r: &Report, is_full: bool, c: &Counts) {
    c.sent.fetch_add(1, Ordering::Relaxed);
    match client.post_report(r).await {
        Ok(_) => {
            c.ok.fetch_add(1, Ordering::Relaxed);
            if is_full {
                c.full.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(_) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A node's first report: healthy, or broken for `broken_per_mille` in a
/// thousand nodes (spread over the racks by a multiplicative hash).
fn register_report(i: usize, broken_per_mille: Option<u64>) -> Report {
    let node = format!("n{i:06}");
    let broken = broken_per_mille
        .is_some_and(|pm| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1000 < pm);
    Report {
        node: node.clone(),
        boot_id: "load".into(),
        seq: 1,
        body: ReportBody::Full {
            labels: labels_of(i),
            state: Box::new(state(&node, broken)),
        },
    }
}

/// 64 workers share keep-alive connections; each plays every 64th node.
fn spawn_shared(
    client: &AggregatorClient,
    nodes: usize,
    workers: usize,
    counts: &Arc<Counts>,
    start: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    broken: Option<u64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rate = nodes as f64 / 10.0 + nodes as f64 / 100.0;
    let per_worker = rate / workers as f64;
    (0..workers)
        .map(|w| {
            let (client, counts, mut start) = (client.clone(), counts.clone(), start.clone());
            tokio::spawn(async move {
                let mine: Vec<usize> = (w..nodes).step_by(workers).collect();
                for i in &mine {
                    let _ = client.post_report(&register_report(*i, broken)).await;
                    counts.registered.fetch_add(1, Ordering::Relaxed);
                }
                let Ok(t) = start.wait_for(Option::is_some).await.map(|r| *r) else {
                    return;
                };
                let (begin, stop) = t.expect("some");
                let mut seq = vec![1u64; mine.len()];
                let mut state_seq = vec![1u64; mine.len()];
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64);
                let mut n = 0u64;
                while Instant::now() < stop {
                    // Pace: the n-th request of this worker at n / per_worker seconds.
                    let due = begin + Duration::from_secs_f64(n as f64 / per_worker);
                    tokio::time::sleep_until(due.into()).await;
                    let j = (n as usize) % mine.len();
                    n += 1;
                    let (r, full) =
                        next_report(mine[j], &mut seq[j], &mut state_seq[j], &mut rng, broken);
                    send(&client, &r, full, &counts).await;
                }
            })
        })
        .collect()
}

/// One task and one connection per simulated agent: each reports every
/// 10 / 1.1 s (the same offered rate as the workers), at a phase of its own.
fn spawn_agents(
    client: &AggregatorClient,
    nodes: usize,
    counts: &Arc<Counts>,
    start: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    broken: Option<u64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Registration opens the connections, at most 64 handshakes at once.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let period = Duration::from_secs_f64(10.0 / 1.1);
    (0..nodes)
        .map(|i| {
            let (client, counts, mut start, gate) = (
                client.separate_pool(),
                counts.clone(),
                start.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                {
                    let _slot = gate.acquire().await;
                    let _ = client.post_report(&register_report(i, broken)).await;
                    counts.registered.fetch_add(1, Ordering::Relaxed);
                }
                let Ok(t) = start.wait_for(Option::is_some).await.map(|r| *r) else {
                    return;
                };
                let (begin, stop) = t.expect("some");
                let (mut seq, mut state_seq) = (1u64, 1u64);
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0x2545_F491);
                let phase = period.mul_f64((i as f64 * 0.618_034).fract());
                let mut due = begin + phase;
                while due < stop {
                    tokio::time::sleep_until(due.into()).await;
                    let (r, full) = next_report(i, &mut seq, &mut state_seq, &mut rng, broken);
                    send(&client, &r, full, &counts).await;
                    due += period;
                }
            })
        })
        .collect()
}

/// How many nodes the whole fleet's gate answer lists as blocked.
async fn blocked_now(http: &HttpClient, base: &str) -> String {
    match http
        .get(&format!("{base}/v1/gate?scope=&ready=false"))
        .await
    {
        Ok((_, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["blocked"].as_array().map(Vec::len))
            .map_or_else(|| "unknown (no blocked list)".into(), |n| n.to_string()),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The steady load played before the measured window: one heartbeat
/// period, so every node has reported within its TTL when it opens.
const WARM_UP: Duration = Duration::from_secs(10);

pub fn run(
    bin: &str,
    nodes: usize,
    seconds: u64,
    workers: usize,
    store: &Store,
    opts: LoadOptions,
) -> LoadResult {
    let dir = std::env::temp_dir().join(format!("preflight-load-{}-{nodes}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    if opts.agent_connections {
        // Both ends of every connection, the aggregator's store and slack.
        raise_nofile(u64::try_from(nodes).unwrap_or(u64::MAX) * 2 + 4096);
    }
    let database = match store {
        Store::Sqlite => dir.join("load.db").display().to_string(),
        Store::Postgres(pg, db) => {
            pg.psql("postgres", &format!("CREATE DATABASE {db}"));
            format!(
                "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
                pg.port
            )
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut config = format!(
        "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\nstate_dir = \"{state}\"\nsettle = \"0s\"\nttl = \"30s\"\nauth = \"none\"\nscopes = [\"{RACK}\"]\nmax_connections_per_source = {per_source}\n",
        // Every simulated agent (or worker) connects from 127.0.0.1.
        per_source = (nodes + 1024).min(1_000_000),
        state = dir.display(),
    );
    let ca = opts.tls.then(|| {
        let (ca, cert, key) = make_certs(&dir);
        config.push_str(&format!(
            "\n[aggregator.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        ca
    });
    std::fs::write(dir.join("agg.toml"), config).expect("config");
    let mut cmd = if opts.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", bin]);
        c
    } else {
        Command::new(bin)
    };
    let mut child = cmd
        .args(["aggregator", "-c"])
        .arg(dir.join("agg.toml"))
        .env("PREFLIGHT_LOG", "error")
        .envs(opts.threads.map(|n| ("PREFLIGHT_THREADS", n.to_string())))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn aggregator");
    if opts.nice_load {
        // After the aggregator started (it keeps nice 0), before the
        // runtime starts: its threads inherit this thread's nice value.
        nice_this_thread(19);
    }
    if opts.pin {
        // Before the runtime starts: its threads inherit the mask.
        pin_to(&[0]);
    }
    let scheme = if opts.tls { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{port}");
    let tls = TlsOptions {
        ca: ca.clone(),
        ..TlsOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let mut http = HttpClient::new(Duration::from_secs(10));
        let mut client = AggregatorClient::new(
            vec![BaseUrl::parse(&base).expect("a loopback URL")],
            Duration::from_secs(10),
        );
        if opts.tls {
            http = HttpClient::with_tls(Duration::from_secs(10), &tls).expect("the bench CA");
            client = client.with_tls(&tls).expect("the bench CA");
        }
        for _ in 0..100 {
            if http.get(&format!("{base}/healthz")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let counts = Arc::new(Counts::default());
        let (start_tx, start_rx) = tokio::sync::watch::channel(None);
        let reg_start = Instant::now();
        let handles = if opts.agent_connections {
            spawn_agents(&client, nodes, &counts, start_rx, opts.broken_per_mille)
        } else {
            spawn_shared(&client, nodes, workers, &counts, start_rx, opts.broken_per_mille)
        };
        while counts.registered.load(Ordering::Relaxed) < nodes as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "  registered {nodes} nodes in {:.1} s ({} sockets open in the aggregator)",
            reg_start.elapsed().as_secs_f64(),
            sockets(child.id())
        );
        let rate = nodes as f64 / 10.0 + nodes as f64 / 100.0;
        // One heartbeat period of the steady load before the measured
        // window: registering 100k nodes takes longer than the TTL, so
        // without it the window opens on thousands of nodes that went
        // stale while others registered and come back one by one, which
        // is not the steady state this bench measures (every agent
        // reporting within its TTL).
        let begin = Instant::now();
        let stop = begin + WARM_UP + Duration::from_secs(seconds);
        let _ = start_tx.send(Some((begin, stop)));
        tokio::time::sleep(WARM_UP).await;
        // The fleet the window opens on (each full report is broken half
        // of the time, so the blocked share grows through the window).
        // From the gate (its answer is kept), not /metrics: a scrape of
        // 100k node series leaves the aggregator's RSS 80 MiB higher.
        let blocked_at_start = blocked_now(&http, &base).await;
        let t0 = Instant::now();
        let (ok0, full0, errors0) = (
            counts.ok.load(Ordering::Relaxed),
            counts.full.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed),
        );
        let cpu0 = cpu_ticks(child.id());
        let delay0 = run_delay_ns(child.id());
        let steal0 = steal_ticks();
        // Gate prober, in turn: a configured rack scope (1% of the fleet),
        // the whole fleet, a rack of the same size that is not configured,
        // the whole fleet with `ready=false`. Timed
        // to the last byte of the answer, and again once parsed as
        // `preflight gate` does. It runs on a thread and runtime of its own,
        // as a pipeline's `preflight gate` is a process of its own: a
        // question must not wait behind the load generator's tasks.
        let prober = {
            let (base, tls) = (base.clone(), opts.tls.then(|| tls.clone()));
            std::thread::spawn(move || probe_gate(&base, tls.as_ref(), stop))
        };
        let mut db_samples = vec![(0.0, summary::db_size(&dir))];
        let mut rss_samples = vec![(0.0, rss_kib(child.id()))];
        let mut conns = Vec::new();
        let mut next_sample = t0 + Duration::from_secs(5);
        while Instant::now() < stop {
            if Instant::now() >= next_sample {
                let t = t0.elapsed().as_secs_f64();
                conns.push(sockets(child.id()) as f64);
                if conns.len() % 2 == 0 {
                    db_samples.push((t, summary::db_size(&dir)));
                    rss_samples.push((t, rss_kib(child.id())));
                }
                next_sample += Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut times = prober.join().expect("the gate prober");
        for h in handles {
            let _ = h.await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let delay = run_delay_ns(child.id());
        let per_s = |ns: u64| ns as f64 / 1e6 / elapsed;
        eprintln!(
            "  aggregator threads waited for a CPU, ms per second of the window (schedstat): report threads {:.0}, the others (gate questions, API) {:.1}; the hypervisor took {:.0} ms of CPU per second (steal, all vCPUs)",
            per_s(delay.reports.saturating_sub(delay0.reports)),
            per_s(delay.front.saturating_sub(delay0.front)),
            (steal_ticks().saturating_sub(steal0)) as f64 * 10.0 / elapsed
        );
        if let Ok((_, body)) = http.get(&format!("{base}/metrics")).await {
            let body = String::from_utf8_lossy(&body);
            eprintln!("  {}", gate_server_line(&body));
            eprintln!(
                "  nodes blocked at the window's start: {blocked_at_start} of {nodes}; at its end: {}",
                nodes_line(&body)
            );
        }
        if matches!(store, Store::Postgres(..)) {
            // Reloads from the shared store since the aggregator started
            // (registration included): the full one every 30 s reads every
            // node row.
            if let Ok((_, body)) = http.get(&format!("{base}/metrics")).await {
                eprintln!("  {}", reload_line(&String::from_utf8_lossy(&body)));
            }
        }
        let cpu_pct = (cpu_ticks(child.id()) - cpu0) as f64 / elapsed;
        let ok = counts.ok.load(Ordering::Relaxed) - ok0;
        LoadResult {
            offered_per_s: rate,
            accepted_per_s: ok as f64 / elapsed,
            errors: counts.errors.load(Ordering::Relaxed) - errors0,
            gate_rack_p50_ms: pctl(&mut times.rack, 50.0),
            gate_rack_p99_ms: pctl(&mut times.rack, 99.0),
            gate_adhoc_p50_ms: pctl(&mut times.adhoc, 50.0),
            gate_adhoc_p99_ms: pctl(&mut times.adhoc, 99.0),
            gate_all_p50_ms: pctl(&mut times.all, 50.0),
            gate_all_p99_ms: pctl(&mut times.all, 99.0),
            gate_all_short_p50_ms: pctl(&mut times.short, 50.0),
            gate_all_short_p99_ms: pctl(&mut times.short, 99.0),
            floor_p50_ms: pctl(&mut times.floor, 50.0),
            floor_p99_ms: pctl(&mut times.floor, 99.0),
            gate_rack_parsed_p99_ms: pctl(&mut times.rack_parsed, 99.0),
            gate_all_parsed_p99_ms: pctl(&mut times.all_parsed, 99.0),
            gate_ms: GateSamples {
                rack: times.rack.clone(),
                adhoc: times.adhoc.clone(),
                all: times.all.clone(),
                short: times.short.clone(),
                floor: times.floor.clone(),
            },
            rss_mib: rss_kib(child.id()) as f64 / 1024.0,
            cpu_pct,
            conns_median: pctl(&mut conns, 50.0),
            conns_min: conns.iter().copied().fold(f64::NAN, f64::min),
            db_bytes: match store {
                Store::Sqlite => summary::db_size(&dir),
                Store::Postgres(pg, db) => pg
                    .psql("postgres", &format!("SELECT pg_database_size('{db}')"))
                    .trim()
                    .parse()
                    .unwrap_or(0),
            },
            full_per_s: (counts.full.load(Ordering::Relaxed) - full0) as f64 / elapsed,
            db_samples,
            rss_samples,
        }
    });
    if opts.pin {
        pin_to(&(0..64).collect::<Vec<_>>());
    }
    if opts.nice_load {
        nice_this_thread(0);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
