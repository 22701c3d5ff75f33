//! Aggregator load: N simulated agents against a real `preflight aggregator`
//! process on loopback. Each node heartbeats every 10 s and 1% of nodes per
//! second send a changed full report; a prober asks the gate meanwhile. The
//! store is a fresh SQLite file, or a fresh database on a PostgreSQL
//! cluster (`Store::Postgres`), per run.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use preflight_client::{AggregatorClient, BaseUrl, GateResult, HttpClient};
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

fn pctl(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::percentile(v, p)
}

pub struct LoadResult {
    pub offered_per_s: f64,
    pub accepted_per_s: f64,
    pub errors: u64,
    pub gate_rack_p50_ms: f64,
    pub gate_rack_p99_ms: f64,
    pub gate_all_p50_ms: f64,
    pub gate_all_p99_ms: f64,
    pub rss_mib: f64,
    pub db_bytes: u64,
    pub full_per_s: f64,
    /// (seconds into the steady window, SQLite file + WAL bytes), every 10 s.
    pub db_samples: Vec<(f64, u64)>,
    /// (seconds into the steady window, aggregator RSS KiB), every 10 s.
    pub rss_samples: Vec<(f64, u64)>,
}

/// SQLite growth extrapolated to a day from the second half of the steady
/// window (the WAL fills to its checkpoint size first, then is reused).
#[allow(clippy::cast_precision_loss)]
pub fn growth_per_day(samples: &[(f64, u64)]) -> Option<f64> {
    let (t_end, b_end) = *samples.last()?;
    let (t_mid, b_mid) = *samples.iter().find(|(t, _)| *t >= t_end / 2.0)?;
    (t_end > t_mid).then(|| (b_end as f64 - b_mid as f64) / (t_end - t_mid) * 86_400.0)
}

fn db_size(dir: &std::path::Path) -> u64 {
    ["load.db", "load.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
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

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
pub fn run(bin: &str, nodes: usize, seconds: u64, workers: usize, store: &Store) -> LoadResult {
    let dir = std::env::temp_dir().join(format!("preflight-load-{}-{nodes}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
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
    std::fs::write(
        dir.join("agg.toml"),
        format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\nsettle = \"0s\"\nttl = \"30s\"\nauth = \"none\"\n",
        ),
    )
    .expect("config");
    let mut child = Command::new(bin)
        .args(["aggregator", "-c"])
        .arg(dir.join("agg.toml"))
        .env("PREFLIGHT_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn aggregator");
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let http = HttpClient::new(Duration::from_secs(10));
        let client = AggregatorClient::new(
            vec![BaseUrl::parse(&base).expect("a loopback URL")],
            Duration::from_secs(10),
        );
        for _ in 0..100 {
            if http.get(&format!("{base}/healthz")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let full = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        // Registration: one full report per node.
        let reg_start = Instant::now();
        let mut handles = Vec::new();
        for w in 0..workers {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                for i in (w..nodes).step_by(workers) {
                    let node = format!("n{i:06}");
                    let rack = i % 100;
                    let r = Report {
                        node: node.clone(),
                        boot_id: "load".into(),
                        seq: 1,
                        body: ReportBody::Full {
                            labels: BTreeMap::from([
                                ("role".into(), "compute".into()),
                                ("rack".into(), format!("r{rack:02}")),
                            ]),
                            state: Box::new(state(&node, false)),
                        },
                    };
                    let _ = client.post_report(&r).await;
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        eprintln!(
            "  registered {nodes} nodes in {:.1} s",
            reg_start.elapsed().as_secs_f64()
        );
        // Steady state.
        let rate = nodes as f64 / 10.0 + nodes as f64 / 100.0;
        let per_worker = rate / workers as f64;
        let stop = Instant::now() + Duration::from_secs(seconds);
        let mut handles = Vec::new();
        for w in 0..workers {
            let (client, sent, ok, full, errors) = (
                client.clone(),
                sent.clone(),
                ok.clone(),
                full.clone(),
                errors.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mine: Vec<usize> = (w..nodes).step_by(workers).collect();
                let mut seq = vec![1u64; mine.len()];
                let mut state_seq = vec![1u64; mine.len()];
                let mut k = 0usize;
                let start = Instant::now();
                let mut n = 0u64;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64);
                while Instant::now() < stop {
                    // Pace: the n-th request of this worker at n / per_worker seconds.
                    let due = start + Duration::from_secs_f64(n as f64 / per_worker);
                    tokio::time::sleep_until(due.into()).await;
                    n += 1;
                    let j = k % mine.len();
                    k += 1;
                    seq[j] += 1;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let is_full = rng % 11 == 0;
                    let node = format!("n{:06}", mine[j]);
                    let body = if is_full {
                        state_seq[j] = seq[j];
                        ReportBody::Full {
                            labels: BTreeMap::from([
                                ("role".into(), "compute".into()),
                                ("rack".into(), format!("r{:02}", mine[j] % 100)),
                            ]),
                            state: Box::new(state(&node, rng % 2 == 0)),
                        }
                    } else {
                        ReportBody::Heartbeat {
                            state_seq: state_seq[j],
                        }
                    };
                    let r = Report {
                        node,
                        boot_id: "load".into(),
                        seq: seq[j],
                        body,
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    match client.post_report(&r).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if is_full {
                                full.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        // Gate prober: a rack scope (1% of the fleet) and the whole fleet.
        let mut rack = Vec::new();
        let mut all = Vec::new();
        let t0 = Instant::now();
        let mut i = 0;
        let mut db_samples = vec![(0.0, db_size(&dir))];
        let mut rss_samples = vec![(0.0, rss_kib(child.id()))];
        let mut next_sample = t0 + Duration::from_secs(10);
        while Instant::now() < stop {
            if Instant::now() >= next_sample {
                let t = t0.elapsed().as_secs_f64();
                db_samples.push((t, db_size(&dir)));
                rss_samples.push((t, rss_kib(child.id())));
                next_sample += Duration::from_secs(10);
            }
            let scope = if i % 2 == 0 { "rack=r07" } else { "" };
            let q = Instant::now();
            let r = client.gate(scope).await;
            let ms = q.elapsed().as_secs_f64() * 1000.0;
            if matches!(r, GateResult::Go(_) | GateResult::NoGo(_)) {
                if i % 2 == 0 {
                    rack.push(ms)
                } else {
                    all.push(ms)
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for h in handles {
            let _ = h.await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        LoadResult {
            offered_per_s: rate,
            accepted_per_s: ok.load(Ordering::Relaxed) as f64 / elapsed,
            errors: errors.load(Ordering::Relaxed),
            gate_rack_p50_ms: pctl(&mut rack, 50.0),
            gate_rack_p99_ms: pctl(&mut rack, 99.0),
            gate_all_p50_ms: pctl(&mut all.clone(), 50.0),
            gate_all_p99_ms: pctl(&mut all, 99.0),
            rss_mib: rss_kib(child.id()) as f64 / 1024.0,
            db_bytes: match store {
                Store::Sqlite => db_size(&dir),
                Store::Postgres(pg, db) => pg
                    .psql("postgres", &format!("SELECT pg_database_size('{db}')"))
                    .trim()
                    .parse()
                    .unwrap_or(0),
            },
            full_per_s: full.load(Ordering::Relaxed) as f64 / elapsed,
            db_samples,
            rss_samples,
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn growth_uses_the_second_half_of_the_window() {
        // The WAL fills in the first half (+4 MiB), then the file is flat
        // but for 1 KiB over the last 300 s: about 288 KiB a day.
        let s = [
            (0.0, 10_000_000),
            (100.0, 14_194_304),
            (300.0, 14_194_304),
            (600.0, 14_195_328),
        ];
        let g = super::growth_per_day(&s).expect("measured");
        assert!((g - 1024.0 / 300.0 * 86_400.0).abs() < 1e-6, "{g}");
        assert_eq!(super::growth_per_day(&[(0.0, 1), (10.0, 5)]), None);
        assert_eq!(super::growth_per_day(&[]), None);
    }
}
