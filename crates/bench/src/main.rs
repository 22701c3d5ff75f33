//! preflight benchmarks. Each prints figures (median, p99, spread over
//! repetitions); none asserts on time. Run as root: they make their own
//! network namespaces and send no traffic outside them.
//!
//! ```text
//! preflight-bench all [--bin PATH] [--quick]
//! preflight-bench netns-latency [--toggles 200] [--reps 5]
//! preflight-bench watch-rss [--bin PATH] [--seconds 5] [--reps 5]
//! preflight-bench footprint [--bin PATH] [--reps 5] [--idle 30] [--storm 15] [--scrapes 1000]
//! preflight-bench bond-storm [--bin PATH] [--reps 5] [--storm 15] [--bonds 25]
//! preflight-bench idle-cpu [--bin PATH] [--instances 5] [--seconds 600]
//! preflight-bench aggregator-load [--bin PATH] [--nodes 10000,100000] [--seconds 20] [--reps 5] [--database sqlite,postgres] [--tls off|on|both] [--agent-connections] [--pin] [--nice-load] [--broken-share PERCENT] [--threads 1,2]
//! preflight-bench pg-propagation [--bin PATH] [--waivers 100]
//! preflight-bench vm-latency [--bin PATH] [--pulls 30] [--boots 3]
//! preflight-bench vm-compare [--bin PATH] [--intervals 1,15] [--pulls 30,30] [--boots 5] [--bonds 3]
//! preflight-bench ovs-latency [--bin PATH] [--pulls 100] [--reps 5] [--idle 10]
//! ```
//!
//! `--bin` is the `preflight` binary measured (default
//! target/release/preflight).

mod footprint;
mod gate_render;
mod load;
mod load_env;
mod ovs;
mod propagation;
mod report;
mod vm_compare;
mod vm_latency;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use preflight_policy::{Evaluator, PolicyConfig};

pub(crate) use preflight_tests::netns::Netns;

/// A namespace with lo up, a bridge and 50 veth pairs fNa/fNb (fNb on the
/// bridge): 101 links + lo, the node every footprint bench uses.
pub(crate) fn bridged(tag: &str) -> Netns {
    let ns = Netns::new(&format!("bench-{tag}"));
    ns.ip("link add br0 type bridge");
    ns.ip("link set br0 up");
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(format!("link add f{i}a type veth peer name f{i}b"));
        lines.push(format!("link set f{i}b master br0"));
        lines.push(format!("link set f{i}a up"));
        lines.push(format!("link set f{i}b up"));
    }
    ns.ip_batch(&lines);
    ns
}

/// Moves the calling thread into the namespace `name` (the thread stays
/// there; the namespace is owned and deleted by its `Netns`).
pub(crate) fn enter(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns file");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v[0],
        v[v.len() - 1],
    )
}

/// Default pause before each toggle of `netns-latency`, ms.
pub(crate) const NETNS_GAP_MS: u64 = 100;

/// Time from `ip link set X down` (issued over rtnetlink in-process, so no
/// process start-up is counted) to the watch emitting LINK_NO_CARRIER for its
/// peer, and from `up` to the finding clearing.
pub(crate) fn netns_latency(toggles: usize, reps: usize, gap: Duration) {
    let ns = Netns::new("bench-lat");
    for l in [
        "link add w0 type veth peer name w1",
        "link set w0 up",
        "link set w1 up",
    ] {
        ns.ip(l);
    }
    let mut rep_medians = Vec::new();
    let mut rep_p99 = Vec::new();
    let mut all = Vec::new();
    for rep in 0..reps {
        let ns_name = ns.name.clone();
        let samples = std::thread::spawn(move || {
            enter(&ns_name);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut w = preflight_netlink::watch(preflight_netlink::WatchConfig::default())
                    .await
                    .expect("watch");
                let mut ev = Evaluator::new(PolicyConfig::default());
                let mut out = Vec::with_capacity(toggles * 2);
                for i in 0..toggles * 2 {
                    let down = i % 2 == 0;
                    tokio::time::sleep(gap).await;
                    let t0 = Instant::now();
                    preflight_netlink::control::set_link("w1", !down)
                        .await
                        .expect("toggle");
                    loop {
                        w.snapshots.changed().await.expect("watch alive");
                        let snap = w.snapshots.borrow_and_update().clone();
                        let f = ev.evaluate(&snap, Instant::now(), SystemTime::now());
                        let present = f
                            .iter()
                            .any(|f| f.code == "LINK_NO_CARRIER" && f.subject == "w0");
                        if present == down {
                            break;
                        }
                    }
                    out.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                out
            })
        })
        .join()
        .expect("bench thread");
        let (p50, p99, min, max) = stats(samples.clone());
        println!(
            "  rep {}: {} samples  median {p50:.3} ms  p99 {p99:.3} ms  min {min:.3}  max {max:.3}",
            rep + 1,
            samples.len()
        );
        rep_medians.push(p50);
        rep_p99.push(p99);
        all.extend(samples);
    }
    let (m50, _, m50min, m50max) = stats(rep_medians);
    let (p99m, _, p99min, p99max) = stats(rep_p99);
    let (a50, a99, _, amax) = stats(all.clone());
    println!(
        "netns link toggle -> finding (in-process watch + policy), {toggles} down/up pairs x {reps} reps, {} ms before each toggle:",
        gap.as_millis()
    );
    println!("  median of medians {m50:.3} ms (spread {m50min:.3}..{m50max:.3})");
    println!("  median of p99s    {p99m:.3} ms (spread {p99min:.3}..{p99max:.3})");
    println!(
        "  pooled: n={} median {a50:.3} ms  p99 {a99:.3} ms  max {amax:.3} ms",
        all.len()
    );
}

/// VmRSS of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// RSS of `preflight inspect --watch` at idle in a namespace with a bridge
/// and 50 veth pairs.
pub(crate) fn watch_rss(bin: &str, seconds: u64, reps: usize) {
    let ns = bridged("rss");
    let mut v = Vec::new();
    for _ in 0..reps {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, bin, "inspect", "--watch", "--json",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn preflight");
        std::thread::sleep(Duration::from_secs(seconds));
        // `ip netns exec` execs the binary: same pid.
        let rss = rss_kib(child.id()).expect("rss");
        let _ = child.kill();
        let _ = child.wait();
        v.push(rss as f64 / 1024.0);
    }
    let (p50, _, min, max) = stats(v);
    println!("preflight inspect --watch idle RSS (101 links + lo), {reps} runs: median {p50:.2} MiB (spread {min:.2}..{max:.2})");
}

/// `--broken-share`: a percentage from 0 to 100 (decimals allowed), as
/// nodes in a thousand.
fn parse_share(v: &str) -> Result<u64, String> {
    match v.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok((p * 10.0).round() as u64),
        _ => Err(format!(
            "{v:?}: expected a percentage from 0 to 100, e.g. 5 or 2.5"
        )),
    }
}

/// `--bin PATH` made absolute, so that it also works from inside a
/// namespace or after a chdir.
fn absolute(bin: &str) -> String {
    std::fs::canonicalize(bin).map_or_else(|_| bin.to_owned(), |p| p.display().to_string())
}

/// preflight benchmarks: print figures, assert nothing on time. Run as root:
/// the benches make their own namespaces and VMs.
#[derive(clap::Parser)]
#[command(name = "preflight-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

/// The measured binary.
#[derive(clap::Args)]
struct BinArg {
    /// The preflight binary measured.
    #[arg(long, default_value = "target/release/preflight")]
    bin: String,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Every bench below with its defaults, then one table.
    All {
        #[command(flatten)]
        bin: BinArg,
        /// Tiny sizes, one repetition: the CI smoke pass (figures mean nothing).
        #[arg(long)]
        quick: bool,
    },
    /// Link toggle in a namespace -> finding, in-process watch + policy.
    NetnsLatency {
        #[arg(long, default_value_t = 200)]
        toggles: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Pause before each toggle, ms. The default (two of the watch's
        /// 50 ms windows) makes every toggle a single change after a quiet
        /// period; 0 toggles as fast as findings come, which the watch
        /// paces as a flap (one publication per window, wider in a storm).
        #[arg(long, default_value_t = NETNS_GAP_MS)]
        gap_ms: u64,
    },
    /// RSS of `inspect --watch` over a bridged namespace.
    WatchRss {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// The gate's answer at fleet scale, in process (no HTTP): built and
    /// serialized vs written straight to JSON, on the same fleet state.
    GateRender {
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        /// Share of the nodes blocked by a critical finding, percent.
        #[arg(long, default_value_t = 5)]
        blocked_pct: usize,
        /// Reports that change a node between two questions.
        #[arg(long, default_value_t = 25)]
        changes: usize,
        /// Questions per way and scope.
        #[arg(long, default_value_t = 200)]
        questions: usize,
    },
    /// Agent and aggregator against node_exporter: CPU, RSS, scrape time.
    Footprint {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Idle window, seconds.
        #[arg(long, default_value_t = 30)]
        idle: u64,
        /// Link-storm window, seconds.
        #[arg(long, default_value_t = 15)]
        storm: u64,
        #[arg(long, default_value_t = 1000)]
        scrapes: usize,
    },
    /// Flap storm with bonds (VM): ports losing carrier and MII, agent
    /// against node_exporter CPU.
    BondStorm {
        #[command(flatten)]
        bin: BinArg,
        /// Storm windows, all in one boot.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Storm window, seconds.
        #[arg(long, default_value_t = 15)]
        storm: u64,
        /// Bonds (two veth ports each; one port per bond flaps).
        #[arg(long, default_value_t = 25)]
        bonds: usize,
    },
    /// Idle CPU of several agents, scraped once a second.
    IdleCpu {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 5)]
        instances: usize,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// N simulated agents against a real aggregator process.
    AggregatorLoad {
        #[command(flatten)]
        bin: BinArg,
        /// Fleet sizes, comma-separated.
        #[arg(long, default_value = "10000,100000")]
        nodes: String,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Stores, comma-separated: `sqlite`, `postgres` (a throwaway
        /// cluster, a new database per run); repetitions are interleaved.
        #[arg(long, default_value = "sqlite")]
        database: String,
        /// `off`, `on` (HTTPS, a throwaway CA made with openssl, verified by
        /// every client) or `both` (interleaved).
        #[arg(long, default_value = "off")]
        tls: String,
        /// One connection per simulated agent (a task and a pool each)
        /// instead of 64 workers over shared keep-alive connections; raises
        /// RLIMIT_NOFILE for the bench and the aggregator it starts.
        #[arg(long)]
        agent_connections: bool,
        /// Run the aggregator on CPU 1 (`taskset -c 1`) and the load
        /// generator on CPU 0.
        #[arg(long)]
        pin: bool,
        /// Run the load generator at nice 19: it stands for agents on other
        /// machines, so it gets only the CPU the aggregator leaves (the gate
        /// prober stays real-time).
        #[arg(long)]
        nice_load: bool,
        /// A steady fleet with this share of nodes broken, in percent
        /// (0-100): nodes register broken at that share and each changed
        /// full report is broken with the same chance, so the blocked share
        /// stays put through the window. Default: nodes register healthy and
        /// half of the full reports are broken, so the blocked share grows
        /// through the window (about 5% -> 14% in 20 s at 100k nodes).
        #[arg(long, value_parser = parse_share)]
        broken_share: Option<u64>,
        /// The aggregator's worker threads (`PREFLIGHT_THREADS`; 1 = one
        /// thread for everything), comma-separated to compare counts
        /// (interleaved); its own default when not given.
        #[arg(long, default_value = "")]
        threads: String,
    },
    /// Waiver created / removed on replica A -> replica B's gate changes
    /// (two replicas on a throwaway PostgreSQL).
    PgPropagation {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 100)]
        waivers: usize,
    },
    /// Cable pull in a VM -> no-go.
    VmLatency {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 30)]
        pulls: usize,
        #[arg(long, default_value_t = 3)]
        boots: usize,
    },
    /// Cable pull in a VM: preflight against node_exporter + Prometheus.
    VmCompare {
        #[command(flatten)]
        bin: BinArg,
        /// Prometheus scrape intervals, seconds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,15")]
        intervals: Vec<u64>,
        /// Pulls per interval, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "30,30")]
        pulls: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        boots: usize,
        #[arg(long, default_value_t = 3)]
        bonds: usize,
    },
    /// Open vSwitch member down -> finding (real OVS), and agent RSS with
    /// the OVSDB source on vs off.
    OvsLatency {
        #[command(flatten)]
        bin: BinArg,
        #[arg(long, default_value_t = 100)]
        pulls: usize,
        /// Repetitions of the RSS measurement.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Seconds the agent runs before its RSS is read.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
    /// Runs inside the VM for bond-storm (not for people).
    #[command(hide = true)]
    GuestFlap {
        #[arg(long, value_delimiter = ',')]
        links: Vec<String>,
        #[arg(long)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// The agent's process id.
        #[arg(long)]
        agent_pid: u32,
        /// node_exporter's process id.
        #[arg(long)]
        ne_pid: u32,
    },
    /// Runs inside the VM for vm-latency (not for people).
    #[command(hide = true)]
    GuestWatch {
        #[arg(default_value = "bond0")]
        bond: String,
        #[arg(default_value = "eth1")]
        port: String,
    },
}

fn main() {
    // A typo is an error (exit 2, clap's usage code), never the default run.
    let cli = <Cli as clap::Parser>::parse();
    match cli.bench {
        Bench::All { bin, quick } => report::all(&absolute(&bin.bin), quick),
        Bench::NetnsLatency {
            toggles,
            reps,
            gap_ms,
        } => netns_latency(toggles, reps, Duration::from_millis(gap_ms)),
        Bench::WatchRss { bin, seconds, reps } => watch_rss(&absolute(&bin.bin), seconds, reps),
        Bench::Footprint {
            bin,
            reps,
            idle,
            storm,
            scrapes,
        } => {
            report::footprint_report(
                &absolute(&bin.bin),
                reps,
                (Duration::from_secs(idle), Duration::from_secs(storm)),
                scrapes,
            );
        }
        Bench::BondStorm {
            bin,
            reps,
            storm,
            bonds,
        } => footprint::bond_storm_report(
            &absolute(&bin.bin),
            bonds,
            Duration::from_secs(storm),
            reps,
        ),
        Bench::GuestFlap {
            links,
            seconds,
            rate,
            agent_pid,
            ne_pid,
        } => footprint::guest_flap(
            &links,
            Duration::from_secs(seconds),
            rate,
            (agent_pid, ne_pid),
        ),
        Bench::IdleCpu {
            bin,
            instances,
            seconds,
        } => {
            report::idle_report(&absolute(&bin.bin), instances, seconds);
        }
        Bench::VmCompare {
            bin,
            intervals,
            pulls,
            boots,
            bonds,
        } => {
            let plan: Vec<(u64, usize)> = intervals.into_iter().zip(pulls).collect();
            let _ = report::vm_compare_report(&absolute(&bin.bin), &plan, boots, bonds);
        }
        Bench::OvsLatency {
            bin,
            pulls,
            reps,
            idle,
        } => ovs::report(&absolute(&bin.bin), pulls, reps, Duration::from_secs(idle)),
        Bench::GuestWatch { bond, port } => vm_latency::guest_watch(&bond, &port),
        Bench::VmLatency { bin, pulls, boots } => {
            let bin = absolute(&bin.bin);
            let runs: Vec<_> = (0..boots).map(|_| vm_latency::run(&bin, pulls)).collect();
            vm_latency::report(&runs);
        }
        Bench::AggregatorLoad {
            bin,
            nodes,
            seconds,
            reps,
            database,
            tls,
            agent_connections,
            pin,
            nice_load,
            broken_share,
            threads,
        } => {
            let opts = load::LoadOptions {
                agent_connections,
                pin,
                nice_load,
                threads: None,
                tls: false,
                broken_per_mille: broken_share,
            };
            let _ = report::load_report(
                &absolute(&bin.bin),
                &nodes,
                seconds,
                reps,
                &report::Matrix {
                    databases: &database,
                    tls: &tls,
                    threads: &report::parse_threads(&threads),
                },
                opts,
            );
        }
        Bench::GateRender {
            nodes,
            blocked_pct,
            changes,
            questions,
        } => gate_render::run(nodes, blocked_pct, changes, questions),
        Bench::PgPropagation { bin, waivers } => {
            propagation::report(&absolute(&bin.bin), waivers);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_broken_share_is_a_percentage_kept_in_thousandths() {
        assert_eq!(super::parse_share("5"), Ok(50));
        assert_eq!(super::parse_share("2.5"), Ok(25));
        assert_eq!(super::parse_share("0"), Ok(0));
        assert_eq!(super::parse_share("100"), Ok(1000));
        for bad in ["-1", "101", "five", ""] {
            let e = super::parse_share(bad).expect_err(bad);
            assert!(e.contains("percentage"), "{e}");
        }
    }
}
