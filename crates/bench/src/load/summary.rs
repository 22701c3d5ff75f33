//! What the load bench makes of its samples: percentiles, the reps'
//! questions pooled, SQLite growth, and one-line summaries of the
//! aggregator's own metrics.

pub(super) fn pctl(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::percentile(v, p)
}

/// Answer times (ms) of one window, by question.
#[derive(Debug, Clone, Default)]
pub struct GateSamples {
    pub rack: Vec<f64>,
    pub adhoc: Vec<f64>,
    pub all: Vec<f64>,
    pub short: Vec<f64>,
    /// `GET /healthz` on the prober's connection: the floor.
    pub floor: Vec<f64>,
}

/// Percentiles over the questions of every rep together: (p50, p99,
/// questions) for the rack, the ad-hoc rack, the whole fleet, the whole
/// fleet with `ready=false` and `/healthz`.
#[must_use]
pub fn pooled(reps: &[&GateSamples]) -> [(f64, f64, usize); 5] {
    let kinds: [fn(&GateSamples) -> &Vec<f64>; 5] = [
        |g| &g.rack,
        |g| &g.adhoc,
        |g| &g.all,
        |g| &g.short,
        |g| &g.floor,
    ];
    kinds.map(|kind| {
        let mut v: Vec<f64> = reps.iter().flat_map(|g| kind(g)).copied().collect();
        let n = v.len();
        (pctl(&mut v, 50.0), pctl(&mut v, 99.0), n)
    })
}

/// SQLite growth extrapolated to a day from the second half of the steady
/// window (the WAL fills to its checkpoint size first, then is reused).
pub fn growth_per_day(samples: &[(f64, u64)]) -> Option<f64> {
    let (t_end, b_end) = *samples.last()?;
    let (t_mid, b_mid) = *samples.iter().find(|(t, _)| *t >= t_end / 2.0)?;
    (t_end > t_mid).then(|| (b_end as f64 - b_mid as f64) / (t_end - t_mid) * 86_400.0)
}

/// `preflight_aggregator_nodes` by state, as `state count` pairs.
pub(super) fn nodes_line(metrics: &str) -> String {
    let pairs: Vec<String> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("preflight_aggregator_nodes{state=\"")?;
            let (state, value) = rest.split_once("\"} ")?;
            Some(format!("{state} {}", value.trim()))
        })
        .collect();
    pairs.join(", ")
}

/// The aggregator's replica reload histograms, summed up in one line.
pub(super) fn reload_line(metrics: &str) -> String {
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mean_ms = |sum: f64, n: f64| if n > 0.0 { sum / n * 1000.0 } else { 0.0 };
    let (all_n, all_s) = (
        value("preflight_aggregator_replica_reload_seconds_count{scope=\"all\"}"),
        value("preflight_aggregator_replica_reload_seconds_sum{scope=\"all\"}"),
    );
    let (lock_n, lock_s) = (
        value("preflight_aggregator_replica_reload_lock_seconds_count"),
        value("preflight_aggregator_replica_reload_lock_seconds_sum"),
    );
    if all_n.is_nan() {
        return "replica reloads: not in this aggregator's metrics (a build before they were added)"
            .into();
    }
    format!(
        "replica reloads of everything: {all_n} (mean {:.1} ms); fleet write lock taken by a reload {lock_n} times (mean hold {:.1} ms)",
        mean_ms(all_s, all_n),
        mean_ms(lock_s, lock_n)
    )
}

/// Bytes of the SQLite store of a run (the file and its WAL).
pub(super) fn db_size(dir: &std::path::Path) -> u64 {
    ["load.db", "load.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_line_lists_the_gate_states() {
        let m = "# HELP preflight_aggregator_nodes Nodes.\npreflight_aggregator_nodes{state=\"go\"} 90\npreflight_aggregator_nodes{state=\"no-go\"} 10\npreflight_aggregator_node_blocked{node=\"n1\"} 1\n";
        assert_eq!(super::nodes_line(m), "go 90, no-go 10");
    }

    #[test]
    fn pooled_percentiles_take_every_reps_questions_together() {
        let a = super::GateSamples {
            rack: (1..=50).map(f64::from).collect(),
            ..Default::default()
        };
        let b = super::GateSamples {
            rack: (51..=100).map(f64::from).collect(),
            all: vec![7.0],
            ..Default::default()
        };
        let [rack, adhoc, all, _, _] = super::pooled(&[&a, &b]);
        // 100 answers 1..=100 ms: p50 and p99 of them all, not of a rep.
        assert_eq!(rack, (51.0, 99.0, 100));
        assert_eq!(all, (7.0, 7.0, 1));
        assert_eq!(adhoc.2, 0);
        assert!(adhoc.1.is_nan());
    }

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
