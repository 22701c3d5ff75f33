//! The passive LLDP listener: one packet socket per bond member (the
//! nearest-bridge group joined), each sender's newest LLDPDU kept until its
//! TTL runs out (up to [`MAX_PER_MEMBER`] senders per member). The socket
//! takes every protocol (`ETH_P_ALL`) with a
//! kernel filter that keeps Ethertype 0x88cc to an LLDP group address, as
//! lldpd does: a member whose frames a datapath's rx_handler takes (the OVS
//! kernel datapath, a bridge) delivers them to taps only, never to a socket
//! bound to 0x88cc. The frame keeps its Ethernet header, so
//! [`super::decode_frame`] checks the destination too.
//!
//! preflight never sends an LLDPDU; it reads
//! beside lldpd on the same node (every packet socket gets its own copy of
//! a frame, and group memberships are counted per socket), and ignores the
//! frames the node itself sends (`PACKET_IGNORE_OUTGOING`), which are
//! lldpd's, not the switch's.
//!
//! Bounded whatever the wire does: a few neighbours per member, a receive
//! buffer of a few frames, and at most [`DECODES_PER_SECOND`] frames read
//! per member each second; past that the task sleeps to the end of the
//! second and the kernel drops what does not fit its small buffer. A switch
//! sends one LLDPDU every 30 s, so a member that gets more is being flooded,
//! and a flood costs neither memory nor more than a few wake-ups a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use preflight_model::LldpNeighbor;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{decode_frame, ETHERTYPE, NEAREST_BRIDGE};

mod table;
pub use table::MAX_PER_MEMBER;

/// Frames read per member per second at most (a switch sends one per 30 s;
/// lldpd's fast start, one per second).
pub const DECODES_PER_SECOND: u32 = 20;

/// Largest LLDPDU taken (802.1AB §8.1: it fits one untagged 802.3 frame).
const MAX_LLDPDU: usize = 1500;

/// An Ethernet header: destination, source, Ethertype.
const ETH_HEADER: usize = 14;

/// `ETH_P_ALL`: every protocol, as taps see frames.
const ETH_P_ALL: u16 = 0x0003;

/// Receive buffer asked of the kernel: a handful of frames (it counts each
/// frame's whole buffer, about 2 KiB on veth and most NICs).
const RCVBUF: usize = 16 * 1024;

/// How long to wait before reopening a member's socket that failed (the
/// interface is gone or not there yet).
const RETRY: Duration = Duration::from_secs(10);

/// What the listener saw, for `preflight debug lldp` and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames read and decoded into a neighbour.
    pub decoded: AtomicU64,
    /// Frames read that were not a valid LLDPDU.
    pub malformed: AtomicU64,
    /// Times a member's budget of frames per second ran out.
    pub limited: AtomicU64,
    /// The same two counts by member, for metrics.
    by_member: Mutex<BTreeMap<String, MemberCounts>>,
}

/// Members counted apart at most (a node has a handful of bond members;
/// past this a member still counts in the totals).
const MAX_COUNTED_MEMBERS: usize = 64;

/// What one member's listener dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemberCounts {
    /// Frames that were not a valid LLDPDU.
    pub malformed: u64,
    /// Frames over the member's budget per second.
    pub limited: u64,
}

impl Stats {
    /// The counts by member, for every member listened on since the start
    /// (a member's counts never go back, so they can feed counters).
    #[must_use]
    pub fn by_member(&self) -> BTreeMap<String, MemberCounts> {
        self.by_member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self, member: &str, f: impl FnOnce(&mut MemberCounts)) {
        let mut m = self
            .by_member
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = m.get_mut(member) {
            f(c);
        } else if m.len() < MAX_COUNTED_MEMBERS {
            f(m.entry(member.to_owned()).or_default());
        }
    }
}

/// A running listener: the live neighbours by member, published on every
/// change (a newer LLDPDU with other contents, an expiry, a member gone).
#[derive(Debug)]
pub struct Listener {
    /// The neighbours, ordered by member.
    pub neighbors: watch::Receiver<Vec<LldpNeighbor>>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Why a member cannot be listened on, by member (no such interface, no
    /// CAP_NET_RAW); cleared when its socket opens.
    pub errors: watch::Receiver<BTreeMap<String, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Heard {
    // Boxed: the channel holds a few of these, the neighbour is large.
    Neighbor(Box<LldpNeighbor>),
    Error(String, Option<String>),
}

/// Listens on every interface in `members`, following changes of the set.
#[must_use]
pub fn spawn(mut members: watch::Receiver<Vec<String>>) -> Listener {
    let (tx, neighbors) = watch::channel(Vec::new());
    let (err_tx, errors) = watch::channel(BTreeMap::new());
    let stats = Arc::new(Stats::default());
    let task_stats = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        let (heard_tx, mut heard) = mpsc::channel(16);
        let mut tasks: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        let mut table = table::Table::default();
        let mut wanted = members.borrow_and_update().clone();
        loop {
            tasks.retain(|m, t| {
                let keep = wanted.contains(m);
                if !keep {
                    t.abort();
                }
                keep
            });
            for m in &wanted {
                tasks.entry(m.clone()).or_insert_with(|| {
                    tokio::spawn(receive(
                        m.clone(),
                        heard_tx.clone(),
                        Arc::clone(&task_stats),
                    ))
                });
            }
            let before = table.published();
            table.retain_members(&wanted);
            err_tx.send_if_modified(|e| {
                let n = e.len();
                e.retain(|m, _| wanted.contains(m));
                e.len() != n
            });
            let next_expiry = table.next_expiry();
            tokio::select! {
                r = members.changed() => match r {
                    Ok(()) => wanted = members.borrow_and_update().clone(),
                    Err(_) => break,
                },
                Some(h) = heard.recv() => match h {
                    Heard::Neighbor(n) => table.heard(*n, Instant::now()),
                    Heard::Error(member, e) => {
                        err_tx.send_if_modified(|errs| match e {
                            Some(e) if errs.get(&member) != Some(&e) => { errs.insert(member, e); true }
                            None => errs.remove(&member).is_some(),
                            _ => false,
                        });
                    }
                },
                () = async { tokio::time::sleep_until(next_expiry.expect("guarded")).await }, if next_expiry.is_some() => {
                    table.expire(Instant::now());
                }
                () = tx.closed() => break,
            }
            let after = table.published();
            if after != before {
                tx.send_replace(after);
            }
        }
        for t in tasks.values() {
            t.abort();
        }
    });
    Listener {
        neighbors,
        stats,
        errors,
        task,
    }
}

/// Listens on `members` for up to `wait` or until every one of them has a
/// neighbour; returns what was heard and why a member could not be listened
/// on. For one-shot commands (`preflight inspect`).
pub async fn listen_for(
    members: Vec<String>,
    wait: Duration,
) -> (Vec<LldpNeighbor>, BTreeMap<String, String>) {
    let count = members.len();
    let (_keep, rx) = watch::channel(members);
    let mut l = spawn(rx);
    let _ = tokio::time::timeout(wait, async {
        loop {
            let heard: std::collections::BTreeSet<String> = l
                .neighbors
                .borrow_and_update()
                .iter()
                .map(|n| n.member.clone())
                .collect();
            let heard = heard.len();
            let failed = l.errors.borrow().len();
            if heard + failed >= count || l.neighbors.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let n = l.neighbors.borrow().clone();
    let e = l.errors.borrow().clone();
    (n, e)
}

/// One member's receive loop: (re)opens its socket and reads LLDPDUs.
async fn receive(member: String, tx: mpsc::Sender<Heard>, stats: Arc<Stats>) {
    loop {
        let err = match open(&member) {
            Ok(sock) => {
                let _ = tx.send(Heard::Error(member.clone(), None)).await;
                read(&member, &sock, &tx, &stats).await
            }
            Err(e) => e,
        };
        if tx.is_closed() {
            // Whoever listened is gone (`inspect` done): nothing to retry.
            return;
        }
        tracing::warn!(member, error = %err, "LLDP listener: cannot listen; retrying");
        if tx
            .send(Heard::Error(member.clone(), Some(err)))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Reads until the socket fails (returns why) or nobody listens any more
/// (returns an empty reason, and the channel is closed).
async fn read(
    member: &str,
    sock: &tokio::net::UdpSocket,
    tx: &mpsc::Sender<Heard>,
    stats: &Stats,
) -> String {
    let mut buf = [0u8; ETH_HEADER + MAX_LLDPDU + 1];
    let mut window = Instant::now();
    let mut used = 0;
    let mut last_warn: Option<Instant> = None;
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                // The member's link went down (the socket says so once): a
                // down link has nothing to hear, which is no failure to
                // listen. Read on once it may be up again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return format!("{member}: receive: {e}"),
        };
        let now = Instant::now();
        if now.duration_since(window) >= Duration::from_secs(1) {
            (window, used) = (now, 0);
        }
        used += 1;
        if used > DECODES_PER_SECOND {
            stats.limited.fetch_add(1, Ordering::Relaxed);
            stats.count(member, |c| c.limited += 1);
            tokio::time::sleep_until(window + Duration::from_secs(1)).await;
            continue;
        }
        let decoded = if n > ETH_HEADER + MAX_LLDPDU {
            Err(format!("an LLDPDU longer than {MAX_LLDPDU} bytes"))
        } else {
            decode_frame(&buf[..n], member, SystemTime::now()).map_err(|e| e.to_string())
        };
        match decoded {
            Ok(neighbor) => {
                stats.decoded.fetch_add(1, Ordering::Relaxed);
                if tx.send(Heard::Neighbor(Box::new(neighbor))).await.is_err() {
                    return String::new();
                }
            }
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                stats.count(member, |c| c.malformed += 1);
                // Once a minute at most: a flood must not flood the log.
                if last_warn.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                    last_warn = Some(now);
                    tracing::warn!(member, error = %e, "LLDP listener: malformed LLDPDU ignored");
                }
            }
        }
    }
}

/// Kernel filter: Ethertype 0x88cc to 01:80:c2:00:00:0e, :03 or :00 (the
/// three LLDP group addresses), at most one byte more than the largest
/// LLDP frame (so that a longer one shows as such); nothing else is queued,
/// so other traffic on the member costs no wake-up and no frame budget.
pub(crate) fn lldp_filter() -> [SockFilter; 10] {
    const LD_W_ABS: u16 = 0x20;
    const LDH_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let group = u32::from_be_bytes([
        NEAREST_BRIDGE[0],
        NEAREST_BRIDGE[1],
        NEAREST_BRIDGE[2],
        NEAREST_BRIDGE[3],
    ]);
    let keep = u32::try_from(ETH_HEADER + MAX_LLDPDU + 1).expect("a frame length fits u32");
    [
        SockFilter::new(LDH_ABS, 0, 0, 12),
        SockFilter::new(JEQ_K, 0, 7, u32::from(ETHERTYPE)),
        SockFilter::new(LD_W_ABS, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 5, group),
        SockFilter::new(LDH_ABS, 0, 0, 4),
        SockFilter::new(JEQ_K, 2, 0, 0x000e),
        SockFilter::new(JEQ_K, 1, 0, 0x0003),
        SockFilter::new(JEQ_K, 0, 1, 0x0000),
        SockFilter::new(RET_K, 0, 0, keep),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// A packet socket for LLDP on `member`: filtered, bound to it, the group
/// joined, the node's own frames ignored.
fn open(member: &str) -> Result<tokio::net::UdpSocket, String> {
    if !crate::dhcp::valid_device(member) {
        return Err(format!("`{member}` is not an interface name"));
    }
    let ifindex = nix::net::if_::if_nametoindex(member)
        .map_err(|e| format!("{member}: no such interface ({e})"))?;
    let ifindex = i32::try_from(ifindex).map_err(|e| format!("{member}: ifindex: {e}"))?;
    let fail = |what: &str, e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (needs CAP_NET_RAW)"
        } else {
            ""
        };
        format!("{member}: {what}: {e}{hint}")
    };
    // Protocol 0: nothing is queued before the filter and the bind.
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
        .map_err(|e| fail("cannot open a packet socket", e))?;
    sock.attach_filter(&lldp_filter())
        .map_err(|e| fail("cannot filter the packet socket", e))?;
    sock.set_recv_buffer_size(RCVBUF)
        .map_err(|e| fail("cannot set the receive buffer", e))?;
    crate::packet::ignore_outgoing(&sock).map_err(|e| {
        fail(
            "cannot ignore outgoing frames (PACKET_IGNORE_OUTGOING, Linux 4.20)",
            e,
        )
    })?;
    sock.bind(&crate::packet::link_addr(ifindex, ETH_P_ALL, [0; 6]))
        .map_err(|e| fail("cannot bind the packet socket", e))?;
    crate::packet::add_membership(&sock, ifindex, libc::PACKET_MR_MULTICAST, NEAREST_BRIDGE)
        .map_err(|e| fail("cannot join 01:80:c2:00:00:0e", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| fail("cannot set non-blocking", e))?;
    // Read through tokio's datagram type, as the ARP and DHCP probes do.
    tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| fail("cannot register the socket", e))
}
