//! rtnetlink sockets: dump requests and the multicast watch.
//!
//! Two sockets: one bound to the link, address and route multicast groups
//! (bound *before* the first dump, so no change between dump and subscription
//! is lost) and one for dump requests. Overruns (ENOBUFS) and a periodic timer
//! trigger a full re-dump; the snapshot is then replaced whole.
//!
//! Every message is applied to the watch's own snapshot as it arrives; the
//! published copy (a clone of the whole snapshot) is refreshed at once after
//! a quiet period and at most once per [`WatchConfig::coalesce`] during a
//! burst, because cloning and dropping a hundred interfaces per message was
//! most of the agent's CPU in a flap storm. One kind of change skips that
//! window: a link that had kept its carrier for [`STEADY`] and loses it (a
//! cable pull, a switch port going down) is published at once, within a
//! budget ([`URGENT_BURST`], [`URGENT_PER_SEC`]), so that a pull landing
//! just after another change (three bonds pulled together) does not wait for
//! the window; a flapping link is not news and waits like any other change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::RouteNetlinkMessage;
use preflight_model::{Interface, Snapshot};
use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
};
use rtnetlink::sys::{
    protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket,
};
use tokio::sync::watch as tokio_watch;

use crate::decode::{decode_datagram, Event};
use crate::{apply, sysfs, NetlinkError};

const ENOBUFS: i32 = 105;
/// Kernel receive buffer for the event socket: large enough for a burst of
/// a few thousand link messages before an overrun forces a re-dump.
const EVENT_RCVBUF: usize = 4 * 1024 * 1024;
const DUMP_ATTEMPTS: u32 = 5;
/// Receive buffer of the event loop, reused for every datagram. A datagram
/// that fills it may have been cut short, so it is treated as an overrun.
const RECV_BUF: usize = 64 * 1024;
/// Default of [`WatchConfig::coalesce`]: the agent's own evaluation window.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(50);

/// A link whose carrier has not changed for this long and then loses it is
/// published at once, inside the coalesce window.
pub const STEADY: Duration = Duration::from_secs(1);
/// How many such early publications may follow one another at once ...
pub const URGENT_BURST: f64 = 4.0;
/// ... and how many per second after that: a storm over many links then
/// costs at most this many publications a second on top of the window's.
pub const URGENT_PER_SEC: f64 = 4.0;

/// Settings of [`watch`].
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Full re-dump at this interval even without overruns, as a safety net
    /// against missed notifications.
    pub resync_interval: Duration,
    /// Kernel receive buffer of the notification socket in bytes. Smaller
    /// means earlier overruns (each followed by a full re-dump).
    pub receive_buffer: usize,
    /// During a burst, publish the snapshot at most once per this window
    /// (the first change after a quiet window is published at once, and the
    /// last one of a burst at the end of its window). Every message is still
    /// applied; carrier transitions stay countable through the kernel's
    /// `carrier_changes`. Zero publishes every change.
    pub coalesce: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            receive_buffer: EVENT_RCVBUF,
            coalesce: DEFAULT_COALESCE,
        }
    }
}

/// Counters of the watch, for metrics and logs.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Netlink messages applied.
    pub messages: AtomicU64,
    /// Messages (or attributes) that could not be parsed.
    pub parse_errors: AtomicU64,
    /// Full re-dumps after an overrun (ENOBUFS).
    pub resyncs_overrun: AtomicU64,
    /// Full re-dumps from the periodic timer.
    pub resyncs_timer: AtomicU64,
    /// Snapshots published.
    pub snapshots: AtomicU64,
    /// Snapshots published ahead of the coalesce window because a steady
    /// link lost its carrier. Incremented before that snapshot is sent, so
    /// a receiver that sees it change knows the snapshot is urgent and can
    /// skip its own coalescing.
    pub urgent: AtomicU64,
}

/// Which carrier losses skip the coalesce window (see the module's
/// paragraph): the last carrier change seen per link, and a token bucket.
#[derive(Debug)]
struct Urgency {
    last_change: HashMap<u32, Instant>,
    tokens: f64,
    refilled: Instant,
}

impl Urgency {
    fn new(now: Instant) -> Self {
        Self {
            last_change: HashMap::new(),
            tokens: URGENT_BURST,
            refilled: now,
        }
    }

    /// Notes a link's new state (`before`: what the snapshot held); returns
    /// whether this change is a steady link losing carrier, within budget.
    /// Links never seen changing count as steady since the watch started.
    fn link(&mut self, before: Option<&Interface>, after: &Interface, now: Instant) -> bool {
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

    fn forget(&mut self, index: u32) {
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

/// What applying one datagram did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Applied {
    changed: bool,
    overrun: bool,
    /// A steady link lost carrier (and the budget allowed it): publish now.
    urgent: bool,
}

/// A running watch: a receiver that always holds the current snapshot, the
/// counters, and the task (which ends when every receiver is dropped, or with
/// an error when the kernel socket fails).
#[derive(Debug)]
pub struct Watch {
    /// Current snapshot; `changed()` resolves on every change.
    pub snapshots: tokio_watch::Receiver<Arc<Snapshot>>,
    /// Counters.
    pub stats: Arc<WatchStats>,
    /// The watch task.
    pub task: tokio::task::JoinHandle<Result<(), NetlinkError>>,
}

fn open(groups: u32) -> Result<TokioSocket, NetlinkError> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    sock.socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .map_err(NetlinkError::Socket)?;
    Ok(sock)
}

struct Dumper {
    sock: TokioSocket,
    seq: u32,
}

impl Dumper {
    fn new() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: open(0)?,
            seq: 0,
        })
    }

    async fn request(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, msg.into());
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock
            .send_to(&buf, &SocketAddr::new(0, 0))
            .await
            .map_err(|source| NetlinkError::Send { what, source })?;
        Ok(self.seq)
    }

    /// Runs one dump and hands every raw datagram to `sink`. Retries when the
    /// kernel flags the dump as interrupted by a concurrent change.
    async fn dump_raw(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.request(what, msg.clone()).await?;
            let mut datagrams = Vec::new();
            let interrupted = loop {
                let (buf, _) = self
                    .sock
                    .recv_from_full()
                    .await
                    .map_err(NetlinkError::Recv)?;
                let decoded = decode_datagram(&buf);
                let mut done = None;
                for e in &decoded.events {
                    match e {
                        Event::Error { seq: s, code } if *s == seq => {
                            return Err(NetlinkError::Kernel { what, code: *code })
                        }
                        Event::Done {
                            seq: s,
                            interrupted,
                        } if *s == seq => done = Some(*interrupted),
                        _ => {}
                    }
                }
                datagrams.push(buf);
                if let Some(i) = done {
                    break i || decoded.dump_interrupted;
                }
            };
            if !interrupted {
                for d in &datagrams {
                    sink(d);
                }
                return Ok(());
            }
            tracing::debug!(what, "dump interrupted by a concurrent change; retrying");
        }
        Err(NetlinkError::Interrupted {
            what,
            attempts: DUMP_ATTEMPTS,
        })
    }

    async fn dump_all(&mut self, sink: &mut (dyn FnMut(&[u8]) + Send)) -> Result<(), NetlinkError> {
        self.dump_raw(
            "link",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            sink,
        )
        .await?;
        self.dump_raw(
            "address",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            sink,
        )
        .await?;
        self.dump_raw(
            "route",
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            sink,
        )
        .await
    }

    async fn snapshot(&mut self, stats: &WatchStats) -> Result<Snapshot, NetlinkError> {
        let mut snap = Snapshot::default();
        self.dump_all(&mut |buf| {
            apply_datagram(&mut snap, buf, stats, None);
        })
        .await?;
        Ok(snap)
    }
}

/// Decodes one datagram and applies it. With `urgency` (the watch, not a
/// dump), carrier losses are checked against it.
fn apply_datagram(
    snap: &mut Snapshot,
    buf: &[u8],
    stats: &WatchStats,
    mut urgency: Option<&mut Urgency>,
) -> Applied {
    let decoded = decode_datagram(buf);
    for p in &decoded.problems {
        stats.parse_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(interface = %p.concerns, reason = %p.reason, "netlink message not fully parsed; kept the rest");
    }
    let mut out = Applied::default();
    for event in decoded.events {
        stats.messages.fetch_add(1, Ordering::Relaxed);
        match event {
            Event::Overrun => out.overrun = true,
            Event::NewLink(mut iface) => {
                let index = iface.index;
                let before = snap.interfaces.get(&index);
                if let Some(u) = urgency.as_deref_mut() {
                    if u.link(before, &iface, Instant::now()) {
                        out.urgent = true;
                        tracing::debug!(interface = %iface.name, "steady link lost carrier: publishing at once");
                    }
                }
                sysfs::enrich(&mut iface, before);
                out.changed |= apply(snap, Event::NewLink(iface));
            }
            Event::DelLink(index) => {
                if let Some(u) = urgency.as_deref_mut() {
                    u.forget(index);
                }
                out.changed |= apply(snap, Event::DelLink(index));
            }
            other => out.changed |= apply(snap, other),
        }
    }
    out
}

/// One-shot snapshot of this network namespace.
///
/// # Errors
/// When the kernel cannot be asked or answers with an error.
pub async fn dump() -> Result<Snapshot, NetlinkError> {
    Dumper::new()?.snapshot(&WatchStats::default()).await
}

/// Raw bytes of a full dump (links, addresses, routes), datagram by datagram,
/// each prefixed with its length as a little-endian u32. This is the fixture
/// format of the unit tests: `preflight debug capture` writes it on a real
/// kernel, and the tests decode it with [`crate::decode_datagram`].
///
/// # Errors
/// As [`dump`].
pub async fn capture() -> Result<Vec<u8>, NetlinkError> {
    let mut out = Vec::new();
    Dumper::new()?
        .dump_all(&mut |buf| {
            let len = u32::try_from(buf.len()).expect("a netlink datagram is far below 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(buf);
        })
        .await?;
    Ok(out)
}

/// Subscribes to link, address and route notifications, takes the first
/// snapshot, and keeps it current in a background task.
///
/// # Errors
/// When the sockets cannot be opened or the first dump fails.
pub async fn watch(config: WatchConfig) -> Result<Watch, NetlinkError> {
    let groups = RTMGRP_LINK
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE;
    let events = open(groups)?;
    if let Err(e) = events.socket_ref().set_rx_buf_sz(config.receive_buffer) {
        tracing::debug!(error = %e, "cannot enlarge netlink receive buffer; overruns will re-dump");
    }
    let mut dumper = Dumper::new()?;
    let stats = Arc::new(WatchStats::default());
    let first = dumper.snapshot(&stats).await?;
    stats.snapshots.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = tokio_watch::channel(Arc::new(first.clone()));
    let task_stats = Arc::clone(&stats);
    let task =
        tokio::spawn(async move { run(events, dumper, first, tx, task_stats, config).await });
    Ok(Watch {
        snapshots: rx,
        stats,
        task,
    })
}

async fn run(
    events: TokioSocket,
    mut dumper: Dumper,
    mut snap: Snapshot,
    tx: tokio_watch::Sender<Arc<Snapshot>>,
    stats: Arc<WatchStats>,
    config: WatchConfig,
) -> Result<(), NetlinkError> {
    let mut timer = tokio::time::interval(config.resync_interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await; // the first tick is immediate; we just dumped
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    // A change not yet published, and when the last publication was.
    let mut pending = false;
    let mut published = tokio::time::Instant::now()
        .checked_sub(config.coalesce)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut urgency = Urgency::new(Instant::now());
    // A steady link lost carrier: publish without waiting for the window.
    let mut urgent = false;
    loop {
        let due = published + config.coalesce;
        let resync = tokio::select! {
            r = async {
                buf.clear();
                events.recv_from(&mut buf).await
            } => match r {
                Ok(_) if buf.len() >= RECV_BUF => Some("overrun"),
                Ok(_) => {
                    let a = apply_datagram(&mut snap, &buf, &stats, Some(&mut urgency));
                    pending |= a.changed;
                    urgent |= a.urgent && a.changed;
                    a.overrun.then_some("overrun")
                }
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => Some("overrun"),
                Err(e) => return Err(NetlinkError::Recv(e)),
            },
            () = tokio::time::sleep_until(due), if pending => None,
            _ = timer.tick() => Some("timer"),
            () = tx.closed() => return Ok(()),
        };
        if let Some(reason) = resync {
            if reason == "overrun" {
                stats.resyncs_overrun.fetch_add(1, Ordering::Relaxed);
                tracing::info!("netlink notifications were lost (ENOBUFS); re-reading full state");
            } else {
                stats.resyncs_timer.fetch_add(1, Ordering::Relaxed);
            }
            let fresh = dumper.snapshot(&stats).await?;
            if fresh != snap {
                snap = fresh;
                pending = true;
            }
            // A re-read is rare and may follow lost messages: no waiting.
            if pending {
                if urgent {
                    stats.urgent.fetch_add(1, Ordering::Release);
                }
                publish(&tx, &snap, &stats);
                pending = false;
                urgent = false;
                published = tokio::time::Instant::now();
            }
            continue;
        }
        let now = tokio::time::Instant::now();
        if pending && (urgent || now >= published + config.coalesce) {
            if urgent {
                // Before the send: a receiver woken by it must see the mark.
                stats.urgent.fetch_add(1, Ordering::Release);
            }
            publish(&tx, &snap, &stats);
            pending = false;
            urgent = false;
            published = now;
        }
    }
}

fn publish(tx: &tokio_watch::Sender<Arc<Snapshot>>, snap: &Snapshot, stats: &WatchStats) {
    stats.snapshots.fetch_add(1, Ordering::Relaxed);
    tx.send_replace(Arc::new(snap.clone()));
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
}
