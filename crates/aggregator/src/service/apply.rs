//! Reports reach the fleet in batches, and ingestion gives way to readers:
//! the write lock is taken only when nobody holds the lock (`try_write`),
//! never queued for while a gate question renders, for up to [`PATIENCE`];
//! only then does a report queue for it like any writer.
//!
//! Why: the standard read-write lock lets no new reader in while a writer
//! waits. With 11,000 reports a second some report is nearly always
//! waiting, so every question for a rack-sized scope used to queue behind a
//! report that queued behind a whole-fleet answer being rendered
//! (milliseconds at 100,000 nodes).
//!
//! How (combining, no thread of its own): a report joins a shared queue and
//! tries the lock. Whoever gets it applies the whole queue, its own report
//! and those of the handlers that did not get it, and hands each its
//! outcome. A handler that did not get it waits for its outcome and tries
//! again every [`RETRY`] (a reader may hold the lock and nobody else may
//! come). So uncontended, a report is applied by its own handler with no
//! hand-over; a request handler never blocks its worker thread on the lock
//! until its patience ran out.
//!
//! A report is answered only once it is applied (or refused): an agent's
//! accepted report is in every gate answer asked after it was accepted.
//! Deadlines that fell due are processed with each batch (`tick`), so the
//! sweeper rarely has to take the lock under load.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard, TryLockError};
use std::time::Duration;

use preflight_model::report::{Report, Waiver};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::{lock, write};
use crate::fleet::{Fleet, FleetError, Prepared, ReportOutcome};

/// How long a report gives way to readers before it queues for the lock
/// (which then lets no new reader in until it had its turn).
pub(super) const PATIENCE: Duration = Duration::from_millis(10);

/// How often a report that did not get the lock tries again.
const RETRY: Duration = Duration::from_millis(1);

/// An applied report: the report back (its sender needs it to store it)
/// and what the fleet made of it.
pub(super) type Applied = (Report, Result<ReportOutcome, FleetError>);

/// An applied report with where its outcome goes.
type Outcome = (
    oneshot::Sender<Applied>,
    Report,
    Result<ReportOutcome, FleetError>,
);

struct Job {
    report: Report,
    prepared: Option<Prepared>,
    reply: oneshot::Sender<Applied>,
}

/// Where waivers that expired in a tick run outside the sweeper (by a
/// report batch or a reader that found the fleet behind the clock) go for
/// the sweeper to record, and its bell. Shared by the service and the
/// applier.
#[derive(Default)]
pub(super) struct Expiries {
    expired: Mutex<Vec<Waiver>>,
    wake: Notify,
}

impl Expiries {
    /// Processes every deadline that has passed at `now` and hands the
    /// waivers that expired to the sweeper.
    pub(super) fn tick(&self, fleet: &mut Fleet, now: Instant) {
        let expired = fleet.tick(now);
        if !expired.is_empty() {
            lock(&self.expired).extend(expired);
            self.wake.notify_one();
        }
    }

    /// The waivers handed over since the last call.
    pub(super) fn take(&self) -> Vec<Waiver> {
        std::mem::take(&mut *lock(&self.expired))
    }

    /// Resolves when some were handed over.
    pub(super) async fn handed(&self) {
        self.wake.notified().await;
    }
}

/// The queue of reports waiting for the lock. Cheap to clone.
#[derive(Clone)]
pub(super) struct Applier {
    fleet: Arc<RwLock<Fleet>>,
    queue: Arc<Mutex<Vec<Job>>>,
    expiries: Arc<Expiries>,
    /// [`PATIENCE`] (tests set their own).
    patience: Duration,
}

impl Applier {
    pub(super) fn new(fleet: Arc<RwLock<Fleet>>, expiries: Arc<Expiries>) -> Self {
        Self {
            fleet,
            queue: Arc::default(),
            expiries,
            patience: PATIENCE,
        }
    }

    /// Applies `report` (its state copied ahead in `prepared`) and returns
    /// it with the outcome; `None` when applying it panicked.
    pub(super) async fn apply(
        &self,
        report: Report,
        prepared: Option<Prepared>,
    ) -> Option<Applied> {
        let (reply, mut answer) = oneshot::channel();
        lock(&self.queue).push(Job {
            report,
            prepared,
            reply,
        });
        let start = std::time::Instant::now();
        loop {
            if let Some(mut fleet) = self.try_write(start.elapsed() >= self.patience) {
                let done = self.apply_queued(&mut fleet);
                drop(fleet);
                for (reply, report, outcome) in done {
                    let _ = reply.send((report, outcome));
                }
            }
            match answer.try_recv() {
                Ok(applied) => return Some(applied),
                Err(oneshot::error::TryRecvError::Closed) => return None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Another handler holds the lock and applies it, or a reader
            // holds it: wait for the outcome, or try again.
            match tokio::time::timeout(RETRY, &mut answer).await {
                Ok(Ok(applied)) => return Some(applied),
                Ok(Err(_)) => return None,
                Err(_) => {}
            }
        }
    }

    fn try_write(&self, out_of_patience: bool) -> Option<RwLockWriteGuard<'_, Fleet>> {
        if out_of_patience {
            return Some(write(&self.fleet));
        }
        match self.fleet.try_write() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Applies every queued report under the write lock; returns each
    /// outcome with its report and where it goes, to hand out once the
    /// lock is released.
    fn apply_queued(&self, fleet: &mut RwLockWriteGuard<'_, Fleet>) -> Vec<Outcome> {
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            let wall = crate::clock::wall();
            // A report that makes the fleet panic is refused alone (its
            // reply dropped); the others go on.
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                fleet.apply_prepared(&job.report, job.prepared, Instant::now(), wall)
            }));
            match r {
                Ok(outcome) => done.push((job.reply, job.report, outcome)),
                Err(_) => {
                    tracing::error!(node = %job.report.node, "applying a report panicked; refused");
                }
            }
        }
        self.expiries.tick(fleet, Instant::now());
        done
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use preflight_model::report::ReportBody;
    use preflight_model::{NodeState, Snapshot};

    use super::*;
    use crate::fleet::FleetConfig;

    fn report(node: &str, seq: u64) -> Report {
        Report {
            node: node.into(),
            boot_id: "boot-1".into(),
            seq,
            body: ReportBody::Full {
                labels: [("rack".to_string(), "r1".to_string())].into(),
                state: Box::new(NodeState::new(node.into(), &Snapshot::default(), vec![])),
            },
        }
    }

    fn applier(patience: Duration) -> Applier {
        let cfg = FleetConfig {
            ttl: Duration::from_secs(30),
            settle: Duration::ZERO,
            closed_inventory: false,
            max_waiver: Duration::from_secs(86_400),
            min_waiver: Duration::from_secs(60),
        };
        let fleet = Arc::new(RwLock::new(Fleet::new(cfg, SystemTime::now())));
        Applier {
            patience,
            ..Applier::new(fleet, Arc::default())
        }
    }

    fn apply(a: &Applier, r: Report) -> tokio::task::JoinHandle<Option<Applied>> {
        let a = a.clone();
        let prepared = Prepared::new(&r);
        tokio::spawn(async move { a.apply(r, prepared).await })
    }

    /// A gate question on a thread of its own: holds the read lock for
    /// `hold` once it has it (returned when taken), then says whether a new
    /// reader could still get in at that moment.
    fn reader(a: &Applier, hold: Duration) -> std::thread::JoinHandle<bool> {
        let fleet = a.fleet.clone();
        let (taken_tx, taken) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let guard = fleet.read().expect("read");
            taken_tx.send(()).expect("test waits");
            std::thread::sleep(hold);
            let others_get_in = fleet.try_read().is_ok();
            drop(guard);
            others_get_in
        });
        taken.recv().expect("the reader took the lock");
        t
    }

    #[tokio::test]
    async fn a_report_gives_way_to_a_reader_and_is_applied_after_it() {
        let a = applier(Duration::from_secs(5));
        let reader = reader(&a, Duration::from_millis(30));
        let pending = apply(&a, report("n1", 1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!pending.is_finished(), "applied under a reader");
        let (back, outcome) = pending.await.expect("task").expect("applied");
        // While it waited within its patience, new readers still got in.
        assert!(
            reader.join().expect("reader"),
            "a waiting report kept a new reader out"
        );
        assert_eq!(back.node, "n1");
        assert!(
            matches!(outcome, Ok(ReportOutcome::Accepted { .. })),
            "{outcome:?}"
        );
        assert!(a.fleet.read().expect("read").status("n1").is_some());
    }

    #[tokio::test]
    async fn out_of_patience_a_report_queues_for_the_lock() {
        let a = applier(Duration::from_millis(10));
        let reader = reader(&a, Duration::from_millis(200));
        let (_, outcome) = apply(&a, report("n1", 1))
            .await
            .expect("task")
            .expect("applied");
        assert!(outcome.is_ok(), "{outcome:?}");
        // It had queued (no new reader got in) before the reader let go.
        assert!(
            !reader.join().expect("reader"),
            "a report out of patience did not queue"
        );
    }

    #[tokio::test]
    async fn concurrent_reports_each_get_their_own_outcome() {
        let a = applier(PATIENCE);
        // Held so that reports pile up in the queue and the one handler
        // that gets the lock applies the others'.
        let reader = reader(&a, Duration::from_millis(5));
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            tasks.push((i, apply(&a, report(&format!("n{}", i % 50), i / 50 + 1))));
        }
        for (i, t) in tasks {
            let (back, outcome) = t.await.expect("task").expect("applied");
            assert_eq!(back.node, format!("n{}", i % 50));
            assert_eq!(back.seq, i / 50 + 1);
            // Reports of one node raced each other: each is accepted, or
            // refused as not newer than one applied before it; none lost.
            match outcome {
                Ok(ReportOutcome::Accepted { .. }) | Err(FleetError::StaleSequence { .. }) => {}
                other => panic!("report {i}: {other:?}"),
            }
        }
        reader.join().expect("reader");
        let f = a.fleet.read().expect("read");
        for n in 0..50 {
            assert!(f.status(&format!("n{n}")).is_some(), "n{n} missing");
        }
        assert!(a.queue.lock().expect("queue").is_empty());
    }
}
