//! The unix socket: one connection per session, the watch task that keeps an
//! [`OvsSource`] current and reconnects with backoff, and the one-shot read.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::session::{echo_request, monitor_request, Framer, Session};
use crate::{OvsSource, OvsdbError, SocketPaths};

/// How long a one-shot read, or a connect, may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// After this long without a message the watch sends an echo; after as long
/// again without an answer the server is considered hung. ovsdb-server does
/// not probe unix-socket clients itself, so a stopped server would otherwise
/// look healthy forever.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Reconnect delays: doubling from `min` up to `max`, back to `min` after a
/// session that synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Delays from `min`, doubling, capped at `max`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// One connection: the socket, its framer and its monitor session.
struct Conn {
    stream: UnixStream,
    framer: Framer,
    session: Session,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(path: &Path) -> Result<Self, OvsdbError> {
        let connect = UnixStream::connect(path);
        let stream = tokio::time::timeout(READ_TIMEOUT, connect)
            .await
            .map_err(|_| OvsdbError::Timeout(READ_TIMEOUT))?
            .map_err(|source| OvsdbError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let mut conn = Self {
            stream,
            framer: Framer::default(),
            session: Session::new(),
            buf: vec![0; 64 << 10],
        };
        conn.send(&monitor_request()).await?;
        Ok(conn)
    }

    async fn send(&mut self, msg: &Value) -> Result<(), OvsdbError> {
        self.stream
            .write_all(msg.to_string().as_bytes())
            .await
            .map_err(OvsdbError::Io)
    }

    /// Reads until one message is complete; returns it raw and whether it
    /// changed the tables. Echo requests are answered here.
    async fn next(&mut self) -> Result<(String, bool), OvsdbError> {
        loop {
            if let Some(raw) = self.framer.next_message()? {
                let msg: Value = serde_json::from_str(&raw)
                    .map_err(|e| OvsdbError::Protocol(format!("invalid JSON: {e}")))?;
                let handled = self.session.handle(&msg)?;
                if let Some(reply) = handled.reply {
                    self.send(&reply).await?;
                }
                return Ok((raw, handled.changed));
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .map_err(OvsdbError::Io)?;
            if n == 0 {
                return Err(OvsdbError::Closed);
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    fn source(&self, path: &Path) -> OvsSource {
        OvsSource::Ok {
            path: path.display().to_string(),
            bridges: self.session.tables().bridges(),
        }
    }
}

/// Reads the database once (the monitor reply) and returns its state:
/// [`OvsSource::Absent`] when no candidate socket exists,
/// [`OvsSource::Unreadable`] with the reason on any failure.
pub async fn read_once(paths: &SocketPaths) -> OvsSource {
    let Some(path) = paths.resolve() else {
        return OvsSource::Absent {
            paths: paths.display(),
        };
    };
    let read = async {
        let mut conn = Conn::open(path).await?;
        while !conn.session.synced() {
            conn.next().await?;
        }
        Ok::<_, OvsdbError>(conn.source(path))
    };
    let result = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or(Err(OvsdbError::Timeout(READ_TIMEOUT)));
    result.unwrap_or_else(|e| OvsSource::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Keeps an [`OvsSource`] current in a background task and publishes the
/// whole state on every change: `Ok` after each monitor reply and update,
/// `Unreadable` while disconnected or reconnecting, `Absent` while no socket
/// has ever existed. The value before the first attempt finishes is
/// `Unreadable` ("not read yet"): unknown is never healthy. The task ends
/// when every receiver is dropped. Needs a tokio runtime.
#[must_use]
pub fn watch(paths: SocketPaths) -> watch::Receiver<OvsSource> {
    let (tx, rx) = watch::channel(not_read_yet(&paths));
    tokio::spawn(run(paths, tx, None));
    rx
}

/// [`watch()`], and also every message received, raw, in order: what the
/// fixture capture records.
#[must_use]
pub fn watch_recording(
    paths: SocketPaths,
) -> (watch::Receiver<OvsSource>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = watch::channel(not_read_yet(&paths));
    let (tap_tx, tap_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(paths, tx, Some(tap_tx)));
    (rx, tap_rx)
}

fn not_read_yet(paths: &SocketPaths) -> OvsSource {
    OvsSource::Unreadable {
        path: paths.display().join(", "),
        reason: "not read yet".into(),
    }
}

fn publish(tx: &watch::Sender<OvsSource>, new: OvsSource) {
    tx.send_if_modified(|cur| {
        if *cur == new {
            false
        } else {
            *cur = new;
            true
        }
    });
}

async fn run(
    paths: SocketPaths,
    tx: watch::Sender<OvsSource>,
    tap: Option<mpsc::UnboundedSender<String>>,
) {
    let mut backoff = Backoff::default();
    let mut ever_connected = false;
    loop {
        match paths.resolve() {
            None if !ever_connected => publish(
                &tx,
                OvsSource::Absent {
                    paths: paths.display(),
                },
            ),
            None => publish(
                &tx,
                OvsSource::Unreadable {
                    path: paths.display().join(", "),
                    reason: "the ovsdb-server socket is gone; reconnecting".into(),
                },
            ),
            Some(path) => {
                let err = tokio::select! {
                    e = session(path, &tx, tap.as_ref(), &mut backoff, &mut ever_connected) => e,
                    () = tx.closed() => return,
                };
                warn!(path = %path.display(), error = %err, "OVSDB session ended");
                publish(
                    &tx,
                    OvsSource::Unreadable {
                        path: path.display().to_string(),
                        reason: format!("{err}; reconnecting"),
                    },
                );
            }
        }
        let delay = backoff.next_delay();
        debug!(?delay, "OVSDB reconnect delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
    }
}

/// One connection from connect to failure; returns why it ended.
async fn session(
    path: &Path,
    tx: &watch::Sender<OvsSource>,
    tap: Option<&mpsc::UnboundedSender<String>>,
    backoff: &mut Backoff,
    ever_connected: &mut bool,
) -> OvsdbError {
    let mut conn = match Conn::open(path).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    *ever_connected = true;
    let mut probe_sent = false;
    loop {
        let (raw, changed) = match tokio::time::timeout(PROBE_INTERVAL, conn.next()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return e,
            Err(_) if probe_sent => return OvsdbError::Timeout(PROBE_INTERVAL * 2),
            Err(_) => {
                if let Err(e) = conn.send(&echo_request()).await {
                    return e;
                }
                probe_sent = true;
                continue;
            }
        };
        probe_sent = false;
        if let Some(tap) = tap {
            let _ = tap.send(raw);
        }
        if changed && conn.session.synced() {
            if !tx.borrow().is_ok() {
                info!(path = %path.display(), "OVSDB monitor synced");
            }
            backoff.reset();
            publish(tx, conn.source(path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| u64::try_from(b.next_delay().as_millis()).expect("small"))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn no_socket_is_absent_and_a_dead_one_unreadable() {
        let dir = std::env::temp_dir().join(format!("pf-ovsdb-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = SocketPaths::explicit(dir.join("none.sock"));
        assert_eq!(
            read_once(&missing).await,
            OvsSource::Absent {
                paths: missing.display()
            }
        );
        // A socket file nobody listens on: the state after ovsdb-server was
        // killed.
        let stale = dir.join("stale.sock");
        let _ = std::fs::remove_file(&stale);
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        match read_once(&SocketPaths::explicit(&stale)).await {
            OvsSource::Unreadable { reason, .. } => {
                assert!(reason.contains("cannot connect"), "{reason}");
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
