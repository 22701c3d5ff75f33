//! preflight benchmarks. Each prints figures (median, p99, spread over
//! repetitions); none asserts on time. Run as root: they make their own
//! network namespaces and send no traffic outside them.
//!
//! ```text
//! preflight-bench all [--bin PATH] [--quick]
//! preflight-bench netns-latency [--toggles 200] [--reps 5]
//! preflight-bench watch-rss [--bin PATH] [--seconds 5] [--reps 5]
//! preflight-bench footprint [--bin PATH] [--reps 5] [--idle 30] [--storm 15] [--scrapes 1000]
//! preflight-bench idle-cpu [--bin PATH] [--instances 5] [--seconds 600]
//! preflight-bench aggregator-load [--bin PATH] [--nodes 10000,100000] [--seconds 20] [--reps 5]
//! preflight-bench vm-latency [--bin PATH] [--pulls 30] [--boots 3]
//! preflight-bench vm-compare [--bin PATH] [--intervals 1,15] [--pulls 30,30] [--boots 5] [--bonds 3]
//! preflight-bench ovs-latency [--bin PATH] [--pulls 100] [--reps 5] [--idle 10]
//! ```
//!
//! `--bin` is the `preflight` binary measured (default
//! target/release/preflight).

mod footprint;
mod load;
mod ovs;
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

/// Time from `ip link set X down` (issued over rtnetlink in-process, so no
/// process start-up is counted) to the watch emitting LINK_NO_CARRIER for its
/// peer, and from `up` to the finding clearing.
fn netns_latency(toggles: usize, reps: usize) {
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
    println!("netns link toggle -> finding (in-process watch + policy), {toggles} down/up pairs x {reps} reps:");
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
fn watch_rss(bin: &str, seconds: u64, reps: usize) {
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
        #[allow(clippy::cast_precision_loss)]
        v.push(rss as f64 / 1024.0);
    }
    let (p50, _, min, max) = stats(v);
    println!("preflight inspect --watch idle RSS (101 links + lo), {reps} runs: median {p50:.2} MiB (spread {min:.2}..{max:.2})");
}

/// Agent vs node_exporter footprint, `reps` repetitions; returns the
/// median rows (label, preflight, node_exporter).
fn footprint_report(
    bin: &str,
    reps: usize,
    (idle, storm): (Duration, Duration),
    scrapes: usize,
) -> Vec<(&'static str, f64, f64)> {
    let mut rows = Vec::new();
    for rep in 0..reps {
        let f = footprint::run(bin, idle, storm, scrapes);
        println!(
                    "  rep {}: RSS {:.2} / {:.2} MiB | CPU idle {:.2}% / {:.2}% | CPU storm ({:.0} changes/s) {:.2}% / {:.2}% | render p50 {:.3} / {:.3} ms p99 {:.3} / {:.3} ms   (preflight / node_exporter)",
                    rep + 1, f.rss.0, f.rss.1, f.cpu_idle_pct.0, f.cpu_idle_pct.1, f.storm_changes_per_s, f.cpu_storm_pct.0, f.cpu_storm_pct.1,
                    f.render_p50_ms.0, f.render_p50_ms.1, f.render_p99_ms.0, f.render_p99_ms.1
                );
        rows.push(f);
    }
    let med = |f: &dyn Fn(&footprint::Footprint) -> f64| {
        let (m, _, lo, hi) = stats(rows.iter().map(f).collect());
        (m, lo, hi)
    };
    println!("agent vs node_exporter (bonding, netclass, netdev), 101 links, {reps} reps: median (min..max)");
    let mut out = Vec::new();
    for (label, a, b) in [
        ("RSS MiB", med(&|f| f.rss.0), med(&|f| f.rss.1)),
        (
            "CPU % idle, scraped 1/s",
            med(&|f| f.cpu_idle_pct.0),
            med(&|f| f.cpu_idle_pct.1),
        ),
        (
            "CPU % storm, scraped 1/s",
            med(&|f| f.cpu_storm_pct.0),
            med(&|f| f.cpu_storm_pct.1),
        ),
        (
            "/metrics p50 ms",
            med(&|f| f.render_p50_ms.0),
            med(&|f| f.render_p50_ms.1),
        ),
        (
            "/metrics p99 ms",
            med(&|f| f.render_p99_ms.0),
            med(&|f| f.render_p99_ms.1),
        ),
    ] {
        println!(
                    "  {label:<26} preflight {:.3} ({:.3}..{:.3})  node_exporter {:.3} ({:.3}..{:.3})  ratio {:.1}x",
                    a.0, a.1, a.2, b.0, b.1, b.2, b.0 / a.0
                );
        out.push((label, a.0, b.0));
    }
    out
}

/// Idle CPU of `n` pairs over one window; returns the medians
/// (preflight %, node_exporter %).
fn idle_report(bin: &str, n: usize, secs: u64) -> (f64, f64) {
    let rows = footprint::idle_cpu(bin, n, Duration::from_secs(secs));
    for (i, (a, b)) in rows.iter().enumerate() {
        println!(
            "  instance {}: CPU {a:.3}% / {b:.3}%   (preflight / node_exporter)",
            i + 1
        );
    }
    let (a, _, alo, ahi) = stats(rows.iter().map(|r| r.0).collect());
    let (b, _, blo, bhi) = stats(rows.iter().map(|r| r.1).collect());
    println!("idle CPU over {secs} s, scraped 1/s, {n} agent + node_exporter pairs side by side (own namespace, 101 links each): median (min..max)");
    println!(
                "  preflight {a:.3}% ({alo:.3}..{ahi:.3})  node_exporter {b:.3}% ({blo:.3}..{bhi:.3})  ratio {:.0}x",
                b / a
            );
    (a, b)
}

/// Cable pull -> no-go, preflight vs Prometheus: `boots` repetitions (one VM
/// boot each); per boot and interval the median and p99 over its pulls, then
/// the median of those over the boots with their spread, and the pooled
/// figures over every pull.
/// Returns per interval (seconds, preflight median, preflight p99, Prometheus
/// median, Prometheus p99), each the median over boots, ms.
fn vm_compare_report(
    bin: &str,
    plan: &[(u64, usize)],
    boots: usize,
    bonds: usize,
) -> Vec<(u64, f64, f64, f64, f64)> {
    let mut per_boot: Vec<Vec<vm_compare::Series>> = Vec::new();
    for boot in 0..boots {
        let r = vm_compare::run(bin, plan, bonds);
        for (interval, pre, pro) in &r {
            let (a50, a99, _, _) = stats(pre.clone());
            let (b50, b99, _, _) = stats(pro.clone());
            println!(
                "  boot {} interval {interval:>2} s, {} pulls: preflight median {a50:.0} ms p99 {a99:.0} | prometheus median {b50:.0} ms p99 {b99:.0}",
                boot + 1,
                pre.len()
            );
        }
        per_boot.push(r);
    }
    println!("cable pull -> no-go: preflight gate vs Prometheus alert on node_exporter (bonding), {boots} boots, {bonds} bonds pulled concurrently:");
    let mut out = Vec::new();
    for (k, &(interval, _)) in plan.iter().enumerate() {
        let over = |f: &dyn Fn(&vm_compare::Series) -> f64| {
            let (m, _, lo, hi) = stats(per_boot.iter().map(|b| f(&b[k])).collect());
            format!("{m:.0} ({lo:.0}..{hi:.0})")
        };
        let med = |f: &dyn Fn(&vm_compare::Series) -> f64| {
            stats(per_boot.iter().map(|b| f(&b[k])).collect()).0
        };
        out.push((
            interval,
            med(&|r| stats(r.1.clone()).0),
            med(&|r| stats(r.1.clone()).1),
            med(&|r| stats(r.2.clone()).0),
            med(&|r| stats(r.2.clone()).1),
        ));
        let pooled = |pick: &dyn Fn(&vm_compare::Series) -> &Vec<f64>| {
            stats(per_boot.iter().flat_map(|b| pick(&b[k]).clone()).collect())
        };
        let (pa50, pa99, _, _) = pooled(&|r| &r.1);
        let (pb50, pb99, _, _) = pooled(&|r| &r.2);
        let n: usize = per_boot.iter().map(|b| b[k].1.len()).sum();
        println!("  Prometheus scrape+eval {interval:>2} s ({n} pulls):");
        println!(
            "    preflight  median {} ms  p99 {} ms   (median over boots (min..max))",
            over(&|r| stats(r.1.clone()).0),
            over(&|r| stats(r.1.clone()).1)
        );
        println!(
            "    prometheus median {} ms  p99 {} ms",
            over(&|r| stats(r.2.clone()).0),
            over(&|r| stats(r.2.clone()).1)
        );
        println!(
            "    pooled: preflight {pa50:.0} / {pa99:.0} ms, prometheus {pb50:.0} / {pb99:.0} ms (median / p99); ratio of medians {:.0}x, of p99s {:.0}x",
            pb50 / pa50,
            pb99 / pa99
        );
    }
    out
}

/// Aggregator under load for each fleet size in `nodes_list`; returns per
/// size (nodes, accepted reports/s, gate rack p99 ms, RSS MiB), medians.
fn load_report(
    bin: &str,
    nodes_list: &str,
    seconds: u64,
    reps: usize,
) -> Vec<(usize, f64, f64, f64)> {
    let mut out = Vec::new();
    for nodes in nodes_list
        .split(',')
        .filter_map(|n| n.parse::<usize>().ok())
    {
        let mut rows = Vec::new();
        for rep in 0..reps {
            let r = load::run(bin, nodes, seconds, 64);
            println!(
                "  {nodes} nodes rep {}: offered {:.0}/s accepted {:.0}/s (full {:.0}/s) errors {} | gate rack p50 {:.2} ms p99 {:.2} ms | gate all p50 {:.2} ms p99 {:.2} ms | RSS {:.1} MiB | db {:.1} MiB",
                rep + 1, r.offered_per_s, r.accepted_per_s, r.full_per_s, r.errors, r.gate_rack_p50_ms, r.gate_rack_p99_ms,
                r.gate_all_p50_ms, r.gate_all_p99_ms, r.rss_mib, r.db_bytes as f64 / 1_048_576.0
            );
            if r.rss_samples.len() > 2 {
                let line: Vec<String> = r
                    .rss_samples
                    .iter()
                    .step_by((r.rss_samples.len() / 10).max(1))
                    .map(|(t, kib)| format!("{t:.0}s {:.0}", *kib as f64 / 1024.0))
                    .collect();
                println!(
                    "    aggregator RSS MiB over the window: {}",
                    line.join(", ")
                );
            }
            rows.push(r);
        }
        let med = |f: &dyn Fn(&load::LoadResult) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            let (m, _, lo, hi) = stats(std::mem::take(&mut v));
            format!("{m:.2} ({lo:.2}..{hi:.2})")
        };
        println!(
            "aggregator, {nodes} simulated nodes, {reps} reps of {seconds} s (median (min..max)):"
        );
        println!(
            "  accepted reports/s   {}  of {:.0} offered",
            med(&|r| r.accepted_per_s),
            rows[0].offered_per_s
        );
        println!(
            "  gate p50 / p99, rack scope (1%)   {} / {} ms",
            med(&|r| r.gate_rack_p50_ms),
            med(&|r| r.gate_rack_p99_ms)
        );
        println!(
            "  gate p50 / p99, whole fleet       {} / {} ms",
            med(&|r| r.gate_all_p50_ms),
            med(&|r| r.gate_all_p99_ms)
        );
        println!("  aggregator RSS MiB   {}", med(&|r| r.rss_mib));
        let m = |f: &dyn Fn(&load::LoadResult) -> f64| stats(rows.iter().map(f).collect()).0;
        out.push((
            nodes,
            m(&|r| r.accepted_per_s),
            m(&|r| r.gate_rack_p99_ms),
            m(&|r| r.rss_mib),
        ));
        #[allow(clippy::cast_precision_loss)]
        let db = med(&|r| r.db_bytes as f64 / 1_048_576.0);
        println!("  SQLite file MiB      {db}");
        let growth: Vec<f64> = rows
            .iter()
            .filter_map(|r| load::growth_per_day(&r.db_samples))
            .collect();
        if growth.is_empty() {
            println!("  SQLite growth        not measured (window under 20 s)");
        } else {
            let n = growth.len();
            let (m, _, lo, hi) = stats(growth);
            println!(
                "  SQLite growth        {:.1} MiB/day ({:.1}..{:.1}), second half of the window extrapolated, {n} reps",
                m / 1_048_576.0,
                lo / 1_048_576.0,
                hi / 1_048_576.0
            );
        }
    }
    out
}

/// Every comparison in one run, then one table of preflight against what
/// operators run today. `--quick` is the smoke pass CI runs (tiny sizes,
/// one repetition: its figures mean nothing).
fn all(bin: &str, quick: bool) {
    let (reps, boots, pulls, idle_s, nodes, load_s) = if quick {
        (1, 1, 2, 2, "500", 3)
    } else {
        (5, 5, 30, 600, "10000,100000", 20)
    };
    netns_latency(if quick { 20 } else { 200 }, reps);
    watch_rss(bin, if quick { 1 } else { 3 }, reps);
    let vm = vm_compare_report(bin, &[(1, pulls), (15, pulls)], boots, 3);
    let fp = footprint_report(
        bin,
        reps,
        if quick {
            (Duration::from_secs(2), Duration::from_secs(2))
        } else {
            (Duration::from_secs(30), Duration::from_secs(15))
        },
        if quick { 20 } else { 1000 },
    );
    let idle = idle_report(bin, if quick { 2 } else { 5 }, idle_s);
    let load = load_report(bin, nodes, load_s, reps);
    ovs::report(
        bin,
        if quick { 4 } else { 100 },
        reps,
        Duration::from_secs(if quick { 2 } else { 10 }),
    );
    println!();
    println!("| measure (median of repetitions) | preflight | today's alternative | ratio |");
    println!("|---|---|---|---|");
    for (interval, a50, a99, b50, b99) in vm {
        println!(
            "| cable pull -> no-go, median / p99 (Prometheus {interval} s) | {a50:.0} / {a99:.0} ms | {b50:.0} / {b99:.0} ms (node_exporter + Prometheus) | {:.0}x / {:.0}x |",
            b50 / a50,
            b99 / a99
        );
    }
    for (label, a, b) in fp {
        println!(
            "| {label} | {a:.3} | {b:.3} (node_exporter) | {:.1}x |",
            b / a
        );
    }
    println!(
        "| CPU % idle over {idle_s} s, scraped 1/s | {:.3} | {:.3} (node_exporter) | {:.0}x |",
        idle.0,
        idle.1,
        idle.1 / idle.0
    );
    for (n, accepted, p99, rss) in load {
        println!("| aggregator, {n} nodes: reports/s, gate rack p99, RSS | {accepted:.0}/s, {p99:.2} ms, {rss:.0} MiB | - | - |");
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
        Bench::All { bin, quick } => all(&absolute(&bin.bin), quick),
        Bench::NetnsLatency { toggles, reps } => netns_latency(toggles, reps),
        Bench::WatchRss { bin, seconds, reps } => watch_rss(&absolute(&bin.bin), seconds, reps),
        Bench::Footprint {
            bin,
            reps,
            idle,
            storm,
            scrapes,
        } => {
            footprint_report(
                &absolute(&bin.bin),
                reps,
                (Duration::from_secs(idle), Duration::from_secs(storm)),
                scrapes,
            );
        }
        Bench::IdleCpu {
            bin,
            instances,
            seconds,
        } => {
            idle_report(&absolute(&bin.bin), instances, seconds);
        }
        Bench::VmCompare {
            bin,
            intervals,
            pulls,
            boots,
            bonds,
        } => {
            let plan: Vec<(u64, usize)> = intervals.into_iter().zip(pulls).collect();
            let _ = vm_compare_report(&absolute(&bin.bin), &plan, boots, bonds);
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
        } => {
            let _ = load_report(&absolute(&bin.bin), &nodes, seconds, reps);
        }
    }
}
