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
    crate::rss_kib(pid).unwrap_or(0) as f64 / 1024.0
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

/// The agent's own binary, what the packages run: for
/// `target/release/preflight` the one of the `release-agent` profile
/// (`cargo build --profile release-agent -p preflight-agentd`), else the
/// one beside `preflight`; `None` when it was not built (the bench then
/// runs `preflight agent`).
fn agent_binary(preflight: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = preflight.parent()?;
    let profile = dir
        .file_name()
        .filter(|n| *n == "release")
        .map(|_| dir.with_file_name("release-agent"));
    profile
        .into_iter()
        .chain([dir.to_path_buf()])
        .map(|d| d.join("preflight-agent"))
        .find(|p| p.is_file())
}

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
        let small = agent_binary(std::path::Path::new(preflight));
        let agent_cmd: Vec<&str> = match small.as_deref().and_then(std::path::Path::to_str) {
            Some(s) => vec![s],
            None => vec![preflight, "agent"],
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

/// The bond flap storm (issue 19): one VM boot (the host kernel has no
/// bonding), `bonds` active-backup bonds with miimon 100 ms, each over two
/// veth ports `pNa`/`qNa`; the storm sets the peers `qNb` down and up round
/// robin, `rate` changes a second, so each port loses carrier for
/// `bonds / rate` seconds (250 ms with 25 bonds: longer than miimon, so the
/// bonding driver marks the port MII down and up again every time: ports
/// flap, bonds degrade and recover). `preflight agent` and node_exporter
/// (bonding, netclass, netdev) run in the guest, scraped once a second
/// from inside it; CPU is read from the guest's /proc. One storm window per
/// repetition, all in the same boot; returns per repetition (preflight %,
/// node_exporter %, changes per second).
pub fn bond_storm(
    preflight: &str,
    bonds: usize,
    storm: Duration,
    reps: usize,
) -> Vec<(f64, f64, f64)> {
    use preflight_tests::vm::{Vm, VmSpec};
    std::env::set_var("PREFLIGHT_BIN", preflight);
    let me = std::env::current_exe().expect("bench path");
    let ne = crate::vm_compare::which("prometheus-node-exporter");
    let mut vm = Vm::boot(&VmSpec {
        nics: 1,
        extra_bins: vec![me, ne],
        ..VmSpec::default()
    });
    // One `ip -batch` (a process start costs much under TCG).
    let o = vm.run(
        &format!(
            "for b in $(seq 0 {}); do echo \"link add bond$b type bond mode active-backup miimon 100\"; for p in p q; do echo \"link add $p${{b}}a type veth peer name $p${{b}}b\"; echo \"link set $p${{b}}a master bond$b\"; echo \"link set $p${{b}}b up\"; done; echo \"link set bond$b up\"; done > /tmp/bonds && /sbin/ip -batch /tmp/bonds && sleep 2",
            bonds - 1
        ),
        Duration::from_secs(300),
    );
    assert_eq!(o.status, 0, "bonds: {}", o.output);
    vm.sh("printf '[agent]\\nnode = \"vm\"\\nlisten = \"127.0.0.1:9101\"\\nprobe_gateways = false\\n' > /tmp/agent.toml");
    vm.sh("PREFLIGHT_LOG=error preflight agent -c /tmp/agent.toml > /dev/null 2>&1 &");
    vm.sh("prometheus-node-exporter --collector.disable-defaults --collector.bonding --collector.netclass --collector.netdev --web.listen-address=127.0.0.1:9100 > /dev/null 2>&1 &");
    vm.sh("sleep 3");
    let pids = vm.sh("pidof preflight; pidof prometheus-node-exporter");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "agent and node_exporter running: {pids:?}");
    let links: Vec<String> = (0..bonds).map(|b| format!("q{b}b")).collect();
    let mut out = Vec::new();
    for rep in 0..reps {
        let o = vm.run(
            &format!(
                "preflight-bench guest-flap --links {} --seconds {} --agent-pid {} --ne-pid {}",
                links.join(","),
                storm.as_secs(),
                pids[0],
                pids[1]
            ),
            storm + Duration::from_secs(120),
        );
        let line = o
            .output
            .lines()
            .find(|l| l.starts_with("PFSTORM"))
            .unwrap_or_else(|| panic!("guest-flap printed no result:\n{}", o.output));
        let field = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} missing in `{line}`"))
        };
        let r = (field("agent="), field("ne="), field("rate="));
        eprintln!(
            "  bond storm rep {}: {:.0} changes/s, CPU {:.2}% / {:.2}% (preflight / node_exporter)",
            rep + 1,
            r.2,
            r.0,
            r.1
        );
        out.push(r);
        vm.sh("sleep 3");
    }
    vm.shutdown();
    out
}

/// Inside the VM: the storm of [`bond_storm`]. Toggles `links` round robin
/// at `rate` changes a second over rtnetlink for `window`, while a task
/// scrapes both exporters once a second (concurrently, so that a slow
/// scrape under TCG does not pause the storm), then brings every link up
/// and prints `PFSTORM agent=% ne=% rate=changes/s`.
pub fn guest_flap(links: &[String], window: Duration, rate: u32, pids: (u32, u32)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let scraper = tokio::spawn(async {
            let client = Client::new(Duration::from_secs(5));
            loop {
                let next = Instant::now() + Duration::from_secs(1);
                for u in [
                    "http://127.0.0.1:9101/metrics",
                    "http://127.0.0.1:9100/metrics",
                ] {
                    let _ = client.get(u).await;
                }
                tokio::time::sleep_until(next.into()).await;
            }
        });
        let t = (ticks(pids.0), ticks(pids.1));
        let start = Instant::now();
        let step = Duration::from_secs(1) / rate.max(1);
        let mut n = 0u32;
        let count = u32::try_from(links.len()).expect("links");
        while start.elapsed() < window {
            tokio::time::sleep_until((start + step * n).into()).await;
            let link = &links[(n % count) as usize];
            let up = (n / count) % 2 == 1;
            preflight_netlink::control::set_link(link, up)
                .await
                .unwrap_or_else(|e| panic!("set {link}: {e}"));
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = |a: u64, b: u64| (b - a) as f64 / 100.0 / secs * 100.0;
        let (a, b) = (cpu(t.0, ticks(pids.0)), cpu(t.1, ticks(pids.1)));
        scraper.abort();
        for l in links {
            let _ = preflight_netlink::control::set_link(l, true).await;
        }
        println!(
            "PFSTORM agent={a:.3} ne={b:.3} rate={:.1}",
            f64::from(n) / secs
        );
    });
}

/// Runs [`bond_storm`] and prints each repetition and the medians.
pub fn bond_storm_report(preflight: &str, bonds: usize, storm: Duration, reps: usize) {
    let rows = bond_storm(preflight, bonds, storm, reps);
    let med = |f: &dyn Fn(&(f64, f64, f64)) -> f64| {
        let (m, _, lo, hi) = stats(rows.iter().map(f).collect());
        format!("{m:.2} ({lo:.2}..{hi:.2})")
    };
    println!(
        "bond flap storm (VM, {bonds} active-backup bonds over veth, miimon 100 ms), {reps} windows of {} s: median (min..max)",
        storm.as_secs()
    );
    println!("  changes/s                 {}", med(&|r| r.2));
    println!("  CPU % preflight agent     {}", med(&|r| r.0));
    println!("  CPU % node_exporter       {}", med(&|r| r.1));
    println!("  ratio node_exporter / agent {}", med(&|r| r.1 / r.0));
}
