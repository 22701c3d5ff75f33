//! HTTP/1.1 transport: validated base URLs (`http://` or `https://`) and
//! one pooled connection client whose every request is bounded by a
//! timeout. HTTPS is rustls with the ring provider: the server is verified
//! against a given CA file, or the system's trust store (read by
//! rustls-native-certs: it honours the CAs an operator installed, e.g. a
//! FreeIPA CA, and adds no compiled-in bundle to the binary, unlike
//! webpki-roots), and a client certificate can be presented (mutual TLS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What can go wrong talking to one server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not usable.
    #[error("bad URL `{url}`: {reason}")]
    BadUrl {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connection or protocol failure.
    #[error("{url}: {message}")]
    Transport {
        /// Target.
        url: String,
        /// What happened.
        message: String,
    },
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// No answer in time.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// Target.
        url: String,
        /// Limit.
        timeout: Duration,
    },
}

/// A base URL (`http[s]://host:port[/prefix]`), parsed and checked once.
///
/// The server's *name* (the configured host: the `Host` header, and the
/// name a certificate must carry) and the *address* connected to are kept
/// apart: a URL as configured lets the connector resolve its host, while
/// [`BaseUrl::at`] pins one address behind that name, so that several
/// replicas behind one DNS name (a Kubernetes headless Service) are each
/// reached on their own while each still sees the name it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    tls: bool,
    authority: Authority,
    /// Path prefix without a trailing `/` (empty for the root).
    prefix: String,
    /// The address to connect to, when pinned; `None`: resolve the host.
    address: Option<std::net::SocketAddr>,
}

impl BaseUrl {
    /// Validates a base URL.
    ///
    /// # Errors
    /// When it is not `http[s]://host[:port][/path]` (the scheme in any case).
    pub fn parse(s: &str) -> Result<Self, HttpError> {
        let bad = |reason: &str| HttpError::BadUrl {
            url: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Err(bad("expected http://host:port or https://host:port")),
        };
        let uri: Uri = format!("{}://{rest}", if tls { "https" } else { "http" })
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL has no query string"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        Ok(Self {
            tls,
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            address: None,
        })
    }

    /// The host as configured, without brackets for IPv6: what the `Host`
    /// header and a TLS server name are made of, also when pinned.
    #[must_use]
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// The port (80, or 443 for https, when the URL has none).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.tls { 443 } else { 80 })
    }

    /// Whether the host is a name (to resolve) rather than an IP address.
    #[must_use]
    pub fn is_name(&self) -> bool {
        self.host().parse::<std::net::IpAddr>().is_err()
    }

    /// The same server reached at `address` instead of by resolving its
    /// name: requests connect there but keep the configured name as `Host`.
    /// An `https://` URL is not pinned (returned as is): its certificate is
    /// checked against the name the URI carries, which must stay the name.
    #[must_use]
    pub fn at(&self, address: std::net::SocketAddr) -> Self {
        if self.tls {
            return self.clone();
        }
        Self {
            address: Some(address),
            ..self.clone()
        }
    }

    /// The pinned address, if any (see [`BaseUrl::at`]).
    #[must_use]
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.address
    }

    /// The `Host` header a request must carry when pinned (the URI then
    /// names the address); `None` when the URI already names the host.
    #[must_use]
    pub fn host_header(&self) -> Option<&str> {
        self.address.map(|_| self.authority.as_str())
    }

    /// Host and port when the host is an IP address (for probes).
    #[must_use]
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        Some(std::net::SocketAddr::new(
            self.host().parse().ok()?,
            self.port(),
        ))
    }

    /// The full URI of `path_and_query` (starts with `/`) under this base;
    /// when pinned, its authority is the address (send
    /// [`BaseUrl::host_header`] with it).
    ///
    /// # Errors
    /// When `path_and_query` has characters a URI cannot carry.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, HttpError> {
        let pq: PathAndQuery = format!("{}{path_and_query}", self.prefix).parse().map_err(
            |e: hyper::http::uri::InvalidUri| HttpError::BadUrl {
                url: format!("{self}{path_and_query}"),
                reason: e.to_string(),
            },
        )?;
        let authority = match self.address {
            Some(a) => a
                .to_string()
                .parse::<Authority>()
                .expect("a socket address is a valid authority"),
            None => self.authority.clone(),
        };
        Uri::builder()
            .scheme(self.scheme())
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| HttpError::BadUrl {
                url: format!("{self}{path_and_query}"),
                reason: e.to_string(),
            })
    }
}

impl BaseUrl {
    /// Whether this is an `https://` URL.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority, self.prefix)?;
        match self.address {
            Some(a) => write!(f, " via {a}"),
            None => Ok(()),
        }
    }
}

/// How to verify servers and what to present to them (`--ca`, `--cert`,
/// `--key`; `[agent.tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates to verify servers against; `None`: the system's.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| HttpError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(HttpError::Tls(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsOptions {
    /// The rustls configuration: reads the files now.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a certificate without its key,
    /// no usable system CA when none is given.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, HttpError> {
        let tls = |e: String| HttpError::Tls(e);
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| tls(format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(tls(
                        "no CA certificate in the system trust store; give one (--ca, tls.ca)"
                            .into(),
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
        let cfg = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls(format!("{}: {e}", cert.display())))?
            }
            _ => return Err(tls("a client certificate needs both cert and key".into())),
        };
        // ALPN (http/1.1) is set by the connector (enable_http1).
        Ok(cfg)
    }
}

/// TLS without any CA: every https:// connection fails verification.
fn no_ca_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// A reusable connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Kept to open a separate pool with the same TLS settings.
    connector: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose every request (connect + answer) is bounded by
    /// `timeout`; `https://` is verified against the system's CAs.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self::build(timeout, None)
    }

    /// A client for `http://` servers only: no CA store is read, so every
    /// `https://` connection fails verification. For a daemon that talks to
    /// no https server: reading and parsing the system's CAs (about 150
    /// certificates) would cost it memory and start time for nothing.
    #[must_use]
    pub fn http_only(timeout: Duration) -> Self {
        Self::build(timeout, Some(no_ca_config()))
    }

    /// A client with these TLS options.
    ///
    /// # Errors
    /// The TLS files cannot be used.
    pub fn with_tls(timeout: Duration, tls: &TlsOptions) -> Result<Self, HttpError> {
        Ok(Self::build(timeout, Some(tls.client_config()?)))
    }

    /// The per-request timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn build(timeout: Duration, tls: Option<rustls::ClientConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        // Without options, the system's CAs; a host without any can still
        // use http:// servers.
        let tls = tls.or_else(|| TlsOptions::default().client_config().ok());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // No CA at all: every https:// connection fails verification.
        let https = builder
            .with_tls_config(tls.unwrap_or_else(no_ca_config))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Self::with_connector(https, timeout)
    }

    fn with_connector(connector: HttpsConnector<HttpConnector>, timeout: Duration) -> Self {
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        Self {
            inner,
            connector,
            timeout,
        }
    }

    /// The same settings (TLS included, without reading any file again)
    /// with a pool of its own: its connections are not shared with this
    /// client's (a load generator gives each simulated agent one).
    #[must_use]
    pub fn separate_pool(&self) -> Self {
        Self::with_connector(self.connector.clone(), self.timeout)
    }

    /// `GET url` (an absolute `http://` URL): for endpoints outside the API
    /// (`/metrics`, `/healthz`).
    ///
    /// # Errors
    /// A URL that does not parse, transport failures and timeouts.
    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), HttpError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| HttpError::BadUrl {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        self.request(Method::GET, uri, None, None).await
    }

    /// Sends a request and returns status and body.
    ///
    /// # Errors
    /// Transport failures and timeouts; any HTTP status is a success here.
    pub async fn request(
        &self,
        method: Method,
        uri: Uri,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        self.request_as(method, uri, None, token, body).await
    }

    /// [`HttpClient::request`] with an explicit `Host` header: the URI
    /// names the address connected to, `host` the server asked for (a
    /// pinned [`BaseUrl`]).
    ///
    /// # Errors
    /// Transport failures and timeouts; any HTTP status is a success here.
    pub async fn request_as(
        &self,
        method: Method,
        uri: Uri,
        host: Option<&str>,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let url = uri.to_string();
        let mut req = Request::builder().method(method).uri(uri).header(
            "user-agent",
            concat!("preflight/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(h) = host {
            // hyper adds a Host header from the URI only when none is set.
            req = req.header(hyper::header::HOST, h);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.clone(),
                    message: error_chain(&e),
                })?;
            let status = resp.status();
            let body = crate::body::read_body(resp.into_body())
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://10.0.0.1:9100/").expect("ok");
        assert_eq!(
            u.join("/v1/gate?scope=a%3Db").expect("joins").to_string(),
            "http://10.0.0.1:9100/v1/gate?scope=a%3Db"
        );
        assert_eq!(u.to_string(), "http://10.0.0.1:9100");
        assert_eq!(
            u.socket_addr(),
            Some("10.0.0.1:9100".parse().expect("addr"))
        );
        let p = BaseUrl::parse("http://agg/pf/").expect("prefix");
        assert_eq!(
            p.join("/v1/nodes").expect("joins").to_string(),
            "http://agg/pf/v1/nodes"
        );
        assert_eq!(p.socket_addr(), None);
        let h = BaseUrl::parse("HTTPS://agg.example.com/").expect("https, any case");
        assert!(h.is_tls());
        assert_eq!(
            h.join("/v1/gate").expect("joins").to_string(),
            "https://agg.example.com/v1/gate"
        );
        assert!(BaseUrl::parse("ftp://x:1").is_err());
        assert!(BaseUrl::parse("x:1").is_err());
        // Pinned: the URI names the address, the Host header the name.
        let named = BaseUrl::parse("http://replicas.example:9100/pf").expect("name");
        assert!(named.is_name() && !u.is_name());
        assert_eq!((named.host(), named.port()), ("replicas.example", 9100));
        let pinned = named.at("[::1]:9100".parse().expect("addr"));
        assert_eq!(
            pinned.join("/v1/reports").expect("joins").to_string(),
            "http://[::1]:9100/pf/v1/reports"
        );
        assert_eq!(pinned.host_header(), Some("replicas.example:9100"));
        assert_eq!(named.host_header(), None);
        assert_eq!(pinned.host(), "replicas.example");
        assert_eq!(
            pinned.to_string(),
            "http://replicas.example:9100/pf via [::1]:9100"
        );
        assert!(BaseUrl::parse("http://x:1/?a=b").is_err());
    }
}
