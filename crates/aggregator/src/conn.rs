//! Accepting connections, with limits an open fleet port needs: at most
//! [`ConnLimits::max_connections`] at once, below the file descriptor
//! limit, and shared out by [`crate::admit`] (a cap per source address, a
//! reserve for new addresses, pending connections closed first) so that a
//! flood cannot keep a pipeline's `GET /v1/gate` or an agent's report out.
//! A new connection must send its first bytes within
//! [`ConnLimits::first_byte_timeout`], and its request headers within the
//! header-read timeout, which in hyper also bounds how long an idle
//! keep-alive connection is held: a slow or silent client cannot hold a
//! slot for long. Agents keep one connection and send within their
//! heartbeat (10 s by default), well inside the header-read timeout.
//!
//! A connection whose first request is a report is served on the report
//! threads ([`crate::handoff`]); the rest stay where they were accepted.
//! TLS ([`crate::tls::serve`]) shares the limits and `serve_conn`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::admit::{Admission, Admitted, Ticket};
pub use crate::admit::{ConnLimits, MIN_RESERVE};
use crate::auth::PeerCert;
use crate::handoff::{peek_is_report, ReportPool};
use crate::metrics::Metrics;

/// Accepts the next connection and admits it, or closes it at once when
/// [`Admission`] refuses it. `None`: `shutdown` resolved.
pub(crate) async fn accept(
    listener: &TcpListener,
    admission: &Arc<Admission>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<(TcpStream, SocketAddr, Admitted)> {
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to free up.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut *shutdown => return None,
        };
        // A refused connection is dropped here: closed without a word.
        if let Ok(admitted) = admission.admit(remote.ip()) {
            return Some((stream, remote, admitted));
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
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        max_connections = limits.max_connections,
        reserve = limits.reserve,
        max_per_source = limits.max_per_source,
        header_read_timeout = ?limits.header_read_timeout,
        "connection limits"
    );
    let admission = Admission::new(limits, metrics.connections_refused.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let pool = ReportPool::for_this_runtime();
    tokio::pin!(shutdown);
    while let Some((stream, _, mut admitted)) = accept(&listener, &admission, &mut shutdown).await {
        let _ = stream.set_nodelay(true);
        let (app, watcher) = (app.clone(), graceful.watcher());
        let reports = pool.as_ref().map(|p| p.handle().clone());
        let (first, wait) = (limits.first_byte_timeout, limits.header_read_timeout);
        tokio::spawn(async move {
            let Some(Some(report)) = admitted.guard(peek_is_report(&stream, first)).await else {
                return;
            };
            let ticket = admitted.ticket();
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
                            Ok(s) => {
                                let conn = serve_conn(s, app, None, ticket, wait, watcher);
                                admitted.guard(conn).await;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot move a report connection");
                            }
                        }
                    });
                }
                None => {
                    let conn = serve_conn(stream, app, None, ticket, wait, watcher);
                    admitted.guard(conn).await;
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
/// The first request marks the connection's `ticket` served.
pub(crate) async fn serve_conn<S>(
    io: S,
    app: Router,
    peer: Option<PeerCert>,
    ticket: Arc<Ticket>,
    header_read_timeout: Duration,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        ticket.served();
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
