//! Following the other replicas: with a PostgreSQL store, one thread per
//! replica `LISTEN`s for the announcements every inventory or waiver change
//! makes on commit and reloads inventory and waivers into the fleet at once
//! (well under a second), and reloads everything every
//! [`FULL_RELOAD`] anyway, as the safety net for an announcement lost while
//! the connection was down. Announcements of waiver changes reload the
//! waivers only, those of audit entries nothing; announcements that come
//! while a reload runs or right after it are served by one reload (see
//! [`MAX_PAUSE`]). Reports are not followed: agents send each report to
//! every replica.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::service::Service;
use crate::store::{PgListener, PgSettings};

/// Longest time between two full reloads.
pub const FULL_RELOAD: Duration = Duration::from_secs(30);

/// Pause before reconnecting to a database that cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

/// Longest pause after a reload before the next one. The pause is as long
/// as the last reload took, up to this: the announcements that arrive
/// during a reload and the pause after it (agents registering on another
/// replica announce every batch of up to 1,000 nodes) are served by one
/// reload, not one each, and following takes at most about half of one
/// core however fast they come. A cheap reload (waivers only, a few ms)
/// is followed by a pause as short, so that a change right after another
/// is not held back (a fixed 10 ms floor added 3.5 ms to the median
/// propagation of back-to-back waiver changes, docs/benchmarks.md). With
/// the reload itself this keeps an announced change well within the 1 s
/// propagation goal at 100,000 nodes.
pub const MAX_PAUSE: Duration = Duration::from_millis(300);

/// What an announcement asks to read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Nothing the fleet holds (an audit entry).
    Nothing,
    /// Maintenance leases only.
    Leases,
    /// Waivers only.
    Waivers,
    /// Inventory and waivers (also for a payload this version does not know).
    All,
}

/// The scope of a batch of announcement payloads (`<what> <origin>`).
fn scope_of(payloads: &[String]) -> Scope {
    payloads
        .iter()
        .map(|p| match p.split(' ').next() {
            Some("audit") => Scope::Nothing,
            Some("leases") => Scope::Leases,
            Some("waivers") => Scope::Waivers,
            _ => Scope::All,
        })
        .max()
        .unwrap_or(Scope::Nothing)
}

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

/// Reloads `scope`; returns how long it took, or `None` when the store
/// could not be read.
fn reload(
    service: &Service,
    known: &mut HashSet<String>,
    scope: Scope,
    why: &str,
) -> Option<Duration> {
    if scope >= Scope::Leases {
        // Leases are few: read them whole with every reload (so a batch of
        // announcements that asks for more still reads them).
        let started = Instant::now();
        if let Err(e) = service.reload_leases() {
            tracing::warn!(error = %e, why, "cannot reload maintenance leases from the shared store");
            return None;
        }
        if scope == Scope::Leases {
            return Some(started.elapsed());
        }
    }
    let r = match scope {
        Scope::Nothing | Scope::Leases => return Some(Duration::ZERO),
        Scope::Waivers => service.reload_waivers(),
        Scope::All => service.reload(known),
    };
    match r {
        Ok(c) => {
            let (took_ms, locked_ms) = (c.took.as_millis(), c.locked.as_millis());
            if c.nodes + c.waivers > 0 {
                tracing::info!(
                    why,
                    nodes = c.nodes,
                    waivers = c.waivers,
                    stored_nodes = c.stored_nodes,
                    took_ms,
                    locked_ms,
                    "followed changes from the shared store"
                );
            } else {
                tracing::debug!(
                    why,
                    stored_nodes = c.stored_nodes,
                    stored_waivers = c.stored_waivers,
                    took_ms,
                    "reloaded from the shared store: nothing changed"
                );
            }
            Some(c.took)
        }
        Err(e) => {
            tracing::warn!(error = %e, why, "cannot reload from the shared store");
            None
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
        let Some(took) = reload(service, &mut known, Scope::All, "listening") else {
            std::thread::sleep(RETRY);
            continue;
        };
        let mut pause_until = Instant::now() + took.min(MAX_PAUSE);
        'listening: loop {
            let wait = FULL_RELOAD.saturating_sub(last_full.elapsed());
            let mut scope = match listener.wait(wait) {
                Ok(changes) => scope_of(&changes),
                Err(e) => {
                    tracing::warn!(error = %e, "lost the change feed of the shared store; reconnecting");
                    break;
                }
            };
            if last_full.elapsed() >= FULL_RELOAD {
                scope = Scope::All;
            }
            if scope == Scope::Nothing {
                continue;
            }
            // Announcements right after a reload: gather what else comes
            // until the pause is over, then reload once.
            while let Some(left) = pause_until.checked_duration_since(Instant::now()) {
                match listener.wait(left) {
                    Ok(more) => scope = scope.max(scope_of(&more)),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the change feed of the shared store; reconnecting");
                        break 'listening;
                    }
                }
            }
            let started = Instant::now();
            let why = if last_full.elapsed() >= FULL_RELOAD {
                "periodic"
            } else {
                "announced"
            };
            let took = reload(service, &mut known, scope, why).unwrap_or(MAX_PAUSE);
            if scope == Scope::All {
                last_full = started;
            }
            pause_until = Instant::now() + took.min(MAX_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{scope_of, Scope};

    #[test]
    fn announcements_ask_for_what_changed() {
        let s = |p: &[&str]| scope_of(&p.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(s(&[]), Scope::Nothing);
        assert_eq!(s(&["audit r1"]), Scope::Nothing);
        assert_eq!(s(&["audit r1", "waivers r2"]), Scope::Waivers);
        assert_eq!(s(&["audit r1", "leases r2"]), Scope::Leases);
        assert_eq!(s(&["leases r1", "waivers r2"]), Scope::Waivers);
        assert_eq!(s(&["waivers r1", "nodes r2", "audit r1"]), Scope::All);
        // A kind this version does not know: read everything.
        assert_eq!(s(&["labels r3"]), Scope::All);
    }
}
