//! Reports reach the fleet through one applier thread, in batches, and the
//! applier gives way to readers: it takes the write lock only when no gate
//! question holds the read lock (`polite_write`), waiting at most
//! [`PATIENCE`] before it queues for it like any writer.
//!
//! Why: the standard read-write lock lets no new reader in while a writer
//! waits. With 11,000 reports a second, some report is nearly always
//! waiting, so every question for a rack-sized scope used to queue behind
//! a report that queued behind a whole-fleet answer being rendered
//! (milliseconds at 100,000 nodes). Now a rack question waits at most for
//! one batch (the reports that arrived meanwhile, microseconds each), and
//! a request handler never blocks its worker thread on the write lock.
//!
//! A report is answered only once it is applied (or refused): an agent's
//! accepted report is in every gate answer asked after it was accepted.
//! Deadlines that fell due are processed with each batch (`tick`), so the
//! sweeper rarely has to take the lock under load.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard, TryLockError};
use std::time::Duration;

use preflight_model::report::{Report, Waiver};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::{lock, write};
use crate::fleet::{Fleet, FleetError, Prepared, ReportOutcome};

/// How long a writer gives way to readers before it queues for the lock
/// (which then lets no new reader in until it had its turn).
pub(super) const PATIENCE: Duration = Duration::from_millis(10);

/// Most reports applied under one taking of the write lock.
pub(super) const MAX_BATCH: usize = 256;

/// Reports waiting for the applier, at most (senders wait beyond it).
const QUEUE: usize = 4096;

/// An applied report: the report back (its sender needs it to store it)
/// and what the fleet made of it.
pub(super) type Applied = (Report, Result<ReportOutcome, FleetError>);

struct Job {
    report: Report,
    prepared: Option<Prepared>,
    reply: oneshot::Sender<Applied>,
}

/// The handle report handlers send through. Cheap to clone; the thread
/// ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Applier {
    tx: mpsc::Sender<Job>,
}

/// Where expired waivers go for the sweeper to record, and its bell.
pub(super) struct Expiries {
    pub(super) expired: Arc<Mutex<Vec<Waiver>>>,
    pub(super) wake: Arc<Notify>,
}

impl Applier {
    pub(super) fn spawn(fleet: Arc<RwLock<Fleet>>, expiries: Expiries) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("report-applier".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    apply_batch(&fleet, &mut batch, &expiries);
                }
            })
            .expect("spawn the report applier thread");
        Self { tx }
    }

    /// Applies `report` (its state copied ahead in `prepared`) and returns
    /// it with the outcome; `None` when the applier is gone (it panicked).
    pub(super) async fn apply(
        &self,
        report: Report,
        prepared: Option<Prepared>,
    ) -> Option<Applied> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                report,
                prepared,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }
}

fn apply_batch(fleet: &RwLock<Fleet>, batch: &mut Vec<Job>, expiries: &Expiries) {
    let mut done = Vec::with_capacity(batch.len());
    let expired = {
        let mut f = polite_write(fleet, PATIENCE);
        for job in batch.drain(..) {
            let wall = crate::clock::wall();
            // A report that makes the fleet panic is refused alone; the
            // others, and the thread, go on (the lock is not poisoned by
            // a caught panic).
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                f.apply_prepared(&job.report, job.prepared, Instant::now(), wall)
            }));
            match r {
                Ok(outcome) => done.push((job.reply, job.report, outcome)),
                Err(_) => {
                    tracing::error!(node = %job.report.node, "applying a report panicked; refused")
                }
            }
        }
        f.tick(Instant::now())
    };
    if !expired.is_empty() {
        lock(&expiries.expired).extend(expired);
        expiries.wake.notify_one();
    }
    for (reply, report, outcome) in done {
        let _ = reply.send((report, outcome));
    }
}

/// The write lock, taken only when no reader holds the lock, for up to
/// `patience`; then taken as usual (waiting readers first, new ones after).
/// For threads that may block (never a runtime's worker).
pub(super) fn polite_write<T>(m: &RwLock<T>, patience: Duration) -> RwLockWriteGuard<'_, T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match m.try_write() {
            Ok(g) => return g,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {}
        }
        if start.elapsed() >= patience {
            return write(m);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_gives_way_to_readers_then_queues() {
        let lock = Arc::new(RwLock::new(0u32));
        let held = lock.read().expect("read");
        let t = std::time::Instant::now();
        let l = lock.clone();
        let writer = std::thread::spawn(move || {
            *polite_write(&l, Duration::from_millis(50)) += 1;
        });
        // While it waits politely, new readers still get in.
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(*lock.try_read().expect("a new reader gets in"), 0);
        drop(held);
        writer.join().expect("writer");
        assert_eq!(*lock.read().expect("read"), 1);
        assert!(t.elapsed() >= Duration::from_millis(10));
    }

    #[test]
    fn a_writer_out_of_patience_takes_the_lock_after_the_readers() {
        let lock = Arc::new(RwLock::new(0u32));
        let held = lock.read().expect("read");
        let l = lock.clone();
        let writer = std::thread::spawn(move || {
            *polite_write(&l, Duration::from_millis(5)) += 1;
        });
        std::thread::sleep(Duration::from_millis(60));
        // Out of patience, it queued: no new reader gets in now.
        assert!(
            lock.try_read().is_err(),
            "a queued writer keeps new readers out"
        );
        drop(held);
        writer.join().expect("writer");
        assert_eq!(*lock.read().expect("read"), 1);
    }
}
