//! Reports reach the fleet in batches, applied by a thread of their own
//! (`report-apply`, at the process's priority), and ingestion gives way to
//! readers: the write lock is taken only when nobody holds the lock
//! (`try_write`), never queued for while a gate question renders, for up to
//! [`PATIENCE`]; only then does the batch queue for it like any writer.
//!
//! Why give way: the standard read-write lock lets no new reader in while a
//! writer waits. With 11,000 reports a second some report is nearly always
//! waiting, so every question for a rack-sized scope used to queue behind a
//! report that queued behind a whole-fleet answer being rendered
//! (milliseconds at 100,000 nodes).
//!
//! Why a thread of its own: the report handlers run at a lower priority
//! (nice +10, `crate::handoff`), and they used to apply the batch
//! themselves (whoever got the lock applied everyone's queued reports).
//! When the CPUs were busy, a handler holding the write lock could wait
//! milliseconds for a CPU while every gate question waited for it: the
//! lower priority leaked into the gate. Now a handler parses, checks and
//! prepares a report at the lower priority, queues it and waits for its
//! outcome; the applier takes the lock at normal priority, applies at most
//! [`MAX_BATCH`] reports and lets it go.
//!
//! A report is answered only once it is applied (or refused): an agent's
//! accepted report is in every gate answer asked after it was accepted.
//! Deadlines that fell due are processed with each batch (`tick`), so the
//! sweeper rarely has to take the lock under load.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard, TryLockError};
use std::time::Duration;

use preflight_model::report::Waiver;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::{lock, write};
use crate::fleet::{Fleet, FleetError, PreparedReport, ReportOutcome};

/// How long a batch gives way to readers before it queues for the lock
/// (which then lets no new reader in until it had its turn).
pub(super) const PATIENCE: Duration = Duration::from_millis(10);

/// How often the applier tries the lock again while a reader holds it.
const RETRY: Duration = Duration::from_micros(200);

/// Most reports applied under one hold of the write lock: a backlog is
/// applied in several holds, and readers get in between them.
pub(super) const MAX_BATCH: usize = 256;

/// How long the applier lets reports gather after a bell before it takes
/// them: at 11,000 reports a second, a batch of about five instead of a
/// thread hand-over (two wake-ups) per report, which cost the aggregator
/// about a fifth of a core (docs/benchmarks.md). A report has seconds of
/// slack; its agent waits this much longer for its answer.
pub(super) const GATHER: Duration = Duration::from_micros(500);

/// What the fleet made of a report (the fleet keeps the report).
pub(super) type Applied = Result<ReportOutcome, FleetError>;

/// A report's outcome and, for a full report the fleet took, the retired
/// boot ids of its node right after it (read under the same hold of the
/// lock), which the report writer stores with it: empty otherwise.
pub(super) type Reply = (Applied, Vec<crate::store::RetiredBoot>);

/// An applied report's outcome with where it goes.
type Outcome = (oneshot::Sender<Reply>, Reply);

struct Job {
    report: PreparedReport,
    /// The report's node, for the log should applying it panic.
    node: String,
    reply: oneshot::Sender<Reply>,
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

/// The queue of reports waiting for the applier. Cheap to clone; the
/// applier thread ends when every clone is dropped.
#[derive(Clone)]
pub(super) struct Applier {
    queue: Arc<Mutex<Vec<Job>>>,
    /// Wakes the applier (a bell already rung is enough).
    bell: SyncSender<()>,
}

/// What the applier thread works with.
struct Worker {
    fleet: Arc<RwLock<Fleet>>,
    queue: Arc<Mutex<Vec<Job>>>,
    expiries: Arc<Expiries>,
    patience: Duration,
}

impl Applier {
    /// Starts the applier thread over `fleet`, at the calling thread's
    /// priority.
    pub(super) fn new(fleet: Arc<RwLock<Fleet>>, expiries: Arc<Expiries>) -> Self {
        Self::with_patience(fleet, expiries, PATIENCE)
    }

    /// [`Applier::new`] with a patience of its own (tests).
    pub(super) fn with_patience(
        fleet: Arc<RwLock<Fleet>>,
        expiries: Arc<Expiries>,
        patience: Duration,
    ) -> Self {
        let queue = Arc::<Mutex<Vec<Job>>>::default();
        let (bell, rung) = sync_channel(1);
        let worker = Worker {
            fleet,
            queue: Arc::clone(&queue),
            expiries,
            patience,
        };
        std::thread::Builder::new()
            .name("report-apply".into())
            .spawn(move || restarting(|| worker.run(&rung)))
            .expect("spawn the report applier thread");
        Self { queue, bell }
    }

    /// Applies `report` (its state prepared ahead, and kept by the fleet)
    /// and returns the outcome, with its node's retired boot ids when it
    /// was a full report taken ([`Reply`]); `None` when applying it
    /// panicked.
    pub(super) async fn apply(&self, report: PreparedReport) -> Option<Reply> {
        let (reply, answer) = oneshot::channel();
        let node = report.node.clone();
        lock(&self.queue).push(Job {
            report,
            node,
            reply,
        });
        // Full: the applier has been woken and not yet taken the queue,
        // so it will take this job too.
        let _ = self.bell.try_send(());
        answer.await.ok()
    }
}

/// Runs `run` again each time it panics, until it returns. A panic in the
/// applier outside a report's own `catch_unwind` (processing deadlines,
/// say) would otherwise end the thread and leave every later report
/// waiting for an answer that never comes (the agents time out, their
/// nodes go stale, the gate says no-go with no cause to show). The
/// reports it had taken are refused (their replies are dropped while
/// unwinding: "not applied"); the lock it held is poisoned, which every
/// user of the fleet's lock takes over as it is.
fn restarting(mut run: impl FnMut()) {
    while std::panic::catch_unwind(AssertUnwindSafe(&mut run)).is_err() {
        tracing::error!(
            "the report applier panicked and was restarted; the reports it held were refused"
        );
    }
}

impl Worker {
    /// Applies queued reports each time the bell rings, until every
    /// [`Applier`] is dropped.
    fn run(&self, rung: &Receiver<()>) {
        while rung.recv().is_ok() {
            std::thread::sleep(GATHER);
            // A bell rung meanwhile is served by this pass.
            let _ = rung.try_recv();
            loop {
                let mut fleet = self.take_lock();
                let (done, more) = self.apply_queued(&mut fleet);
                drop(fleet);
                for (reply, outcome) in done {
                    let _ = reply.send(outcome);
                }
                if !more {
                    break;
                }
            }
        }
    }

    /// The write lock, once nobody holds the lock, or queued for once
    /// [`PATIENCE`] ran out.
    fn take_lock(&self) -> RwLockWriteGuard<'_, Fleet> {
        let start = std::time::Instant::now();
        loop {
            match self.fleet.try_write() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) if start.elapsed() >= self.patience => {
                    return write(&self.fleet);
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(RETRY),
            }
        }
    }

    /// Applies up to [`MAX_BATCH`] queued reports under the write lock;
    /// returns each outcome with where it goes, to hand out
    /// once the lock is released, and whether more are queued.
    fn apply_queued(&self, fleet: &mut RwLockWriteGuard<'_, Fleet>) -> (Vec<Outcome>, bool) {
        let (jobs, more) = {
            let mut queue = lock(&self.queue);
            let n = queue.len().min(MAX_BATCH);
            let jobs: Vec<Job> = queue.drain(..n).collect();
            (jobs, !queue.is_empty())
        };
        let mut done = Vec::with_capacity(jobs.len());
        for Job {
            report,
            node,
            reply,
        } in jobs
        {
            let wall = crate::clock::wall();
            // A report that makes the fleet panic is refused alone (its
            // reply dropped); the others go on.
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                fleet.apply_prepared(report, Instant::now(), wall)
            }));
            match r {
                Ok(outcome) => {
                    let retired = match &outcome {
                        Ok(ReportOutcome::Accepted { full: true, .. }) => {
                            fleet.retired_boots(&node).to_vec()
                        }
                        _ => Vec::new(),
                    };
                    done.push((reply, (outcome, retired)));
                }
                Err(_) => {
                    tracing::error!(node = %node, "applying a report panicked; refused");
                }
            }
        }
        self.expiries.tick(fleet, Instant::now());
        (done, more)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use preflight_model::report::{Report, ReportBody};
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

    fn applier(patience: Duration) -> (Applier, Arc<RwLock<Fleet>>) {
        let cfg = FleetConfig {
            ttl: Duration::from_secs(30),
            settle: Duration::ZERO,
            closed_inventory: false,
            max_waiver: Duration::from_secs(86_400),
            min_waiver: Duration::from_secs(60),
            ..FleetConfig::default()
        };
        let fleet = Arc::new(RwLock::new(Fleet::new(cfg, SystemTime::now())));
        (
            Applier::with_patience(Arc::clone(&fleet), Arc::default(), patience),
            fleet,
        )
    }

    /// Which report an outcome is about: the applier keeps the report and
    /// answers with the outcome alone, so the test remembers it.
    struct Sent {
        node: String,
        seq: u64,
    }

    fn apply(a: &Applier, r: Report) -> tokio::task::JoinHandle<Option<(Sent, Applied)>> {
        let a = a.clone();
        let sent = Sent {
            node: r.node.clone(),
            seq: r.seq,
        };
        tokio::spawn(async move {
            a.apply(PreparedReport::from(r))
                .await
                .map(|(o, _)| (sent, o))
        })
    }

    /// A gate question on a thread of its own: holds the read lock for
    /// `hold` once it has it (returned when taken), then says whether a new
    /// reader could still get in at that moment.
    fn reader(fleet: &Arc<RwLock<Fleet>>, hold: Duration) -> std::thread::JoinHandle<bool> {
        let fleet = Arc::clone(fleet);
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

    #[test]
    fn a_panicking_applier_starts_again_until_it_returns() {
        let mut runs = 0;
        restarting(|| {
            runs += 1;
            assert!(runs >= 3, "run {runs} panics");
        });
        assert_eq!(runs, 3);
    }

    #[tokio::test]
    async fn a_report_gives_way_to_a_reader_and_is_applied_after_it() {
        let (a, fleet) = applier(Duration::from_secs(5));
        let reader = reader(&fleet, Duration::from_millis(30));
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
        assert!(fleet.read().expect("read").status("n1").is_some());
    }

    #[tokio::test]
    async fn out_of_patience_a_report_queues_for_the_lock() {
        let (a, fleet) = applier(Duration::from_millis(10));
        let reader = reader(&fleet, Duration::from_millis(200));
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
        let (a, fleet) = applier(PATIENCE);
        // Held so that reports pile up in the queue and are applied in
        // batches of at most MAX_BATCH (600 of them: at least three).
        let reader = reader(&fleet, Duration::from_millis(5));
        let mut tasks = Vec::new();
        for i in 0..600u64 {
            tasks.push((i, apply(&a, report(&format!("n{}", i % 50), i / 50 + 1))));
        }
        for (i, t) in tasks {
            let (back, outcome) = t.await.expect("task").expect("applied");
            assert_eq!(back.node, format!("n{}", i % 50));
            assert_eq!(back.seq, i / 50 + 1);
            // Reports of one node raced each other: each is accepted, or
            // refused as not newer than one applied before it; none lost.
            match outcome {
                Ok(ReportOutcome::Accepted { .. }) => {}
                // A refusal names the report it is about: each outcome went
                // to its own sender.
                Err(FleetError::StaleSequence { node, got, .. }) => {
                    assert_eq!((node, got), (back.node.clone(), back.seq), "report {i}");
                }
                other => panic!("report {i}: {other:?}"),
            }
        }
        reader.join().expect("reader");
        let f = fleet.read().expect("read");
        for n in 0..50 {
            assert!(f.status(&format!("n{n}")).is_some(), "n{n} missing");
        }
        assert!(a.queue.lock().expect("queue").is_empty());
    }
}
