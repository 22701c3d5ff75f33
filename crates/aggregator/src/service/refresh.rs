//! The answer-text refresher: a thread (`answer-texts`, at the report
//! threads' lower priority) that renders ahead, under the fleet's read
//! lock, the range texts of tracked scopes that report batches dropped
//! ([`Fleet::refresh_texts`]). Without it the next gate question renders
//! them itself: at 100,000 nodes and 1,000 changed reports a second, a
//! whole-fleet question asked every 200 ms found a few hundred ranges to
//! render, milliseconds on its own path. With it the question mostly copies
//! kept texts. Correctness does not depend on it: a question renders
//! whatever is missing when it comes, as before.
//!
//! The applier rings [`Bell::ring`] after each batch; the thread waits
//! [`COALESCE`] for more batches, then renders once. The thread ends when
//! every bell is dropped (with the service).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::read;
use crate::fleet::Fleet;

/// How long the refresher waits after a bell for more changes before it
/// renders: one pass per few batches, not one per batch.
pub const COALESCE: Duration = Duration::from_millis(5);

/// Wakes the refresher. Cheap to clone.
#[derive(Clone)]
pub(super) struct Bell(SyncSender<()>);

impl Bell {
    /// Starts the refresher over `fleet`.
    pub(super) fn spawn(fleet: Arc<RwLock<Fleet>>) -> Self {
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("answer-texts".into())
            .spawn(move || refresh_until_closed(&fleet, &rx))
            .expect("spawn the answer-text refresher thread");
        Self(tx)
    }

    /// Something changed: the refresher renders ahead soon. Never blocks
    /// (a bell already rung is enough).
    pub(super) fn ring(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::debug!("the answer-text refresher has stopped");
            }
        }
    }
}

fn refresh_until_closed(fleet: &RwLock<Fleet>, rx: &Receiver<()>) {
    crate::handoff::lower_priority();
    while rx.recv().is_ok() {
        std::thread::sleep(COALESCE);
        // Bells rung while waiting are served by this pass.
        let _ = rx.try_recv();
        let made = read(fleet).refresh_texts(Instant::now());
        tracing::trace!(made, "answer texts rendered ahead");
    }
}
