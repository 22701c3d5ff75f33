//! rtnetlink sockets: dump requests and the multicast watch.
//!
//! Two sockets: one bound to the link, address and route multicast groups
//! (bound *before* the first dump, so no change between dump and subscription
//! is lost) and one for dump requests. Overruns (ENOBUFS) and a periodic timer
//! trigger a full re-dump; the snapshot is then replaced whole. Every message
//! is applied to the watch's own snapshot as it arrives; when that snapshot
//! is published is `pace`'s business, and speed and duplex (sysfs) are read
//! for the interfaces that need it just before each publication.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::RouteNetlinkMessage;
use preflight_model::Snapshot;
use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
};
use rtnetlink::sys::{
    protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket,
};
use tokio::sync::watch as tokio_watch;

use crate::decode::{decode_datagram, Decoded, Event};
use crate::pace::{Pacer, Urgency};
use crate::{apply, sysfs, NetlinkError};

const ENOBUFS: i32 = 105;
/// Kernel receive buffer for the event socket: large enough for a burst of
/// a few thousand link messages before an overrun forces a re-dump.
const EVENT_RCVBUF: usize = 4 * 1024 * 1024;
const DUMP_ATTEMPTS: u32 = 5;
/// Receive buffer of the event loop, reused for every datagram. A datagram
/// that fills it may have been cut short, so it is treated as an overrun.
const RECV_BUF: usize = 64 * 1024;
/// Default of [`WatchConfig::coalesce`].
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(50);
/// Default of [`WatchConfig::storm_coalesce`].
pub const DEFAULT_STORM_COALESCE: Duration = Duration::from_millis(250);

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
    /// `carrier_changes`. Zero publishes every change. The agent evaluates
    /// every publication at once, and paces its other sources (OVSDB,
    /// probes) with this same window.
    pub coalesce: Duration,
    /// The window during a storm: changes in at least 3/4 of the
    /// `coalesce` windows of the last second (`pace::STORM_SPAN`,
    /// `pace::STORM_SHARE`). A change after a quiet `coalesce` is still
    /// published at once, and a steady link's carrier loss skips the window
    /// as before. Never narrower than `coalesce`; with `coalesce` zero,
    /// unused.
    pub storm_coalesce: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            receive_buffer: EVENT_RCVBUF,
            coalesce: DEFAULT_COALESCE,
            storm_coalesce: DEFAULT_STORM_COALESCE,
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
}

/// Why the watch reads the full state again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Notifications were lost: ENOBUFS, NLMSG_OVERRUN, or a datagram that
    /// filled the receive buffer and may have been cut short.
    Overrun,
    /// The periodic safety net ([`WatchConfig::resync_interval`]).
    Timer,
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

    /// Runs one dump and returns what `keep` makes of each datagram: its
    /// bytes and what they decode to (each datagram is decoded once, here,
    /// where its Done or Error must be found anyway). Retries when the
    /// kernel flags the dump as interrupted by a concurrent change; the
    /// datagrams of an interrupted attempt are dropped.
    async fn dump<T: Send>(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        mut keep: impl FnMut(Vec<u8>, Decoded) -> T + Send,
    ) -> Result<Vec<T>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.request(what, msg.clone()).await?;
            let mut kept = Vec::new();
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
                let done = done.map(|i| i || decoded.dump_interrupted);
                kept.push(keep(buf, decoded));
                if let Some(i) = done {
                    break i;
                }
            };
            if !interrupted {
                return Ok(kept);
            }
            tracing::debug!(what, "dump interrupted by a concurrent change; retrying");
        }
        Err(NetlinkError::Interrupted {
            what,
            attempts: DUMP_ATTEMPTS,
        })
    }

    async fn snapshot(&mut self, stats: &WatchStats) -> Result<Snapshot, NetlinkError> {
        let mut snap = Snapshot::default();
        for (what, msg) in full_dump() {
            for decoded in self.dump(what, msg, |_, decoded| decoded).await? {
                apply_decoded(&mut snap, decoded, stats, None);
            }
        }
        Ok(snap)
    }
}

/// The dumps of a full read, in order: links, addresses, routes.
fn full_dump() -> [(&'static str, RouteNetlinkMessage); 3] {
    [
        ("link", RouteNetlinkMessage::GetLink(LinkMessage::default())),
        (
            "address",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ),
        (
            "route",
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        ),
    ]
}

/// What the watch keeps beside its snapshot between publications.
#[derive(Debug)]
struct Live {
    urgency: Urgency,
    /// Interfaces whose speed and duplex are read before the next
    /// publication (see `sysfs`).
    unread: BTreeSet<u32>,
}

impl Live {
    /// Reads speed and duplex of the interfaces noted since the last
    /// publication that still have carrier; returns whether any changed.
    fn read_speeds(&mut self, snap: &mut Snapshot) -> bool {
        let mut changed = false;
        for index in std::mem::take(&mut self.unread) {
            if let Some(iface) = snap.interfaces.get_mut(&index).filter(|i| i.carrier) {
                let speed = iface.speed_mbps;
                let duplex = iface.duplex.take();
                sysfs::read(iface);
                changed |= speed != iface.speed_mbps || duplex != iface.duplex;
            }
        }
        changed
    }
}

/// Applies one decoded datagram. With `live` (the watch, not a dump),
/// carrier losses are checked for urgency and sysfs is read at the next
/// publication; a dump reads it at once.
fn apply_decoded(
    snap: &mut Snapshot,
    decoded: Decoded,
    stats: &WatchStats,
    mut live: Option<&mut Live>,
) -> Applied {
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
                let read = sysfs::carry(&mut iface, before);
                if let Some(l) = live.as_deref_mut() {
                    if l.urgency.link(before, &iface, Instant::now()) {
                        out.urgent = true;
                        tracing::debug!(interface = %iface.name, "steady link lost carrier: publishing at once");
                    }
                    if read {
                        l.unread.insert(index);
                    }
                } else if read {
                    sysfs::read(&mut iface);
                }
                out.changed |= apply(snap, Event::NewLink(iface));
            }
            Event::DelLink(index) => {
                if let Some(l) = live.as_deref_mut() {
                    l.urgency.forget(index);
                    l.unread.remove(&index);
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
    let mut dumper = Dumper::new()?;
    for (what, msg) in full_dump() {
        for buf in dumper.dump(what, msg, |buf, _| buf).await? {
            let len = u32::try_from(buf.len()).expect("a netlink datagram is far below 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&buf);
        }
    }
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
    // A change not yet published (or an interface whose speed is unread).
    let mut pending = false;
    let mut pacer = Pacer::new(config.coalesce, config.storm_coalesce, Instant::now());
    let mut live = Live {
        urgency: Urgency::new(Instant::now()),
        unread: BTreeSet::new(),
    };
    // A steady link lost carrier: publish without waiting for the window.
    let mut urgent = false;
    loop {
        let waiting = pending || !live.unread.is_empty();
        let due = tokio::time::Instant::from_std(pacer.due(Instant::now()));
        let resync = tokio::select! {
            r = async {
                buf.clear();
                events.recv_from(&mut buf).await
            } => {
                let a = received(r, &buf, &mut snap, &stats, &mut live)?;
                let mut resync = note(a, &mut pending, &mut urgent, &mut pacer);
                // One event sends several messages at once (a link's, its
                // routes' and addresses', its peer's or bond's): apply those
                // already queued before deciding to publish, so that the one
                // a finding needs is in the same publication as the first.
                let mut drained = 0;
                while resync.is_none() && drained < DRAIN_MAX {
                    buf.clear();
                    let Some(r) = events.recv_from(&mut buf).now_or_never() else {
                        break;
                    };
                    let a = received(r, &buf, &mut snap, &stats, &mut live)?;
                    resync = note(a, &mut pending, &mut urgent, &mut pacer);
                    drained += 1;
                }
                resync
            },
            () = tokio::time::sleep_until(due), if waiting => None,
            _ = timer.tick() => Some(Resync::Timer),
            () = tx.closed() => return Ok(()),
        };
        let now = Instant::now();
        if let Some(resync) = resync {
            match resync {
                Resync::Overrun => {
                    stats.resyncs_overrun.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "netlink notifications were lost (ENOBUFS); re-reading full state"
                    );
                }
                Resync::Timer => {
                    stats.resyncs_timer.fetch_add(1, Ordering::Relaxed);
                }
            }
            let fresh = dumper.snapshot(&stats).await?;
            if fresh != snap {
                // Read whole, speeds included.
                snap = fresh;
                live.unread.clear();
                pending = true;
            }
            // A re-read is rare and may follow lost messages: no waiting.
        } else if !(urgent || now >= pacer.due(now)) {
            continue;
        }
        // Speeds last, so that a bond's follows its ports' latest state.
        pending |= live.read_speeds(&mut snap);
        if pending {
            publish(&tx, &snap, &stats);
            pacer.published(Instant::now());
        }
        pending = false;
        urgent = false;
    }
}

/// How many more datagrams already queued are applied after one before the
/// watch decides whether to publish (bounds the time between two checks of
/// the pacer and the timers).
const DRAIN_MAX: usize = 64;

/// A datagram received, or the error instead, applied to `snap`: what it
/// did (lost messages: `overrun`), or `Err` for a socket that failed.
fn received<T>(
    r: std::io::Result<T>,
    buf: &[u8],
    snap: &mut Snapshot,
    stats: &WatchStats,
    live: &mut Live,
) -> Result<Applied, NetlinkError> {
    let lost = Applied {
        overrun: true,
        ..Applied::default()
    };
    match r {
        Ok(_) if buf.len() >= RECV_BUF => Ok(lost),
        Ok(_) => Ok(apply_decoded(snap, decode_datagram(buf), stats, Some(live))),
        Err(e) if e.raw_os_error() == Some(ENOBUFS) => Ok(lost),
        Err(e) => Err(NetlinkError::Recv(e)),
    }
}

/// Notes what a datagram did for the publication to come; `Some` when the
/// full state must be read again.
fn note(a: Applied, pending: &mut bool, urgent: &mut bool, pacer: &mut Pacer) -> Option<Resync> {
    if a.changed {
        *pending = true;
        pacer.change(Instant::now());
    }
    *urgent |= a.urgent && a.changed;
    a.overrun.then_some(Resync::Overrun)
}

fn publish(tx: &tokio_watch::Sender<Arc<Snapshot>>, snap: &Snapshot, stats: &WatchStats) {
    stats.snapshots.fetch_add(1, Ordering::Relaxed);
    tx.send_replace(Arc::new(snap.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_model::Interface;

    #[test]
    fn speeds_are_read_once_for_links_that_still_have_carrier() {
        let link = |index, carrier| Interface {
            index,
            // No such interface in sysfs: a read finds no speed.
            name: format!("pf-none-{index}"),
            carrier,
            speed_mbps: Some(1_000),
            ..Interface::default()
        };
        let mut snap = Snapshot::default();
        for (i, carrier) in [(1, true), (2, false), (3, true)] {
            snap.interfaces.insert(i, link(i, carrier));
        }
        let mut live = Live {
            urgency: Urgency::new(Instant::now()),
            // 4 is gone since it was noted.
            unread: [1, 2, 4].into(),
        };
        assert!(live.read_speeds(&mut snap), "1's speed was read");
        assert!(live.unread.is_empty());
        assert_eq!(snap.interfaces[&1].speed_mbps, None);
        // 2 lost carrier before the read (not read), 3 was not noted.
        assert_eq!(snap.interfaces[&2].speed_mbps, Some(1_000));
        assert_eq!(snap.interfaces[&3].speed_mbps, Some(1_000));
        assert!(!live.read_speeds(&mut snap), "nothing left to read");
    }
}
