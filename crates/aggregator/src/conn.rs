//! Accepting connections, with limits an open fleet port needs: at most
//! [`ConnLimits::max_connections`] at once (the rest wait in the kernel's
//! backlog, so file descriptors never run out and a `GET /v1/gate` from a
//! pipeline is answered as soon as a slot frees), and a header-read
//! timeout, which in hyper also bounds how long an idle keep-alive
//! connection is held: a slow or silent client cannot hold a slot forever.
//! Agents keep one connection and send within their heartbeat (10 s by
//! default), well inside the timeout.
//!
//! A connection whose first request is a report is served on the report
//! threads ([`crate::handoff`]); the rest stay where they were accepted.
//! TLS ([`crate::tls::serve`]) shares the limits and `serve_conn`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::auth::PeerCert;
use crate::handoff::{peek_is_report, ReportPool};

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers, idle keep-alive time included.
    pub header_read_timeout: Duration,
}

/// File descriptors kept free of client connections: the store, the
/// PostgreSQL listener, logs, the blocking pool.
const RESERVED_FDS: u64 = 64;

impl ConnLimits {
    /// The defaults for this process: as many connections as the file
    /// descriptor limit (`LimitNOFILE`) leaves room for, and 30 s.
    #[must_use]
    pub fn for_this_process() -> Self {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        Self {
            max_connections: usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16))
                .unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open
/// requests finish (at most 10 s).
///
/// # Errors
/// Never after start: accept errors (EMFILE) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        "connection limits"
    );
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let pool = ReportPool::for_this_runtime();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to free up.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, watcher) = (app.clone(), graceful.watcher());
        let reports = pool.as_ref().map(|p| p.handle().clone());
        let wait = limits.header_read_timeout;
        tokio::spawn(async move {
            let report = match &reports {
                Some(_) => match peek_is_report(&stream, wait).await {
                    Some(r) => r,
                    None => return,
                },
                None => false,
            };
            match reports.filter(|_| report) {
                Some(reports) => {
                    let moved = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot move a report connection");
                            return;
                        }
                    };
                    reports.spawn(async move {
                        match TcpStream::from_std(moved) {
                            Ok(s) => serve_conn(s, app, None, wait, watcher).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot move a report connection")
                            }
                        }
                        drop(slot);
                    });
                }
                None => {
                    serve_conn(stream, app, None, wait, watcher).await;
                    drop(slot);
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open requests did not finish within 10 s of shutdown");
    }
    drop(pool);
    Ok(())
}

/// Serves one connection's HTTP/1.1 requests with `app` until it closes,
/// each request carrying the client certificate's names (`peer`) when TLS
/// verified one; `header_read_timeout` also bounds an idle keep-alive.
pub(crate) async fn serve_conn<S>(
    io: S,
    app: Router,
    peer: Option<PeerCert>,
    header_read_timeout: Duration,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended");
    }
}
