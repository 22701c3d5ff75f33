//! Where the machine's boot clock was when a waiver was granted: stored
//! with the waiver, so that a restart on the same boot can tell how long
//! has really passed whatever the wall clock says (the aggregator's
//! `clock` module decides what a waiver has left from it).

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
