//! When the watch publishes its snapshot: the one pacer between a netlink
//! message and a finding (the agent evaluates every publication at once).
//! Every message is applied to the watch's own snapshot as it arrives; the
//! published copy (a clone of the whole snapshot, then evaluated by the
//! agent) is refreshed at once after a quiet period and at most once per
//! window during a burst ([`Pacer`]),
//! because cloning and evaluating a hundred interfaces per message was most
//! of the agent's CPU in a flap storm. When changes came in nearly every
//! window of the last second (a storm, not a burst: [`STORM_SPAN`],
//! [`STORM_SHARE`]), the window widens to
//! [`crate::WatchConfig::storm_coalesce`]; a change after a quiet window is
//! still published at once. One kind of change skips every window
//! ([`Urgency`]): a link that had kept its carrier for [`STEADY`] and loses
//! it (a cable pull, a switch port going down) is published at once, within
//! a budget ([`URGENT_BURST`], [`URGENT_PER_SEC`]), so that a pull landing
//! just after another change (three bonds pulled together) or in the middle
//! of a storm does not wait for the window; a flapping link is not news and
//! waits like any other change.
//!
//! One event often sends several messages a few microseconds apart (`ip
//! link set w1 down` sends w1's message, then its veth peer's carrier loss;
//! a bond port going down sends the port's and the bond's). The messages
//! that follow a change after a quiet window within [`EVENT_SPAN`] are part
//! of that event and are published at once too, up to
//! [`EVENT_PUBLICATIONS`] publications in all: otherwise the message the
//! finding depends on could wait a whole window behind the one that opened
//! it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use preflight_model::Interface;

/// A link whose carrier has not changed for this long and then loses it is
/// published at once, inside the coalesce window.
pub const STEADY: Duration = Duration::from_secs(1);
/// How many such early publications may follow one another at once ...
pub const URGENT_BURST: f64 = 4.0;
/// ... and how many per second after that: a storm over many links then
/// costs at most this many publications a second on top of the window's.
pub const URGENT_PER_SEC: f64 = 4.0;

/// The span over which a storm is recognised: changes in at least
/// [`STORM_SHARE`] of the normal windows of the last [`STORM_SPAN`].
pub const STORM_SPAN: Duration = Duration::from_secs(1);
/// ... this share, in quarters (3/4: "nearly every window", so that a
/// pause of a few windows, as a flapping port or a busy sender makes, does
/// not end a storm).
pub const STORM_SHARE: u32 = 3;

/// Changes this soon after one that came after a quiet window belong to
/// the same event and are published at once ...
pub const EVENT_SPAN: Duration = Duration::from_millis(5);
/// ... up to this many publications for the event, the first included.
pub const EVENT_PUBLICATIONS: u32 = 3;

/// The publication window: the normal one, or the wide one during a storm.
#[derive(Debug)]
pub(crate) struct Pacer {
    normal: Duration,
    storm: Duration,
    /// The last publication.
    published: Instant,
    /// Windows are counted from here.
    epoch: Instant,
    /// Bit i: a change in the window i windows before `slot`.
    busy: u128,
    /// The window of the last change.
    slot: u128,
    /// How many windows make [`STORM_SPAN`] (at most 128; 0 without a
    /// normal window: never a storm).
    span: u32,
    /// The last change, and whether it came after a quiet normal window.
    last_change: Option<Instant>,
    after_quiet: bool,
    /// When the last change after a quiet window came (the event's start),
    /// and how many publications the event had.
    event: Option<Instant>,
    event_published: u32,
}

impl Pacer {
    /// A pacer whose first change is published at once.
    pub(crate) fn new(normal: Duration, storm: Duration, now: Instant) -> Self {
        let span = if normal.is_zero() {
            0
        } else {
            u32::try_from(STORM_SPAN.as_nanos() / normal.as_nanos())
                .unwrap_or(128)
                .clamp(1, 128)
        };
        Self {
            normal,
            // Never narrower than the normal window.
            storm: storm.max(normal),
            published: now.checked_sub(normal.max(storm)).unwrap_or(now),
            epoch: now,
            busy: 0,
            slot: 0,
            span,
            last_change: None,
            after_quiet: true,
            event: None,
            event_published: 0,
        }
    }

    fn slot_of(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.epoch).as_nanos() / self.normal.as_nanos().max(1)
    }

    /// `busy` as seen from the window of `t`.
    fn busy_at(&self, t: Instant) -> u128 {
        let shift = self.slot_of(t).saturating_sub(self.slot);
        if shift >= 128 {
            0
        } else {
            self.busy << shift
        }
    }

    /// A change was applied to the snapshot at `now`.
    pub(crate) fn change(&mut self, now: Instant) {
        self.after_quiet = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) > self.normal);
        if self.after_quiet {
            self.event = Some(now);
            self.event_published = 0;
        }
        self.busy = self.busy_at(now) | 1;
        self.slot = self.slot_of(now);
        self.last_change = Some(now);
    }

    /// Whether `now` is in a storm: changes in at least [`STORM_SHARE`] of
    /// the normal windows of the last [`STORM_SPAN`], the latest of them
    /// within a normal window of the one before (a change after a quiet
    /// window is news and is not held back).
    pub(crate) fn storm(&self, now: Instant) -> bool {
        if self.span == 0 || self.after_quiet {
            return false;
        }
        let mask = if self.span >= 128 {
            u128::MAX
        } else {
            (1u128 << self.span) - 1
        };
        (self.busy_at(now) & mask).count_ones() * 4 >= self.span * STORM_SHARE
    }

    /// When a pending change is due for publication: one window after the
    /// last publication (already past after a quiet period), or at once
    /// within an event's span while it has publications left.
    pub(crate) fn due(&self, now: Instant) -> Instant {
        if self.event.is_some_and(|start| {
            now.saturating_duration_since(start) <= EVENT_SPAN
                && self.event_published < EVENT_PUBLICATIONS
        }) {
            return now;
        }
        let window = if self.storm(now) {
            self.storm
        } else {
            self.normal
        };
        self.published + window
    }

    /// The snapshot was published at `now`.
    pub(crate) fn published(&mut self, now: Instant) {
        self.published = now;
        if self
            .event
            .is_some_and(|start| now.saturating_duration_since(start) <= EVENT_SPAN)
        {
            self.event_published += 1;
        }
    }
}

/// Which carrier losses skip the coalesce window (see the module's
/// paragraph): the last carrier change seen per link, and a token bucket.
#[derive(Debug)]
pub(crate) struct Urgency {
    last_change: HashMap<u32, Instant>,
    tokens: f64,
    refilled: Instant,
}

impl Urgency {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            last_change: HashMap::new(),
            tokens: URGENT_BURST,
            refilled: now,
        }
    }

    /// Notes a link's new state (`before`: what the snapshot held); returns
    /// whether this change is a steady link losing carrier, within budget.
    /// Links never seen changing count as steady since the watch started.
    pub(crate) fn link(
        &mut self,
        before: Option<&Interface>,
        after: &Interface,
        now: Instant,
    ) -> bool {
        let Some(before) = before else {
            return false;
        };
        if before.carrier == after.carrier {
            return false;
        }
        let steady = self
            .last_change
            .insert(after.index, now)
            .is_none_or(|t| now.saturating_duration_since(t) >= STEADY);
        if before.carrier && !after.carrier && steady {
            return self.spend(now);
        }
        false
    }

    pub(crate) fn forget(&mut self, index: u32) {
        self.last_change.remove(&index);
    }

    fn spend(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * URGENT_PER_SEC).min(URGENT_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, carrier: bool) -> Interface {
        Interface {
            index,
            carrier,
            ..Interface::default()
        }
    }

    /// Feeds `carrier` of link `index` at `at` ms after `t0`; returns urgent.
    fn feed(u: &mut Urgency, t0: Instant, at: u64, index: u32, carrier: bool) -> bool {
        u.link(
            Some(&link(index, !carrier)),
            &link(index, carrier),
            t0 + Duration::from_millis(at),
        )
    }

    #[test]
    fn a_steady_link_losing_carrier_is_urgent_a_flapping_one_is_not() {
        let t0 = Instant::now();
        let mut u = Urgency::new(t0);
        // Never seen changing: steady since the watch started.
        assert!(feed(&mut u, t0, 0, 7, false));
        // Back up, and down again within STEADY: flapping, waits.
        assert!(!feed(&mut u, t0, 300, 7, true));
        assert!(!feed(&mut u, t0, 600, 7, false));
        // Up, then steady for STEADY: the next loss is news again.
        assert!(!feed(&mut u, t0, 700, 7, true));
        assert!(feed(&mut u, t0, 1_700, 7, false));
        // Gaining carrier is never urgent.
        assert!(!feed(&mut u, t0, 5_000, 7, true));
        // A link without a previous state (new) or without a carrier change.
        assert!(!u.link(None, &link(8, false), t0));
        assert!(!u.link(
            Some(&link(8, false)),
            &link(8, false),
            t0 + Duration::from_secs(9)
        ));
    }

    #[test]
    fn a_deleted_link_is_forgotten() {
        let t0 = Instant::now();
        let mut u = Urgency::new(t0);
        assert!(!feed(&mut u, t0, 0, 3, true));
        u.forget(3);
        // The index reused by a new link within STEADY: steady, urgent.
        assert!(feed(&mut u, t0, 100, 3, false));
        assert!(u.last_change.len() == 1);
        u.forget(3);
        assert!(u.last_change.is_empty());
    }

    #[test]
    fn the_budget_bounds_urgent_publications_in_a_storm_over_many_links() {
        let t0 = Instant::now();
        let mut u = Urgency::new(t0);
        // 1,000 steady links all lose carrier in the same instant: a burst.
        let at_once = (0..1_000)
            .filter(|&i| feed(&mut u, t0, 0, i, false))
            .count();
        assert_eq!(at_once as f64, URGENT_BURST);
        // Then 100 more losses a second over fresh links for 10 s: at most
        // URGENT_PER_SEC a second get through.
        let later = (0..1_000u32)
            .filter(|&i| feed(&mut u, t0, 10 + u64::from(i) * 10, 10_000 + i, false))
            .count();
        assert!(
            (later as f64) <= 10.0 * URGENT_PER_SEC + 1.0,
            "{later} urgent in 10 s"
        );
        assert!(later as f64 >= 10.0 * URGENT_PER_SEC - 1.0, "{later}");
    }

    fn ms(t0: Instant, at: u64) -> Instant {
        t0 + Duration::from_millis(at)
    }

    /// Feeds a change every `every` ms from `from` to `to` (exclusive),
    /// publishing whenever one is due, as the watch does; returns the times
    /// of the publications.
    fn drive(p: &mut Pacer, t0: Instant, from: u64, to: u64, every: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut pending = false;
        for at in from..to {
            let now = ms(t0, at);
            if (at - from) % every == 0 {
                p.change(now);
                pending = true;
            }
            if pending && now >= p.due(now) {
                p.published(now);
                pending = false;
                out.push(at);
            }
        }
        out
    }

    #[test]
    fn a_change_after_a_quiet_window_is_published_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        assert!(ms(t0, 0) >= p.due(ms(t0, 0)), "the first change");
        p.change(t0);
        p.published(t0);
        // 10 ms later: within the window.
        assert_eq!(p.due(ms(t0, 10)), ms(t0, 50));
        // After a quiet window.
        p.change(ms(t0, 80));
        assert!(ms(t0, 80) >= p.due(ms(t0, 80)));
    }

    #[test]
    fn the_messages_of_one_event_after_a_quiet_window_are_published_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        let us = |at: u64| t0 + Duration::from_micros(at);
        // `ip link set w1 down`: w1's message, then w0's carrier loss 20 us
        // later; each published at once.
        p.change(us(0));
        assert!(us(0) >= p.due(us(0)));
        p.published(us(0));
        p.change(us(20));
        assert!(us(20) >= p.due(us(20)), "the event's second message");
        p.published(us(20));
        // Up to EVENT_PUBLICATIONS in all, then the window again.
        p.change(us(40));
        assert!(us(40) >= p.due(us(40)));
        p.published(us(40));
        p.change(us(60));
        assert_eq!(p.due(us(60)), us(40) + Duration::from_millis(50));
        // A change after the event's span waits for the window too.
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        p.change(t0);
        p.published(t0);
        p.change(ms(t0, 6));
        assert_eq!(p.due(ms(t0, 6)), ms(t0, 50));
    }

    #[test]
    fn a_storm_widens_the_window_and_a_quiet_gap_ends_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        // 100 changes a second for 3 s.
        let published = drive(&mut p, t0, 0, 3_000, 10);
        assert_eq!(published[0], 0, "the first change at once");
        let gaps: Vec<u64> = published.windows(2).map(|w| w[1] - w[0]).collect();
        // A burst: every 50 ms until 3/4 of a second's windows had a
        // change ...
        assert!(gaps.iter().take(13).all(|g| *g == 50), "{gaps:?}");
        // ... then a storm: every 250 ms.
        assert!(gaps.iter().rev().take(6).all(|g| *g == 250), "{gaps:?}");
        assert!(p.storm(ms(t0, 2_990)));
        // A change after a gap longer than the normal window: not a storm,
        // and published at once (the last publication was long enough ago).
        let last = *published.last().expect("published");
        let quiet = last.max(2_990) + 60;
        p.change(ms(t0, quiet));
        assert!(!p.storm(ms(t0, quiet)));
        assert!(ms(t0, quiet) >= p.due(ms(t0, quiet)));
    }

    #[test]
    fn a_storm_with_short_pauses_stays_a_storm_and_a_change_after_a_pause_is_published_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        // 100 changes a second, each second beginning with a 150 ms pause
        // (the bench's sender stops to scrape): 17 of 20 windows busy.
        let mut published = Vec::new();
        let mut pending = false;
        for at in 0..5_000u64 {
            let now = ms(t0, at);
            if at % 1_000 >= 150 && at % 10 == 0 {
                p.change(now);
                pending = true;
            }
            if pending && now >= p.due(now) {
                p.published(now);
                pending = false;
                published.push(at);
            }
        }
        // After the first second: the first change after each pause at once,
        // then the wide window.
        let later: Vec<u64> = published
            .iter()
            .copied()
            .filter(|at| *at >= 2_000)
            .collect();
        for second in [2_000, 3_000, 4_000] {
            assert!(later.contains(&(second + 150)), "{later:?}");
        }
        assert!(
            later.len() <= 3 * 5,
            "{} publications in 3 s: {later:?}",
            later.len()
        );
    }

    #[test]
    fn changes_slower_than_the_window_are_never_a_storm() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::from_millis(250), t0);
        // A change every 60 ms for 5 s: each one published at once.
        let published = drive(&mut p, t0, 0, 5_000, 60);
        assert_eq!(published.len(), 84);
        assert!(published.iter().all(|at| at % 60 == 0));
    }

    #[test]
    fn a_storm_window_narrower_than_the_normal_one_is_the_normal_one() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(50), Duration::ZERO, t0);
        let published = drive(&mut p, t0, 0, 3_000, 10);
        let gaps: Vec<u64> = published.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == 50), "{gaps:?}");
        // Without a normal window, every change is published, storm or not.
        let mut p = Pacer::new(Duration::ZERO, Duration::from_millis(250), t0);
        assert_eq!(drive(&mut p, t0, 0, 3_000, 10).len(), 300);
    }
}
