//! HTTPS for the aggregator (rustls with the ring provider, no OpenSSL).
//! [`ServerTls`] holds the current certificate, key and client CA and
//! reloads them when one of the files changes (certmonger and cert-manager
//! rotate them in place): checked at most every [`RELOAD_CHECK`], when a
//! connection arrives. A new file that does not load is logged and counted,
//! and the previous certificate stays in use. [`serve`] is the accept loop:
//! TLS handshake with a deadline, then HTTP/1.1 with the verified client
//! certificate's DNS names attached to every request as a [`PeerCert`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;

use crate::admit::Admission;
use crate::auth::PeerCert;
use crate::conn::{accept, serve_conn};
use crate::handoff::{is_report, read_first, Movable, ReportPool};
use crate::metrics::Metrics;

/// How often the certificate files' change times are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// Longest a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// `[aggregator.tls]`: the files, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates are verified against;
    /// `None`: no client certificates (tokens only).
    pub client_ca: Option<PathBuf>,
}

/// The certificate files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The file's change time and length: a rename over it (certmonger, a
/// Kubernetes Secret's symlink swap) or a rewrite changes one of them.
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Current {
    config: Arc<ServerConfig>,
    stamp: Stamp,
    checked: Instant,
}

/// The server's TLS configuration, reloaded when its files change.
pub struct ServerTls {
    settings: TlsSettings,
    current: Mutex<Current>,
    metrics: Metrics,
}

fn read_certs(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn build(s: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&s.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| TlsError(format!("key {}: {e}", s.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "client CA")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            }
            // Optional: a caller without a certificate may still use a
            // token; one that presents a certificate must present a valid one.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError(format!(
            "{} with {}: {e}",
            s.cert.display(),
            s.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn stamp(s: &TlsSettings) -> Stamp {
    [Some(&s.cert), Some(&s.key), s.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

impl ServerTls {
    /// Loads the files once; a failure here stops the start.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not match.
    pub fn load(settings: TlsSettings, metrics: Metrics) -> Result<Self, TlsError> {
        let st = stamp(&settings);
        let config = Arc::new(build(&settings)?);
        Ok(Self {
            settings,
            current: Mutex::new(Current {
                config,
                stamp: st,
                checked: Instant::now(),
            }),
            metrics,
        })
    }

    /// The configuration for a new connection, reloaded first if a file
    /// changed since the last look.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if cur.checked.elapsed() >= RELOAD_CHECK {
            cur.checked = Instant::now();
            let now = stamp(&self.settings);
            if now != cur.stamp {
                // Remembered even on failure, so that a bad file is
                // reported once, and retried when it changes again.
                cur.stamp = now;
                match build(&self.settings) {
                    Ok(c) => {
                        cur.config = Arc::new(c);
                        self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                        tracing::error!(error = %e, "TLS files changed but do not load; still serving the previous certificate");
                    }
                }
            }
        }
        Arc::clone(&cur.config)
    }
}

/// The verified client certificate's DNS names (wildcards are never a node).
fn peer_cert(conn: &rustls::ServerConnection) -> Option<PeerCert> {
    let cert = conn.peer_certificates()?.first()?;
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let dns_names = ee
        .valid_dns_names()
        .filter(|n| !n.contains('*'))
        .map(str::to_ascii_lowercase)
        .collect();
    Some(PeerCert { dns_names })
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets
/// open requests finish (at most 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<ServerTls>,
    limits: crate::conn::ConnLimits,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // The same admission as plain HTTP: a cap per address and in all, so
    // that descriptors never run out and a flood cannot keep the gate out.
    let admission = Admission::new(limits, metrics.connections_refused.clone());
    let pool = ReportPool::for_this_runtime();
    tokio::pin!(shutdown);
    while let Some((tcp, remote, mut admitted)) = accept(&listener, &admission, &mut shutdown).await
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (app, watcher) = (app.clone(), graceful.watcher());
        let reports = pool.as_ref().map(|p| p.handle().clone());
        // The same header-read (and so keep-alive idle) timeout as plain
        // HTTP: it must stay above the agents' heartbeat, or a kept-alive
        // connection is closed just as the agent sends on it (with 10 s, equal
        // to the heartbeat, the load bench saw a reconnect storm over TLS).
        let (first, wait) = (limits.first_byte_timeout, limits.header_read_timeout);
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = acceptor.accept(Movable::new(tcp));
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake);
            let stream = match admitted.guard(handshake).await {
                None => return,
                Some(Ok(Ok(s))) => s,
                Some(Ok(Err(e))) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Some(Err(_)) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = peer_cert(stream.get_ref().1);
            let Some(Some(mut stream)) = admitted.guard(read_first(stream, first)).await else {
                return;
            };
            let ticket = admitted.ticket();
            match reports.filter(|_| is_report(stream.first())) {
                Some(reports) => {
                    let moved = match stream.inner_mut().get_mut().0.take() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "cannot move a report connection");
                            return;
                        }
                    };
                    reports.spawn(async move {
                        match stream.inner_mut().get_mut().0.put(moved) {
                            Ok(()) => {
                                let conn = serve_conn(stream, app, peer, ticket, wait, watcher);
                                admitted.guard(conn).await;
                            }
                            Err(e) => tracing::debug!(%remote, error = %e, "cannot move a report connection"),
                        }
                    });
                }
                None => {
                    let conn = serve_conn(stream, app, peer, ticket, wait, watcher);
                    admitted.guard(conn).await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("connections still open after the drain time"),
    }
    drop(pool);
}
