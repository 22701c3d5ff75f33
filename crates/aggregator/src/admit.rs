//! Which new connection gets one of the process's connection slots, so
//! that a flood from one address (or a few) cannot keep a pipeline's gate
//! question or an agent's report out (issue 37: 1,000 slowloris
//! connections under `ulimit -n 1024` held every slot for 30 s and
//! `preflight gate` exited 2).
//!
//! Three rules, checked when a connection is accepted:
//! - one source address holds at most [`ConnLimits::max_per_source`]
//!   connections;
//! - the last [`ConnLimits::reserve`] slots go only to an address holding
//!   fewer than [`RESERVE_BELOW`] connections (a pipeline's `preflight
//!   gate`, an agent reconnecting, both perhaps on a host whose agent
//!   keeps a connection), so that a flood from a few addresses still
//!   leaves room for another;
//! - past a limit, the oldest connection that has not sent a whole
//!   request head yet (of that address, or of any when the process is
//!   full) is closed to make room: such a connection has cost the attacker
//!   nothing and served nobody, while one that sent a request, such as an
//!   agent's kept-alive connection, is never closed for a newcomer. Only
//!   when there is no such connection is the newcomer refused (accepted
//!   and closed at once, so that it learns now instead of waiting in the
//!   kernel's backlog).
//!
//! Refusals and evictions are counted in
//! `preflight_aggregator_connections_refused_total{reason}` and logged at
//! most every [`WARN_EVERY`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use preflight_model::config::{at, ConfigError};
use prometheus::IntCounterVec;
use tokio::sync::oneshot;
use toml::Spanned;

/// Default cap on one source address's open connections: far above what
/// one pipeline host or agent opens (one or two), far below the slots of
/// a process with the usual descriptor limits. An aggregator behind a
/// proxy or NAT that sees every client from one address needs it raised
/// (`aggregator.max_connections_per_source`).
pub const DEFAULT_MAX_PER_SOURCE: usize = 64;

/// Largest `aggregator.max_connections_per_source`.
pub const MAX_PER_SOURCE: usize = 1_000_000;

/// `aggregator.max_connections_per_source` (`key` makes the dotted key):
/// 1 to [`MAX_PER_SOURCE`], [`DEFAULT_MAX_PER_SOURCE`] when absent.
///
/// # Errors
/// Out of range, naming the key and the value's place.
pub fn per_source_at(
    key: impl Fn(&str) -> String,
    v: Option<&Spanned<i64>>,
) -> Result<usize, ConfigError> {
    let Some(v) = v else {
        return Ok(DEFAULT_MAX_PER_SOURCE);
    };
    let n = *v.get_ref();
    match usize::try_from(n) {
        Ok(c) if (1..=MAX_PER_SOURCE).contains(&c) => Ok(c),
        _ => Err(at(
            key("max_connections_per_source"),
            v,
            format!("{n}: expected 1 to {MAX_PER_SOURCE} connections per client address"),
        )),
    }
}

/// Limits on client connections: the slots shared out here, and the
/// timeouts [`crate::conn`] holds a connection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Of those, how many only an address holding fewer than
    /// [`RESERVE_BELOW`] connections may take (a pipeline's
    /// gate, an agent reconnecting).
    pub reserve: usize,
    /// Connections one source address may hold.
    pub max_per_source: usize,
    /// Longest wait for a new connection's first bytes (after the TLS
    /// handshake): clients send their request as soon as they connect.
    pub first_byte_timeout: Duration,
    /// Longest wait for a request's headers, idle keep-alive time included.
    pub header_read_timeout: Duration,
}

/// File descriptors kept free of client connections: the store, the
/// PostgreSQL listener, logs, the blocking pool.
const RESERVED_FDS: u64 = 64;

/// Fewest slots in [`ConnLimits::reserve`] (a tenth of the connections
/// when that is more; at most half).
pub const MIN_RESERVE: usize = 64;

impl ConnLimits {
    /// The defaults for this process: as many connections as the file
    /// descriptor limit (`LimitNOFILE`) leaves room for, a tenth of them
    /// (at least [`MIN_RESERVE`]) kept for new addresses,
    /// [`DEFAULT_MAX_PER_SOURCE`] per address, 5 s for the
    /// first bytes and 30 s for headers.
    #[must_use]
    pub fn for_this_process() -> Self {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let max_connections =
            usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
        Self {
            max_connections,
            reserve: (max_connections / 10)
                .max(MIN_RESERVE)
                .min(max_connections / 2),
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            first_byte_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Longest a refusal goes unlogged (they are counted meanwhile).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// An address holding fewer connections than this may take a reserved
/// slot: an agent's kept-alive one, a pipeline's gate and the page opened
/// from the same host need no more.
pub const RESERVE_BELOW: usize = 4;

/// The values of the `reason` label (the complete set).
pub const REFUSE_REASONS: &[&str] = &["per_source", "capacity", "evicted"];

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds its cap of connections, each of which sent a
    /// request.
    PerSource,
    /// No slot is left for it, and no connection can be closed for it.
    Capacity,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::PerSource => "per_source",
            Self::Capacity => "capacity",
        }
    }
}

#[derive(Debug, Default)]
struct Source {
    open: usize,
    /// Its connections without a whole request head yet, oldest first.
    pending: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    next_id: u64,
    sources: HashMap<IpAddr, Source>,
    /// Every connection without a whole request head yet, oldest first
    /// (ids only grow), with the means to close it.
    pending: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    warned: Option<Instant>,
    unwarned: u64,
}

impl Table {
    /// Closes the oldest pending connection, of `ip` or of anyone.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> bool {
        let id = match ip {
            Some(ip) => self
                .sources
                .get(&ip)
                .and_then(|s| s.pending.first().copied()),
            None => self.pending.keys().next().copied(),
        };
        let Some(id) = id else { return false };
        if let Some((owner, close)) = self.pending.remove(&id) {
            if let Some(s) = self.sources.get_mut(&owner) {
                s.pending.remove(&id);
            }
            // Its task may have ended already: nothing more to close.
            let _ = close.send(());
        }
        true
    }

    fn forget_pending(&mut self, id: u64, ip: IpAddr) {
        self.pending.remove(&id);
        if let Some(s) = self.sources.get_mut(&ip) {
            s.pending.remove(&id);
        }
    }
}

/// The process's connection slots and who holds them.
#[derive(Debug)]
pub struct Admission {
    limits: ConnLimits,
    table: Mutex<Table>,
    refused: IntCounterVec,
}

impl Admission {
    /// Slots as `limits` says; refusals counted in `refused` (by reason).
    #[must_use]
    pub fn new(limits: ConnLimits, refused: IntCounterVec) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::default(),
            refused,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table's updates cannot panic half-way; a poisoned lock only
        // means another thread panicked elsewhere while holding it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `ip`, closing an older pending one if
    /// that makes room (see the module comment).
    ///
    /// # Errors
    /// [`Refusal`]: the caller closes the connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let l = &self.limits;
        let mut t = self.table();
        let held = t.sources.get(&ip).map_or(0, |s| s.open);
        let general = l.max_connections.saturating_sub(l.reserve);
        let over = if held >= l.max_per_source {
            Some((Refusal::PerSource, Some(ip)))
        } else if t.total >= l.max_connections || held >= RESERVE_BELOW && t.total >= general {
            Some((Refusal::Capacity, None))
        } else {
            None
        };
        if let Some((r, of)) = over {
            if t.evict_oldest(of) {
                self.refused.with_label_values(&["evicted"]).inc();
            } else {
                self.refuse(&mut t, ip, r);
                return Err(r);
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        t.total += 1;
        let (close, closed) = oneshot::channel();
        t.pending.insert(id, (ip, close));
        let source = t.sources.entry(ip).or_default();
        source.open += 1;
        source.pending.insert(id);
        drop(t);
        Ok(Admitted {
            ticket: Arc::new(Ticket {
                admission: Arc::clone(self),
                id,
                ip,
                served: AtomicBool::new(false),
            }),
            closed: Some(closed),
        })
    }

    /// Counts a refusal and logs it, at most every [`WARN_EVERY`].
    fn refuse(&self, t: &mut Table, ip: IpAddr, r: Refusal) {
        let l = &self.limits;
        self.refused.with_label_values(&[r.label()]).inc();
        let now = Instant::now();
        if t.warned.is_some_and(|w| now.duration_since(w) < WARN_EVERY) {
            t.unwarned += 1;
            return;
        }
        tracing::warn!(
            source = %ip,
            reason = r.label(),
            refused_before_unlogged = t.unwarned,
            open = t.total,
            max_connections = l.max_connections,
            max_per_source = l.max_per_source,
            "connection refused: its address holds max_connections_per_source connections that sent requests, or no slot is left"
        );
        t.warned = Some(now);
        t.unwarned = 0;
    }

    /// Connections open now (from `ip`, or in all).
    #[must_use]
    pub fn open(&self, ip: Option<IpAddr>) -> usize {
        let t = self.table();
        match ip {
            Some(ip) => t.sources.get(&ip).map_or(0, |s| s.open),
            None => t.total,
        }
    }
}

/// A connection's slot, given back when the last clone is dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    served: AtomicBool,
}

impl Ticket {
    /// The connection sent a whole request head: from now on it is never
    /// closed to make room for another.
    pub fn served(&self) {
        if !self.served.swap(true, Ordering::Relaxed) {
            self.admission.table().forget_pending(self.id, self.ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.admission.table();
        t.forget_pending(self.id, self.ip);
        t.total = t.total.saturating_sub(1);
        if let Some(s) = t.sources.get_mut(&self.ip) {
            s.open = s.open.saturating_sub(1);
            if s.open == 0 {
                t.sources.remove(&self.ip);
            }
        }
    }
}

/// An admitted connection: its slot, and the signal that closes it while
/// it is pending.
#[derive(Debug)]
pub struct Admitted {
    ticket: Arc<Ticket>,
    /// `None` once the connection was served (the sender dropped).
    closed: Option<oneshot::Receiver<()>>,
}

impl Admitted {
    /// The slot, for the code that sees the first request.
    #[must_use]
    pub fn ticket(&self) -> Arc<Ticket> {
        Arc::clone(&self.ticket)
    }

    /// Runs `work` for this connection unless it is closed to make room
    /// first (`None`; dropping `work` closes the socket).
    pub async fn guard<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        if let Some(closed) = &mut self.closed {
            tokio::select! {
                out = &mut work => return Some(out),
                r = closed => {
                    self.closed = None;
                    if r.is_ok() {
                        tracing::debug!(source = %self.ticket.ip, "connection closed to make room: no request yet");
                        return None;
                    }
                }
            }
        }
        Some(work.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, reserve: usize, per_source: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            reserve,
            max_per_source: per_source,
            first_byte_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
        }
    }

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["reason"]).expect("metric")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_full_source_loses_its_oldest_pending_connection_not_its_served_ones() {
        let refused = counter();
        let a = Admission::new(limits(100, 10, 3), refused.clone());
        let mut held: Vec<Admitted> = (0..3).map(|_| a.admit(ip(2)).expect("room")).collect();
        held[0].ticket().served();
        let mut fourth = a.admit(ip(2)).expect("the oldest pending one makes room");
        // The second (oldest pending) was told to close, the served first was not.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert_eq!(held[1].guard(std::future::pending::<()>()).await, None);
            let still = tokio::time::timeout(
                Duration::from_millis(20),
                held[0].guard(std::future::pending::<()>()),
            )
            .await;
            assert!(still.is_err(), "a served connection was closed");
            let still = tokio::time::timeout(
                Duration::from_millis(20),
                fourth.guard(std::future::pending::<()>()),
            )
            .await;
            assert!(still.is_err(), "the newcomer was closed");
        });
        drop(held.remove(1));
        // Every connection of the address served: the next one is refused.
        for h in &held {
            h.ticket().served();
        }
        fourth.ticket().served();
        assert_eq!(a.admit(ip(2)).err(), Some(Refusal::PerSource));
        assert_eq!(refused.with_label_values(&["per_source"]).get(), 1);
        assert_eq!(refused.with_label_values(&["evicted"]).get(), 1);
        // Another address is not affected.
        assert!(a.admit(ip(1)).is_ok());
    }

    #[test]
    fn the_per_source_cap_is_validated_with_its_key() {
        #[derive(serde::Deserialize)]
        struct Raw {
            n: Option<Spanned<i64>>,
        }
        let v = |src: &str| {
            let raw: Raw = toml::from_str(src).expect("toml");
            per_source_at(|k| format!("aggregator.{k}"), raw.n.as_ref())
        };
        assert_eq!(v("").expect("default"), DEFAULT_MAX_PER_SOURCE);
        assert_eq!(v("n = 10000").expect("in range"), 10_000);
        for bad in ["n = 0", "n = -1", "n = 1000001"] {
            let e = v(bad).expect_err(bad);
            assert_eq!(e.key, "aggregator.max_connections_per_source");
            assert!(e.reason.contains("expected 1 to 1000000"), "{}", e.reason);
        }
    }

    #[test]
    fn the_reserve_is_kept_for_addresses_holding_few_connections() {
        let refused = counter();
        let a = Admission::new(limits(12, 4, 100), refused.clone());
        // Eight general slots, taken by two flooding addresses, all served.
        let flood: Vec<Admitted> = (0..8)
            .map(|i| a.admit(ip(2 + i % 2)).expect("general slot"))
            .collect();
        for f in &flood {
            f.ticket().served();
        }
        assert_eq!(a.admit(ip(2)).err(), Some(Refusal::Capacity));
        assert_eq!(a.admit(ip(3)).err(), Some(Refusal::Capacity));
        // Addresses holding fewer than RESERVE_BELOW get the reserve,
        // until it is gone too.
        let gates: Vec<Admitted> = [10, 10, 10, 11]
            .into_iter()
            .map(|i| a.admit(ip(i)).expect("reserve"))
            .collect();
        for g in &gates {
            g.ticket().served();
        }
        assert_eq!(a.open(None), 12);
        assert_eq!(a.admit(ip(20)).err(), Some(Refusal::Capacity));
        assert_eq!(refused.with_label_values(&["capacity"]).get(), 3);
        drop(gates);
        drop(flood);
        assert_eq!(a.open(None), 0);
        assert_eq!(a.open(Some(ip(2))), 0);
    }

    #[test]
    fn a_full_process_closes_the_oldest_pending_connection_for_a_newcomer() {
        let a = Admission::new(limits(4, 1, 100), counter());
        let mut slow: Vec<Admitted> = (0..4).map(|_| a.admit(ip(2)).expect("room")).collect();
        let gate = a.admit(ip(1)).expect("a pending connection makes room");
        gate.ticket().served();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert_eq!(
            rt.block_on(slow[0].guard(std::future::pending::<()>())),
            None
        );
    }
}
