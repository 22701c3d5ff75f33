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
//! most of the agent's CPU in a flap storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
            apply_datagram(&mut snap, buf, stats);
        })
        .await?;
        Ok(snap)
    }
}

/// Decodes one datagram and applies it; returns (changed, overrun).
fn apply_datagram(snap: &mut Snapshot, buf: &[u8], stats: &WatchStats) -> (bool, bool) {
    let decoded = decode_datagram(buf);
    for p in &decoded.problems {
        stats.parse_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(interface = %p.concerns, reason = %p.reason, "netlink message not fully parsed; kept the rest");
    }
    let mut changed = false;
    let mut overrun = false;
    for event in decoded.events {
        stats.messages.fetch_add(1, Ordering::Relaxed);
        match event {
            Event::Overrun => overrun = true,
            Event::NewLink(mut iface) => {
                let index = iface.index;
                sysfs::enrich(&mut iface, snap.interfaces.get(&index));
                changed |= apply(snap, Event::NewLink(iface));
            }
            other => changed |= apply(snap, other),
        }
    }
    (changed, overrun)
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
    loop {
        let due = published + config.coalesce;
        let resync = tokio::select! {
            r = async {
                buf.clear();
                events.recv_from(&mut buf).await
            } => match r {
                Ok(_) if buf.len() >= RECV_BUF => Some("overrun"),
                Ok(_) => {
                    let (changed, overrun) = apply_datagram(&mut snap, &buf, &stats);
                    if changed {
                        pending = true;
                    }
                    overrun.then_some("overrun")
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
                publish(&tx, &snap, &stats);
                pending = false;
                published = tokio::time::Instant::now();
            }
            continue;
        }
        let now = tokio::time::Instant::now();
        if pending && now >= published + config.coalesce {
            publish(&tx, &snap, &stats);
            pending = false;
            published = now;
        }
    }
}

fn publish(tx: &tokio_watch::Sender<Arc<Snapshot>>, snap: &Snapshot, stats: &WatchStats) {
    stats.snapshots.fetch_add(1, Ordering::Relaxed);
    tx.send_replace(Arc::new(snap.clone()));
}
