//! A minimal HTTP/1.1 JSON client for talking to aggregators (plain HTTP;
//! put a TLS-terminating proxy in front when the network is untrusted).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;

/// What can go wrong talking to a server.
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

/// A base URL (`http://host:port[/prefix]`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

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
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }

    /// Host and port when the host is an IP address (for probes).
    #[must_use]
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let uri: Uri = self.0.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(std::net::SocketAddr::new(
            host.parse().ok()?,
            uri.port_u16().unwrap_or(80),
        ))
    }

    /// `base + path` (path starts with `/`).
    #[must_use]
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reusable client.
#[derive(Clone, Debug)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
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

    /// Sends a request and returns status and body.
    ///
    /// # Errors
    /// Transport failures and timeouts; any HTTP status is a success here.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| HttpError::BadUrl {
                    url: url.into(),
                    reason: e.to_string(),
                })?;
        let mut req = Request::builder().method(method).uri(uri).header(
            "user-agent",
            concat!("preflight/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Transport {
                url: url.into(),
                message: e.to_string(),
            })?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.into(),
                    message: error_chain(&e),
                })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.into(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.into(),
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
        assert_eq!(
            BaseUrl::parse("http://10.0.0.1:9100/")
                .expect("ok")
                .join("/v1/gate"),
            "http://10.0.0.1:9100/v1/gate"
        );
        assert!(BaseUrl::parse("https://x:1")
            .expect_err("https")
            .to_string()
            .contains("https is not supported"));
        assert!(BaseUrl::parse("x:1").is_err());
        assert!(BaseUrl::parse("http://x:1/?a=b").is_err());
    }
}
