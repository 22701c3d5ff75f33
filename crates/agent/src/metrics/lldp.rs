//! The LLDP listener's counters: read from its [`Stats`] at each scrape, so
//! a flood of malformed frames shows even while the node's state is still.

use std::sync::{Arc, PoisonError};

use preflight_probe::lldp::listen::Stats;
use prometheus::{IntCounterVec, Opts};

use super::AgentMetrics;

/// `preflight_lldp_frames_dropped_total`.
pub(super) fn dropped() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "preflight_lldp_frames_dropped_total",
            "LLDP frames a bond member's listener dropped, by reason: `malformed` (not a valid LLDPDU), `rate_limited` (over its budget of frames per second).",
        ),
        &["member", "reason"],
    )
    .expect("valid metric")
}

impl AgentMetrics {
    /// Follows the LLDP listener's counters from now on.
    pub fn follow_lldp(&self, stats: Arc<Stats>) {
        *self
            .lldp_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Brings the counters up to the listener's counts.
    pub(super) fn apply_lldp(&self) {
        let stats = self
            .lldp_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(stats) = stats else { return };
        for (member, c) in stats.by_member() {
            for (reason, now) in [("malformed", c.malformed), ("rate_limited", c.limited)] {
                let counter = self.lldp_dropped.with_label_values(&[&member, reason]);
                // The listener owns the counts; the counter follows their increase.
                if now > counter.get() {
                    counter.inc_by(now - counter.get());
                }
            }
        }
    }
}
