//! HTTP/1.1 transport: validated base URLs and one pooled connection client
//! whose every request is bounded by a timeout (plain HTTP; put a
//! TLS-terminating proxy in front when the network is untrusted).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;

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
    /// No answer in time.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// Target.
        url: String,
        /// Limit.
        timeout: Duration,
    },
}

/// A base URL (`http://host:port[/prefix]`), parsed and checked once.
///
/// The server's *name* (the configured host: the `Host` header, and the
/// name a certificate must carry) and the *address* connected to are kept
/// apart: a URL as configured lets the connector resolve its host, while
/// [`BaseUrl::at`] pins one address behind that name, so that several
/// replicas behind one DNS name (a Kubernetes headless Service) are each
/// reached on their own while each still sees the name it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
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
    /// When it is not `http://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Self, HttpError> {
        let bad = |reason: &str| HttpError::BadUrl {
            url: s.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = s
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported by the built-in client; terminate TLS in a local proxy or use http on a trusted network")),
            _ => return Err(bad("expected http://host:port")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL has no query string"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        Ok(Self {
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

    /// The port (80 when the URL has none).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }

    /// Whether the host is a name (to resolve) rather than an IP address.
    #[must_use]
    pub fn is_name(&self) -> bool {
        self.host().parse::<std::net::IpAddr>().is_err()
    }

    /// The same server reached at `address` instead of by resolving its
    /// name: requests connect there but keep the configured name as `Host`.
    #[must_use]
    pub fn at(&self, address: std::net::SocketAddr) -> Self {
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
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| HttpError::BadUrl {
                url: format!("{self}{path_and_query}"),
                reason: e.to_string(),
            })
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)?;
        match self.address {
            Some(a) => write!(f, " via {a}"),
            None => Ok(()),
        }
    }
}

/// A reusable connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose every request (connect + answer) is bounded by `timeout`.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self { inner, timeout }
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
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
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
        assert!(BaseUrl::parse("https://x:1")
            .expect_err("https")
            .to_string()
            .contains("https is not supported"));
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
