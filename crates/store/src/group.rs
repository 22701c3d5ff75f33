//! Group commit of the nodes that agents register on PostgreSQL. A new node
//! must be in the database before its first report is answered (a node that
//! never reports again must not drop out of the gate after a restart), and
//! one transaction per node costs a commit with its WAL flush and several
//! round trips, all behind the one store connection: a fleet whose agents
//! start together (10k nodes) was registered one node after another. Here
//! callers queue their change and wait; one writer thread, on a connection
//! of its own, takes everything queued and writes it in one transaction
//! while the next callers queue behind it. Each caller is answered only once
//! the transaction holding its row has committed (synced), or with the
//! error: a failed batch fails every change in it and writes none of them.
//! SQLite does not use this: its commits are local and stay one per node.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::postgres::PgStore;
use super::rows::Audit;
use super::{millis, NodeChange, PgSettings, StoreError};

/// The most changes written in one transaction (a bound on its size; more
/// wait for the next one, which starts at once).
pub const MAX_BATCH: usize = 1000;

struct Job {
    change: NodeChange,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the writer thread. Cheap to clone; the thread
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct NodeWriter {
    tx: Sender<Job>,
    db: String,
    batches: Arc<AtomicU64>,
}

impl std::fmt::Debug for NodeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeWriter")
            .field("db", &self.db)
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

/// The error of a whole batch, for each of its callers.
fn copy(e: &StoreError, db: &str, n: usize) -> StoreError {
    let message = match e {
        StoreError::Postgres { message, .. } => message.clone(),
        other => other.to_string(),
    };
    StoreError::Postgres {
        db: db.to_owned(),
        message: format!("{message} (a batch of {n} inventory changes, none written)"),
    }
}

fn write(rx: &Receiver<Job>, mut pg: PgStore, db: &str, batches: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let changes: Vec<NodeChange> = jobs.iter().map(|j| j.change.clone()).collect();
        let r = pg.upsert_nodes(&changes);
        batches.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            tracing::error!(error = %e, nodes = jobs.len(), "cannot write new nodes; each is refused");
        }
        for j in jobs {
            // A caller that went away (its request timed out) needs no answer.
            let _ = j.done.send(match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(copy(e, db, changes.len())),
            });
        }
    }
}

impl PgStore {
    /// Adds or relabels every node of `batch` in one transaction, one
    /// audit entry each, synced before it returns: all of it is written,
    /// or nothing. A node named twice gets its last labels. This is the
    /// group commit of this module: one WAL flush for a batch of new
    /// nodes instead of one per node.
    pub(super) fn upsert_nodes(&mut self, batch: &[NodeChange]) -> Result<(), StoreError> {
        // ON CONFLICT cannot touch one row twice in a statement: the last
        // change of each node wins, as it would one transaction at a time.
        let mut last = std::collections::HashMap::new();
        for (i, c) in batch.iter().enumerate() {
            last.insert(c.name.as_str(), i);
        }
        let mut rows: Vec<usize> = last.into_values().collect();
        rows.sort_unstable();
        let label_json: Vec<String> = batch
            .iter()
            .map(|c| serde_json::to_string(&c.labels).expect("string map serializes"))
            .collect();
        let names: Vec<&str> = rows.iter().map(|&i| batch[i].name.as_str()).collect();
        let labels: Vec<&str> = rows.iter().map(|&i| label_json[i].as_str()).collect();
        let added: Vec<i64> = rows.iter().map(|&i| millis(batch[i].at)).collect();
        let origins: Vec<&str> = rows
            .iter()
            .map(|&i| super::origin(&batch[i].actor))
            .collect();
        let ats: Vec<i64> = batch.iter().map(|c| millis(c.at)).collect();
        let actors: Vec<&str> = batch.iter().map(|c| c.actor.as_str()).collect();
        let details: Vec<String> = batch
            .iter()
            .map(|c| Audit::node_upsert(&c.name, &c.labels, &c.actor, c.at).detail)
            .collect();
        self.change("nodes", |tx| {
            tx.execute(
                "INSERT INTO nodes(name, labels, added_at, origin)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
                 ON CONFLICT(name) DO UPDATE SET labels=excluded.labels, origin=excluded.origin",
                &[&names, &labels, &added, &origins],
            )?;
            // WITH ORDINALITY: audit ids follow the order of the batch.
            tx.execute(
                "INSERT INTO audit(at, actor, action, detail)
                 SELECT at, actor, 'node.upsert', detail
                 FROM unnest($1::bigint[], $2::text[], $3::text[]) WITH ORDINALITY AS b(at, actor, detail, i)
                 ORDER BY i",
                &[&ats, &actors, &details],
            )
            .map(|_| ())
        })
    }
}

impl NodeWriter {
    /// Starts the writer thread. Its connection to the database of
    /// `settings` is made at the first batch and made again after it broke
    /// (a batch that finds the database down fails, the next one retries).
    ///
    /// # Panics
    /// The thread cannot be spawned.
    #[must_use]
    pub fn spawn(settings: &PgSettings) -> Self {
        let (tx, rx) = mpsc::channel();
        let batches = Arc::new(AtomicU64::new(0));
        let (pg, db, counter) = (
            PgStore::unopened(settings),
            settings.display.clone(),
            batches.clone(),
        );
        std::thread::Builder::new()
            .name("node-writer".into())
            .spawn(move || write(&rx, pg, &db, &counter))
            .expect("spawn node writer thread");
        Self {
            tx,
            db: settings.display.clone(),
            batches,
        }
    }

    /// Queues `change` at once (before the returned future is polled) and
    /// returns its outcome: `Ok` once it is committed.
    ///
    /// # Errors
    /// The batch holding it failed (nothing of that batch was written), or
    /// the writer thread stopped.
    pub fn upsert(
        &self,
        change: NodeChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let queued = self.tx.send(Job { change, done }).is_ok();
        let db = self.db.clone();
        async move {
            let stopped = || StoreError::Postgres {
                db: db.clone(),
                message: "the inventory writer stopped; nothing written".into(),
            };
            if !queued {
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        }
    }

    /// Transactions written so far (each holding one or more changes).
    #[must_use]
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}
