//! The only crate that speaks OVSDB (RFC 7047 JSON-RPC over ovsdb-server's
//! unix socket). It reads the `Open_vSwitch` database's Bridge, Port and
//! Interface tables, where Open vSwitch keeps its bonds and their members,
//! and gives the rest of preflight an [`OvsSource`]: [`read_once`] for a
//! one-shot check, [`watch`] for a copy kept current from `update`
//! notifications (no polling), reconnected with backoff and fully resynced
//! after every reconnect.
//!
//! Datum decoding is in [`datum`], the tables keyed by uuid in [`db`], the
//! protocol without sockets in [`session`] (tested on sessions recorded from
//! a real ovsdb-server); sockets and the watch task live in `conn`.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

pub use preflight_model::OvsSource;

mod conn;
pub mod datum;
pub mod db;
pub mod session;

pub use conn::{read_once, watch, watch_recording, Backoff};

/// The sockets ovsdb-server listens on by default, in the order tried.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/openvswitch/db.sock", "/var/run/openvswitch/db.sock"];

/// Where to look for ovsdb-server's socket: the defaults, or one explicit
/// path (`agent.ovsdb`, `--ovsdb PATH`) that replaces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPaths {
    candidates: Vec<PathBuf>,
}

impl Default for SocketPaths {
    fn default() -> Self {
        Self {
            candidates: DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl SocketPaths {
    /// Only `path`.
    #[must_use]
    pub fn explicit(path: impl Into<PathBuf>) -> Self {
        Self {
            candidates: vec![path.into()],
        }
    }

    /// The paths tried, in order.
    #[must_use]
    pub fn candidates(&self) -> &[PathBuf] {
        &self.candidates
    }

    /// The first candidate that exists.
    #[must_use]
    pub fn resolve(&self) -> Option<&Path> {
        self.candidates
            .iter()
            .map(PathBuf::as_path)
            .find(|p| p.exists())
    }

    /// The candidates as strings, for [`OvsSource::Absent`].
    #[must_use]
    pub fn display(&self) -> Vec<String> {
        self.candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// Everything that can go wrong talking to ovsdb-server.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The socket could not be connected.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("OVSDB connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The server closed the connection.
    #[error("ovsdb-server closed the connection")]
    Closed,
    /// The server did not answer in time.
    #[error("no answer from ovsdb-server within {0:?}")]
    Timeout(std::time::Duration),
    /// The server sent something that is not RFC 7047.
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    /// The server refused the monitor request (for example an old schema
    /// without one of the columns read).
    #[error("ovsdb-server refused the monitor request: {0}")]
    Monitor(String),
}
