//! Reports on threads of their own, so that a gate question never waits
//! behind them.
//!
//! Thousands of agents report over kept-alive connections and a pipeline's
//! gate question arrives among them. On one pool of threads the question's
//! connection waits in a worker's run queue behind report connections: at
//! 100,000 nodes and 11,000 reports/s on 2 vCPUs, up to 4.7 ms before its
//! handler ran, for an answer that then took 0.2 ms
//! (docs/bench-logs/history.md, 2026-11-26, 174c80f). So a connection whose first request is a report
//! (`POST /v1/reports`) is handed, after its TLS handshake, to a second
//! runtime, the [`ReportPool`] (threads named `preflight-reports`, at a
//! lower priority: [`REPORT_NICE`]); every other connection (the gate, the page, the rest of the API, metrics)
//! stays on the runtime that accepts, which then has no report queued
//! before a question. The split is by connection, not by request: a
//! connection keeps the pool its first request chose, and every request is
//! served by the whole router wherever it runs, with the same checks.
//!
//! On a current-thread runtime (`PREFLIGHT_THREADS=1`: everything on one
//! thread, as asked) there is no second pool.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

/// A report's request line, up to the path's end.
const REPORT_LINE: &[u8] = b"POST /v1/reports";

/// Bytes peeked from a new plain connection to tell what its first
/// request is.
const FIRST_BYTES: usize = 24;

/// Most bytes of a TLS connection's first request read before hyper reads
/// the rest: as much as hyper's own first read (8 KiB). Reading only
/// [`FIRST_BYTES`] left the rest of the first record's plaintext in
/// rustls's buffers in a way that kept memory: 10,000 TLS agents took 337
/// MiB against 272 before the hand-off (281 with this read;
/// docs/bench-logs/history.md, 2026-11-26, e4129b0..2cc3976).
const FIRST_READ: usize = 8192;

/// Whether a connection's first bytes are a report's request line. Fewer
/// bytes than the line (a client that sends its request in pieces) count
/// as "not a report": the connection is served where it was accepted.
#[must_use]
pub fn is_report(first: &[u8]) -> bool {
    first
        .strip_prefix(REPORT_LINE)
        .and_then(|rest| rest.first())
        .is_some_and(|b| matches!(b, b' ' | b'?'))
}

/// The runtime that serves report connections; shut down when dropped
/// (after the accept loop drained its connections).
pub struct ReportPool {
    rt: Option<Runtime>,
}

impl std::fmt::Debug for ReportPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportPool").finish_non_exhaustive()
    }
}

impl ReportPool {
    /// A pool with as many threads as the calling runtime's workers;
    /// `None` on a current-thread runtime, or when the threads cannot be
    /// started (logged: everything is then served where it is accepted).
    #[must_use]
    pub fn for_this_runtime() -> Option<Self> {
        let here = Handle::try_current().ok()?;
        if here.runtime_flavor() == RuntimeFlavor::CurrentThread {
            return None;
        }
        let threads = here.metrics().num_workers().max(1);
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("preflight-reports")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
        {
            Ok(rt) => {
                tracing::info!(threads, "report connections served by a pool of their own");
                Some(Self { rt: Some(rt) })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the report threads; reports and gate questions share one pool");
                None
            }
        }
    }

    /// Where report connections are spawned.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        self.rt.as_ref().expect("set until dropped").handle()
    }
}

impl Drop for ReportPool {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Allowed inside the accepting runtime, unlike a blocking drop;
            // its connections were drained by then.
            rt.shutdown_background();
        }
    }
}

/// How much the report threads' nice value is raised above the process's:
/// when the CPUs are busy, a thread answering a gate question runs before
/// them instead of taking turns. Reports have seconds of slack (the
/// heartbeat and the TTL), a pipeline's question has none; a report
/// thread still gets CPU that nothing else wants.
pub const REPORT_NICE: i32 = 10;

/// Sets the calling thread's nice value to the process's (its main
/// thread's) plus [`REPORT_NICE`] (allowed without privileges); on failure
/// the thread keeps the one it has. For the report threads and the report
/// writer. From the process's, not the thread's own: the report pool's
/// blocking threads are started by its (already lowered) workers and
/// inherit their nice value, and raising that again put them at 19.
pub(crate) fn lower_priority() {
    let tid = rustix::thread::gettid();
    let process = rustix::process::getpid();
    let lowered = rustix::process::getpriority_process(Some(process))
        .and_then(|nice| rustix::process::setpriority_process(Some(tid), nice + REPORT_NICE));
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower a thread's priority");
    }
}

/// Plain HTTP: whether the connection's first request is a report, from
/// its first bytes left unread for hyper (`peek`). `None`: the client sent
/// nothing within `wait`, or closed; drop the connection as hyper's
/// header-read timeout would.
pub async fn peek_is_report(tcp: &TcpStream, wait: Duration) -> Option<bool> {
    let mut first = [0u8; FIRST_BYTES];
    match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some(is_report(&first[..n])),
        _ => None,
    }
}

/// TLS: reads the start of the connection's first request (up to 8 KiB),
/// which the returned stream gives back before the rest. `None`: nothing
/// within `wait`, a closed connection or a TLS error.
pub async fn read_first<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    wait: Duration,
) -> Option<Prefixed<S>> {
    let mut first = vec![0u8; FIRST_READ];
    match tokio::time::timeout(wait, stream.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {
            first.truncate(n);
            first.shrink_to_fit();
            Some(Prefixed {
                first,
                at: 0,
                inner: stream,
            })
        }
        _ => None,
    }
}

/// A TCP stream under a TLS session that can move to another runtime's I/O
/// driver: [`Movable::take`] on the accepting runtime, [`Movable::put`] in
/// a task of the other. In between, reads and writes fail.
#[derive(Debug)]
pub struct Movable(Option<TcpStream>);

impl Movable {
    /// Wraps an accepted stream.
    #[must_use]
    pub fn new(tcp: TcpStream) -> Self {
        Self(Some(tcp))
    }

    /// Deregisters the socket from this runtime.
    ///
    /// # Errors
    /// Already taken, or the socket cannot be deregistered.
    pub fn take(&mut self) -> io::Result<std::net::TcpStream> {
        self.0.take().ok_or_else(moving)?.into_std()
    }

    /// Registers the socket with the current runtime.
    ///
    /// # Errors
    /// Outside a runtime, or the socket cannot be registered.
    pub fn put(&mut self, tcp: std::net::TcpStream) -> io::Result<()> {
        self.0 = Some(TcpStream::from_std(tcp)?);
        Ok(())
    }

    fn get(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0.as_mut().map(Pin::new).ok_or_else(moving)
    }
}

fn moving() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection is moving to the report threads",
    )
}

impl AsyncRead for Movable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A stream whose first bytes were read already: reads give them back
/// first; writes go straight through.
#[derive(Debug)]
pub struct Prefixed<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// The bytes read first.
    #[must_use]
    pub fn first(&self) -> &[u8] {
        &self.first
    }

    /// The stream under them.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.at < me.first.len() {
            let n = (me.first.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.first[me.at..me.at + n]);
            me.at += n;
            if me.at == me.first.len() {
                me.first = Vec::new();
                me.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{is_report, lower_priority, REPORT_NICE};

    #[test]
    fn a_thread_started_by_a_lowered_one_is_lowered_from_the_process_not_again() {
        let process = rustix::process::getpriority_process(Some(rustix::process::getpid()))
            .expect("the process's nice");
        let nice = std::thread::spawn(|| {
            lower_priority();
            // As the report pool's blocking threads: started by a lowered
            // worker (inheriting its nice), then lowered on start.
            std::thread::spawn(|| {
                lower_priority();
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                    .expect("this thread's nice")
            })
            .join()
            .expect("inner thread")
        })
        .join()
        .expect("outer thread");
        assert_eq!(nice, (process + REPORT_NICE).min(19));
    }

    #[test]
    fn only_a_report_request_line_is_a_report() {
        assert!(is_report(b"POST /v1/reports HTTP/1.1\r\n"));
        assert!(is_report(b"POST /v1/reports?x=1 HTTP/1.1"));
        for not in [
            &b"GET /v1/gate?scope= HTTP/1.1\r\n"[..],
            b"POST /v1/reportsX HTTP/1.1",
            b"POST /v1/reports",
            b"POST /v1/rep",
            b"GET /v1/reports HTTP/1.1",
            b"post /v1/reports HTTP/1.1",
            b"",
        ] {
            assert!(!is_report(not), "{}", String::from_utf8_lossy(not));
        }
    }
}
