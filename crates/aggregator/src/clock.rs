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

// Where the boot clock was when a waiver was granted: a stored datum, so it
// lives with the store.
pub use preflight_store::BootAnchor;

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

/// What a stored waiver is at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Still in force for this long.
    Left(Duration),
    /// Ended now: its `waiver.expire` entry is dated `at`, never before
    /// the waiver's creation (a wall clock that moved backwards would
    /// otherwise date it so); `why` says why, for the log.
    Ended {
        /// When the expiry is recorded: the later of now and its creation.
        at: SystemTime,
        /// Why it ended.
        why: String,
    },
}

/// Restores a waiver at `wall` (see [`waiver_left`]); `last_up`: the last
/// moment the aggregator is known to have been running before this start
/// (its newest stored report), so that "fell due while the aggregator was
/// down" is said only of a waiver whose expiry came after it.
#[must_use]
pub fn restore_waiver(
    created_at: SystemTime,
    expires_at: SystemTime,
    anchor: Option<&BootAnchor>,
    now: Option<&BootAnchor>,
    wall: SystemTime,
    last_up: Option<SystemTime>,
) -> Restored {
    let left = waiver_left(created_at, expires_at, anchor, now, wall);
    if !left.is_zero() {
        return Restored::Left(left);
    }
    let at = wall.max(created_at);
    let why = if wall < created_at {
        format!(
            "its length ran out on the boot clock; the wall clock moved backwards: it reads {}, before the waiver's creation at {}",
            preflight_model::time::format(wall),
            preflight_model::time::format(created_at)
        )
    } else if wall < expires_at {
        // The boot clock ended it before the wall clock says: it was granted
        // while the wall clock was ahead.
        format!(
            "its length ran out on the boot clock before its expiry on the wall clock ({}): the wall clock moved backwards since it was granted",
            preflight_model::time::format(expires_at)
        )
    } else if !granted_passed(created_at, expires_at, anchor, now) {
        format!(
            "the wall clock ({}) is past its expiry, though its length has not passed on the boot clock: the wall clock moved forward since it was granted (or was behind then)",
            preflight_model::time::format(wall)
        )
    } else if last_up.is_some_and(|up| expires_at <= up) {
        format!(
            "it fell due at {} while the aggregator was still running (up until at least {}); its end had not been recorded",
            preflight_model::time::format(expires_at),
            last_up.map_or_else(String::new, preflight_model::time::format)
        )
    } else {
        "it fell due while the aggregator was down".to_owned()
    };
    Restored::Ended { at, why }
}

/// Whether the waiver's granted length has passed by the boot clock. Only
/// the same boot tells: after a reboot (or without a boot clock) the time
/// the machine was down is unknown, and the wall clock is all there is.
fn granted_passed(
    created_at: SystemTime,
    expires_at: SystemTime,
    anchor: Option<&BootAnchor>,
    now: Option<&BootAnchor>,
) -> bool {
    let granted = expires_at.duration_since(created_at).unwrap_or_default();
    match (anchor, now) {
        (Some(a), Some(n)) if a.boot_id == n.boot_id => {
            u128::try_from(n.boot_ms - a.boot_ms).is_ok_and(|p| p >= granted.as_millis())
        }
        _ => true,
    }
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

    fn ended(r: Restored) -> (SystemTime, String) {
        match r {
            Restored::Ended { at, why } => (at, why),
            Restored::Left(l) => panic!("still in force for {l:?}"),
        }
    }

    #[test]
    fn an_expiry_is_never_dated_before_the_creation() {
        // Granted for 1 s while the wall clock was an hour ahead; restarted
        // on the same boot 2 s later with the clock put right.
        let (when, why) = ended(restore_waiver(
            at(3600),
            at(3601),
            anchor("b", 0).as_ref(),
            anchor("b", 2_000).as_ref(),
            at(2),
            Some(at(3600)),
        ));
        assert_eq!(when, at(3600));
        assert!(why.contains("moved backwards"), "{why}");
        assert!(!why.contains("while the aggregator was down"), "{why}");
    }

    #[test]
    fn fell_due_while_down_only_when_it_did() {
        // Really fell due while down: 10 s granted, up until t=5, now t=20.
        let (when, why) = ended(restore_waiver(
            at(0),
            at(10),
            anchor("b", 0).as_ref(),
            anchor("b", 20_000).as_ref(),
            at(20),
            Some(at(5)),
        ));
        assert_eq!(when, at(20));
        assert_eq!(why, "it fell due while the aggregator was down");
        // Granted while the clock was an hour behind: the wall clock ends
        // it early, and says so.
        let (_, why) = ended(restore_waiver(
            at(0),
            at(600),
            anchor("b", 0).as_ref(),
            anchor("b", 20_000).as_ref(),
            at(3600),
            Some(at(3590)),
        ));
        assert!(why.contains("moved forward"), "{why}");
        // Fell due before the aggregator stopped (its end not recorded).
        let (_, why) = ended(restore_waiver(
            at(0),
            at(10),
            anchor("b", 0).as_ref(),
            anchor("b", 60_000).as_ref(),
            at(60),
            Some(at(30)),
        ));
        assert!(why.contains("still running"), "{why}");
        // After a reboot the downtime is unknown: the wall clock decides.
        let (_, why) = ended(restore_waiver(
            at(0),
            at(600),
            anchor("old", 0).as_ref(),
            anchor("new", 20_000).as_ref(),
            at(3600),
            Some(at(5)),
        ));
        assert_eq!(why, "it fell due while the aggregator was down");
    }
}
