//! The repeated runs behind each comparison and `all`'s table: each
//! `*_report` runs one bench `reps` times (or `boots` VM boots), prints every
//! repetition and returns the medians that the table puts beside today's
//! alternative (node_exporter, Prometheus).

use std::time::Duration;

use crate::{footprint, load, netns_latency, stats, vm_compare, watch_rss};

/// Agent vs node_exporter footprint, `reps` repetitions; returns the
/// median rows (label, preflight, node_exporter).
pub(crate) fn footprint_report(
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
pub(crate) fn idle_report(bin: &str, n: usize, secs: u64) -> (f64, f64) {
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
pub(crate) fn vm_compare_report(
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

/// Aggregator under load for each fleet size in `nodes_list` and each store
/// in `databases` (`sqlite`, `postgres`: repetitions interleaved, so both
/// see the same machine); returns per size (nodes, accepted reports/s, gate
/// rack p99 ms, RSS MiB), medians, of the first store listed.
/// How a variant's aggregator threads are named in the output.
fn threads_label(threads: Option<usize>) -> String {
    threads.map_or_else(String::new, |n| format!(", {n} thread(s)"))
}

/// Parses `--threads`: comma-separated counts, empty for the aggregator's
/// own default.
///
/// # Panics
/// A count that is not a number from 1 to 64.
pub(crate) fn parse_threads(list: &str) -> Vec<Option<usize>> {
    if list.trim().is_empty() {
        return vec![None];
    }
    list.split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(n @ 1..=64) => Some(n),
            _ => panic!("--threads: `{n}` is not a number of threads from 1 to 64"),
        })
        .collect()
}

/// What an aggregator-load report compares, interleaved in each repetition:
/// stores (`sqlite,postgres`), TLS (`off`, `on`, `both`) and the
/// aggregator's thread counts ([`parse_threads`]).
pub(crate) struct Matrix<'a> {
    pub databases: &'a str,
    pub tls: &'a str,
    pub threads: &'a [Option<usize>],
}

pub(crate) fn load_report(
    bin: &str,
    nodes_list: &str,
    seconds: u64,
    reps: usize,
    matrix: &Matrix<'_>,
    opts: load::LoadOptions,
) -> Vec<(usize, f64, f64, f64)> {
    let (databases, tls, threads) = (matrix.databases, matrix.tls, matrix.threads);
    let wanted: Vec<&str> = databases.split(',').map(str::trim).collect();
    for d in &wanted {
        assert!(
            matches!(*d, "sqlite" | "postgres"),
            "--database: `{d}` is neither sqlite nor postgres"
        );
    }
    let tls_modes: &[bool] = match tls {
        "off" => &[false],
        "on" => &[true],
        "both" => &[false, true],
        other => panic!("--tls: `{other}` is not off, on or both"),
    };
    // Every store with every TLS mode, interleaved within each repetition.
    let variants: Vec<(&str, bool, Option<usize>)> = wanted
        .iter()
        .flat_map(|d| tls_modes.iter().map(move |t| (*d, *t)))
        .flat_map(|(d, t)| threads.iter().map(move |n| (d, t, *n)))
        .collect();
    // One throwaway cluster for the whole report, a new database per run.
    let pg = wanted
        .contains(&"postgres")
        .then(preflight_tests::pg::Pg::start);
    let mut run_no = 0usize;
    let mut out = Vec::new();
    for nodes in nodes_list
        .split(',')
        .filter_map(|n| n.parse::<usize>().ok())
    {
        let mut rows: Vec<Vec<load::LoadResult>> = variants.iter().map(|_| Vec::new()).collect();
        let mut loads: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for (k, (d, tls, threads)) in variants.iter().enumerate() {
                run_no += 1;
                let store = match (*d, &pg) {
                    ("postgres", Some(pg)) => load::Store::Postgres(pg, format!("load{run_no}")),
                    _ => load::Store::Sqlite,
                };
                let opts = load::LoadOptions {
                    tls: *tls,
                    threads: *threads,
                    ..opts
                };
                let r = load::run(bin, nodes, seconds, 64, &store, opts);
                let la = load_average();
                println!(
                    "  {}{}{} {nodes} nodes rep {}: offered {:.0}/s accepted {:.0}/s (full {:.0}/s) errors {} | gate rack p50 {:.2} ms p99 {:.2} ms (parsed p99 {:.2}) | ad-hoc rack p50 {:.2} p99 {:.2} ms | gate all p50 {:.2} ms p99 {:.2} ms (parsed p99 {:.2}) | all ready=false p50 {:.2} p99 {:.2} ms | /healthz p50 {:.2} p99 {:.2} ms | RSS {:.1} MiB | CPU {:.1}% | conns held {:.0} (min {:.0}) | db {:.1} MiB | load avg {la:.2}",
                    store.name(), if *tls { " TLS" } else { "" }, threads_label(*threads), rep + 1, r.offered_per_s, r.accepted_per_s, r.full_per_s, r.errors, r.gate_rack_p50_ms, r.gate_rack_p99_ms, r.gate_rack_parsed_p99_ms, r.gate_adhoc_p50_ms, r.gate_adhoc_p99_ms,
                    r.gate_all_p50_ms, r.gate_all_p99_ms, r.gate_all_parsed_p99_ms, r.gate_all_short_p50_ms, r.gate_all_short_p99_ms, r.floor_p50_ms, r.floor_p99_ms, r.rss_mib, r.cpu_pct, r.conns_median, r.conns_min, r.db_bytes as f64 / 1_048_576.0
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
                rows[k].push(r);
                loads[k].push(la);
            }
        }
        for (k, (d, tls, threads)) in variants.iter().enumerate() {
            let rows = &rows[k];
            let name = match (*d, *tls) {
                ("postgres", false) => "PostgreSQL",
                ("postgres", true) => "PostgreSQL, TLS",
                (_, false) => "SQLite",
                (_, true) => "SQLite, TLS",
            };
            let name = format!("{name}{}", threads_label(*threads));
            summary(nodes, &name, rows, seconds);
            let samples: Vec<&load::GateSamples> = rows.iter().map(|r| &r.gate_ms).collect();
            let [rack, adhoc, all, short, floor] = load::pooled(&samples);
            println!(
                "  gate p50 / p99 over every rep's questions together: rack {:.2} / {:.2} ms ({} questions); ad-hoc rack {:.2} / {:.2} ms; whole fleet {:.2} / {:.2} ms ({}); whole fleet, ready=false {:.2} / {:.2} ms; /healthz {:.2} / {:.2} ms ({})",
                rack.0, rack.1, rack.2, adhoc.0, adhoc.1, all.0, all.1, all.2, short.0, short.1, floor.0, floor.1, floor.2
            );
            let (m, _, lo, hi) = stats(loads[k].clone());
            println!("  load average (1 min) after each rep {m:.2} ({lo:.2}..{hi:.2})");
            if k == 0 {
                let m =
                    |f: &dyn Fn(&load::LoadResult) -> f64| stats(rows.iter().map(f).collect()).0;
                out.push((
                    nodes,
                    m(&|r| r.accepted_per_s),
                    m(&|r| r.gate_rack_p99_ms),
                    m(&|r| r.rss_mib),
                ));
            }
        }
    }
    out
}

/// The 1-minute load average of the machine.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Medians (min..max) of one fleet size on one store.
fn summary(nodes: usize, store: &str, rows: &[load::LoadResult], seconds: u64) {
    let reps = rows.len();
    let med = |f: &dyn Fn(&load::LoadResult) -> f64| {
        let (m, _, lo, hi) = stats(rows.iter().map(f).collect());
        format!("{m:.2} ({lo:.2}..{hi:.2})")
    };
    println!(
        "aggregator on {store}, {nodes} simulated nodes, {reps} reps of {seconds} s (median (min..max)):"
    );
    println!(
        "  accepted reports/s   {}  of {:.0} offered",
        med(&|r| r.accepted_per_s),
        rows[0].offered_per_s
    );
    println!("  report errors        {}", med(&|r| r.errors as f64));
    println!(
        "  gate p50 / p99, rack scope (1%, in aggregator.scopes)   {} / {} ms",
        med(&|r| r.gate_rack_p50_ms),
        med(&|r| r.gate_rack_p99_ms)
    );
    println!(
        "  gate p50 / p99, ad-hoc rack (1%, not configured)   {} / {} ms",
        med(&|r| r.gate_adhoc_p50_ms),
        med(&|r| r.gate_adhoc_p99_ms)
    );
    println!(
        "  gate p50 / p99, whole fleet       {} / {} ms",
        med(&|r| r.gate_all_p50_ms),
        med(&|r| r.gate_all_p99_ms)
    );
    println!(
        "  gate p50 / p99, whole fleet, ready=false   {} / {} ms",
        med(&|r| r.gate_all_short_p50_ms),
        med(&|r| r.gate_all_short_p99_ms)
    );
    println!(
        "  /healthz p50 / p99 on the same connection (the floor: no fleet work)   {} / {} ms",
        med(&|r| r.floor_p50_ms),
        med(&|r| r.floor_p99_ms)
    );
    println!(
        "  gate p99 received and parsed: rack {} ms, whole fleet {} ms",
        med(&|r| r.gate_rack_parsed_p99_ms),
        med(&|r| r.gate_all_parsed_p99_ms)
    );
    println!("  aggregator RSS MiB   {}", med(&|r| r.rss_mib));
    println!("  aggregator CPU % of one core   {}", med(&|r| r.cpu_pct));
    println!(
        "  client connections held (sockets; median of 5 s samples / minimum)   {} / {}",
        med(&|r| r.conns_median),
        med(&|r| r.conns_min)
    );
    let db = med(&|r| r.db_bytes as f64 / 1_048_576.0);
    if !store.starts_with("SQLite") {
        println!("  database MiB         {db} (pg_database_size)");
        return;
    }
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

/// Every comparison in one run, then one table of preflight against what
/// operators run today. `--quick` is the smoke pass CI runs (tiny sizes,
/// one repetition: its figures mean nothing).
pub(crate) fn all(bin: &str, quick: bool) {
    let (reps, boots, pulls, idle_s, nodes, load_s) = if quick {
        (1, 1, 2, 2, "500", 3)
    } else {
        (5, 5, 30, 600, "10000,100000", 20)
    };
    netns_latency(
        if quick { 20 } else { 200 },
        reps,
        Duration::from_millis(crate::NETNS_GAP_MS),
    );
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
    let load = load_report(
        bin,
        nodes,
        load_s,
        reps,
        &Matrix {
            databases: "sqlite",
            tls: "off",
            threads: &[None],
        },
        load::LoadOptions::default(),
    );
    crate::ovs::report(
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
