//! Following the other replicas: with a PostgreSQL store, one thread per
//! replica `LISTEN`s for the announcements every inventory or waiver change
//! makes on commit and reloads inventory and waivers into the fleet at once
//! (well under a second), and reloads everything every
//! [`FULL_RELOAD`] anyway, as the safety net for an announcement lost while
//! the connection was down. Reports are not followed: agents send each
//! report to every replica.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::service::Service;
use crate::store::{PgListener, PgSettings};

/// Longest time between two full reloads.
pub const FULL_RELOAD: Duration = Duration::from_secs(30);

/// Pause before reconnecting to a database that cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the follower thread; it runs for the life of the process.
///
/// # Panics
/// When the OS cannot start a thread.
pub fn spawn_follower(service: Service, settings: PgSettings) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("replica-follower".into())
        .spawn(move || follow(&service, &settings))
        .expect("spawn follower thread")
}

fn reload(service: &Service, known: &mut HashSet<String>, why: &str) -> bool {
    match service.reload(known) {
        Ok(c) => {
            if c.nodes + c.waivers > 0 {
                tracing::info!(
                    why,
                    nodes = c.nodes,
                    waivers = c.waivers,
                    "followed changes from the shared store"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, why, "cannot reload from the shared store");
            false
        }
    }
}

fn follow(service: &Service, settings: &PgSettings) {
    // The inventory as restored at start is what the first reload compares to.
    let mut known: HashSet<String> = service.read(|f| {
        let mut names = HashSet::new();
        f.for_each_status(|n, _| {
            names.insert(n.to_owned());
        });
        names
    });
    let mut down_logged = false;
    loop {
        let mut listener = match PgListener::connect(settings) {
            Ok(l) => l,
            Err(e) => {
                if !down_logged {
                    tracing::error!(error = %e, "cannot listen for changes from other replicas; retrying every second");
                    down_logged = true;
                }
                std::thread::sleep(RETRY);
                continue;
            }
        };
        down_logged = false;
        // Changes made while not listening were not announced to us.
        let mut last_full = Instant::now();
        if !reload(service, &mut known, "listening") {
            std::thread::sleep(RETRY);
            continue;
        }
        loop {
            let wait = FULL_RELOAD.saturating_sub(last_full.elapsed());
            match listener.wait(wait) {
                Ok(changes) if !changes.is_empty() => {
                    reload(service, &mut known, "announced");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the change feed of the shared store; reconnecting");
                    break;
                }
            }
            if last_full.elapsed() >= FULL_RELOAD {
                reload(service, &mut known, "periodic");
                last_full = Instant::now();
            }
        }
    }
}
