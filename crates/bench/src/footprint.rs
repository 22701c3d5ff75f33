//! Agent footprint side by side with node_exporter (bonding, netclass and
//! netdev collectors only) on the same node: a namespace with a bridge and
//! 50 veth pairs. Both are scraped once a second during the idle and storm
//! windows, as a fast Prometheus would; CPU is read from /proc.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use preflight_client::HttpClient as Client;

use crate::{stats, Netns};

fn ticks(pid: u32) -> u64 {
    // utime + stime, fields 14 and 15 of /proc/PID/stat (after the comm field).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let m = crate::rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    m
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One repetition's figures: (preflight, node_exporter) pairs.
pub struct Footprint {
    pub rss: (f64, f64),
    pub cpu_idle_pct: (f64, f64),
    pub cpu_storm_pct: (f64, f64),
    pub render_p50_ms: (f64, f64),
    pub render_p99_ms: (f64, f64),
    pub storm_changes_per_s: f64,
}

/// An agent and a node_exporter (bonding, netclass, netdev) in one fresh
/// namespace with a bridge and 50 veth pairs (101 links with lo).
struct Pair {
    // Fields drop in order: both processes end before the namespace goes.
    agent: Kill,
    ne: Kill,
    ns: Netns,
    dir: std::path::PathBuf,
}

const URLS: [&str; 2] = [
    "http://127.0.0.1:19101/metrics",
    "http://127.0.0.1:19100/metrics",
];

impl Pair {
    fn start(preflight: &str, tag: &str) -> Self {
        let ns = crate::bridged(tag);
        let dir = std::env::temp_dir().join(format!("pf-{}", ns.name));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("agent.toml"),
            "[agent]\nnode = \"bench\"\nlisten = \"127.0.0.1:19101\"\nprobe_gateways = false\n",
        )
        .expect("cfg");
        // The agent's own binary beside `preflight` when it was built (what
        // the packages run), else `preflight agent`.
        let small = std::path::Path::new(preflight).with_file_name("preflight-agent");
        let agent_cmd: Vec<&str> = match small.to_str() {
            Some(s) if small.is_file() => vec![s],
            _ => vec![preflight, "agent"],
        };
        eprintln!("footprint: agent is `{}`", agent_cmd.join(" "));
        let agent = Kill(
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .args(&agent_cmd)
                .arg("-c")
                .arg(dir.join("agent.toml"))
                .env("PREFLIGHT_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn agent"),
        );
        let ne = Kill(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.name,
                    "prometheus-node-exporter",
                    "--collector.disable-defaults",
                    "--collector.bonding",
                    "--collector.netclass",
                    "--collector.netdev",
                    "--web.listen-address=127.0.0.1:19100",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "spawn prometheus-node-exporter (apt-get install prometheus-node-exporter)",
                ),
        );
        Self { agent, ne, ns, dir }
    }

    fn pids(&self) -> (u32, u32) {
        (self.agent.0.id(), self.ne.0.id())
    }

    /// Runs `f` on a thread inside the namespace, once both answer.
    fn within<T: Send + 'static, F>(
        &self,
        f: impl FnOnce(Client) -> F + Send + 'static,
    ) -> std::thread::JoinHandle<T>
    where
        F: std::future::Future<Output = T>,
    {
        let name = self.ns.name.clone();
        std::thread::spawn(move || {
            crate::enter(&name);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let client = Client::new(Duration::from_secs(5));
                for u in URLS {
                    for _ in 0..100 {
                        if matches!(client.get(u).await, Ok((s, _)) if s.is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                f(client).await
            })
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn scrape_both(client: &Client) {
    for u in URLS {
        let _ = client.get(u).await;
    }
}

/// CPU % of both processes over `window`, scraped once a second.
#[allow(clippy::cast_precision_loss)]
async fn idle_window(client: &Client, pids: (u32, u32), window: Duration) -> (f64, f64) {
    let t = (ticks(pids.0), ticks(pids.1));
    let start = Instant::now();
    while start.elapsed() < window {
        scrape_both(client).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = |a: u64, b: u64| (b - a) as f64 / 100.0 / secs * 100.0;
    (cpu(t.0, ticks(pids.0)), cpu(t.1, ticks(pids.1)))
}

/// Idle CPU over a long window for `instances` pairs side by side, each in
/// its own namespace, all measured over the same window; returns per pair
/// (preflight %, node_exporter %).
pub fn idle_cpu(preflight: &str, instances: usize, window: Duration) -> Vec<(f64, f64)> {
    let pairs: Vec<Pair> = (0..instances)
        .map(|i| Pair::start(preflight, &format!("idle{i}")))
        .collect();
    let threads: Vec<_> = pairs
        .iter()
        .map(|p| {
            let pids = p.pids();
            p.within(move |client| async move { idle_window(&client, pids, window).await })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("idle thread"))
        .collect()
}

#[allow(clippy::cast_precision_loss)]
pub fn run(preflight: &str, idle: Duration, storm: Duration, scrapes: usize) -> Footprint {
    let pair = Pair::start(preflight, "fp");
    let pids = pair.pids();
    let out = pair
        .within(move |client| async move {
            let rss = (rss_mib(pids.0), rss_mib(pids.1));
            let idle_cpu = idle_window(&client, pids, idle).await;
            // Storm: 100 link changes per second, scraped once a second.
            let t = (ticks(pids.0), ticks(pids.1));
            let start = Instant::now();
            let mut n = 0u64;
            let mut next_scrape = Instant::now();
            while start.elapsed() < storm {
                let due = start + Duration::from_millis(n * 10);
                tokio::time::sleep_until(due.into()).await;
                let link = format!("f{}b", n % 50);
                let up = (n / 50) % 2 == 1;
                let _ = preflight_netlink::control::set_link(&link, up).await;
                n += 1;
                if Instant::now() >= next_scrape {
                    scrape_both(&client).await;
                    next_scrape += Duration::from_secs(1);
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let cpu = |a: u64, b: u64| (b - a) as f64 / 100.0 / secs * 100.0;
            let storm_cpu = (cpu(t.0, ticks(pids.0)), cpu(t.1, ticks(pids.1)));
            let rate = n as f64 / secs;
            // Restore every link, then render times.
            for i in 0..50 {
                let _ = preflight_netlink::control::set_link(&format!("f{i}b"), true).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut render = Vec::new();
            for u in URLS {
                let mut v = Vec::with_capacity(scrapes);
                for _ in 0..scrapes {
                    let q = Instant::now();
                    let _ = client.get(u).await;
                    v.push(q.elapsed().as_secs_f64() * 1000.0);
                }
                render.push(stats(v));
            }
            Footprint {
                rss,
                cpu_idle_pct: idle_cpu,
                cpu_storm_pct: storm_cpu,
                render_p50_ms: (render[0].0, render[1].0),
                render_p99_ms: (render[0].1, render[1].1),
                storm_changes_per_s: rate,
            }
        })
        .join()
        .expect("bench thread");
    drop(pair);
    out
}
