//! The aggregator's two clocks. The wall clock is what people read and what
//! waivers are written in; it can be wrong after a restart (no NTP yet, a
//! stepped clock), so a waiver's life is also anchored to the kernel's boot
//! clock (`CLOCK_BOOTTIME`, monotonic across process restarts, counting
//! suspend): restored on the same boot, a waiver ends when its granted
//! length has passed on that clock, whatever the wall clock says.
//!
//! `PREFLIGHT_TEST_CLOCK_OFFSET` (e.g. `-60s`) shifts this process's wall
//! clock; the restart tests use it to play a clock that is behind. It is
//! read once, at first use.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The environment variable that shifts the wall clock (tests only).
pub const OFFSET_ENV: &str = "PREFLIGHT_TEST_CLOCK_OFFSET";

fn offset() -> (bool, Duration) {
    static OFFSET: OnceLock<(bool, Duration)> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let Ok(v) = std::env::var(OFFSET_ENV) else {
            return (false, Duration::ZERO);
        };
        let (behind, text) = v
            .strip_prefix('-')
            .map_or((false, v.as_str()), |t| (true, t));
        match humantime::parse_duration(text) {
            Ok(d) => {
                tracing::warn!(offset = %v, "wall clock shifted by {OFFSET_ENV} (tests only)");
                (behind, d)
            }
            Err(e) => {
                tracing::error!(offset = %v, error = %e, "{OFFSET_ENV} ignored");
                (false, Duration::ZERO)
            }
        }
    })
}

/// The wall clock (shifted by [`OFFSET_ENV`] when set).
#[must_use]
pub fn wall() -> SystemTime {
    let now = SystemTime::now();
    match offset() {
        (_, d) if d.is_zero() => now,
        (true, d) => now.checked_sub(d).unwrap_or(now),
        (false, d) => now.checked_add(d).unwrap_or(now),
    }
}

/// A point on this machine's boot clock: the kernel's boot id and the time
/// since that boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAnchor {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// Milliseconds of `CLOCK_BOOTTIME`.
    pub boot_ms: i64,
}

impl BootAnchor {
    /// Now, or `None` when the boot id or the clock cannot be read (then
    /// waivers fall back to the wall clock, never extended).
    #[must_use]
    pub fn now() -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
        let ms = t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000;
        Some(Self {
            boot_id: boot_id.trim().to_owned(),
            boot_ms: ms,
        })
    }
}

/// How long a waiver has left, restored at `wall` with the boot clock at
/// `now` (`anchor`: where the boot clock was when it was granted). Never more
/// than the wall clock gives, and never more than its granted length minus
/// the time that certainly passed: on the same boot, the boot clock's
/// elapsed time; on another boot, at least the new boot's uptime. A wall
/// clock that is behind therefore never revives or extends a waiver.
#[must_use]
pub fn waiver_left(
    created_at: SystemTime,
    expires_at: SystemTime,
    anchor: Option<&BootAnchor>,
    now: Option<&BootAnchor>,
    wall: SystemTime,
) -> Duration {
    let by_wall = expires_at.duration_since(wall).unwrap_or_default();
    let granted = expires_at.duration_since(created_at).unwrap_or_default();
    let passed = match (anchor, now) {
        (Some(a), Some(n)) if a.boot_id == n.boot_id => {
            Duration::from_millis(u64::try_from(n.boot_ms - a.boot_ms).unwrap_or(0))
        }
        (_, Some(n)) => Duration::from_millis(u64::try_from(n.boot_ms).unwrap_or(0)),
        // No boot clock now: all that is known is the wall clock, which the
        // unit orders after time-sync.target.
        (_, None) => Duration::ZERO,
    };
    by_wall.min(granted.saturating_sub(passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn anchor(boot: &str, ms: i64) -> Option<BootAnchor> {
        Some(BootAnchor {
            boot_id: boot.into(),
            boot_ms: ms,
        })
    }

    #[test]
    fn a_clock_behind_never_revives_a_waiver() {
        // Granted for 3 s at t=0 (boot clock 10 s); restarted when the boot
        // clock reads 16 s, with the wall clock 60 s behind.
        let left = waiver_left(
            at(0),
            at(3),
            anchor("b", 10_000).as_ref(),
            anchor("b", 16_000).as_ref(),
            at(6) - Duration::from_secs(60),
        );
        assert_eq!(left, Duration::ZERO);
    }

    #[test]
    fn same_boot_counts_the_boot_clock() {
        let left = waiver_left(
            at(0),
            at(100),
            anchor("b", 10_000).as_ref(),
            anchor("b", 40_000).as_ref(),
            at(0),
        );
        assert_eq!(left, Duration::from_secs(70));
    }

    #[test]
    fn another_boot_counts_at_least_its_uptime() {
        let left = waiver_left(
            at(0),
            at(100),
            anchor("old", 10_000).as_ref(),
            anchor("new", 30_000).as_ref(),
            at(0) - Duration::from_secs(3600),
        );
        assert_eq!(left, Duration::from_secs(70));
        // Without an anchor (a waiver stored by an older preflight), too.
        let left = waiver_left(at(0), at(100), None, anchor("new", 30_000).as_ref(), at(10));
        assert_eq!(left, Duration::from_secs(70));
    }

    #[test]
    fn the_wall_clock_can_only_shorten() {
        let left = waiver_left(
            at(0),
            at(100),
            anchor("b", 0).as_ref(),
            anchor("b", 1_000).as_ref(),
            at(90),
        );
        assert_eq!(left, Duration::from_secs(10));
    }
}
