//! The only HTTP client of preflight: the aggregator API as typed calls
//! (`post_report`, `gate`, `nodes`, `node`, `waivers`, `add_waiver`,
//! `remove_waiver`, `plan`, `take_plan`, `leases`, `end_lease`), with failover across several servers. A server that
//! does not answer (connection refused, timeout, 5xx, an unreadable body) is
//! skipped for the next one, and every answer says which server gave it. A
//! 4xx is the request's fault, the same on every replica, so it stops the
//! walk. The gate's answer is typed go / no-go / could not decide, and
//! anything that is not a well-formed go is not go.

#![warn(missing_docs)]

mod body;
pub mod http;
mod plan;

use std::fmt::Write as _;
use std::time::Duration;

pub use hyper::Method;
use hyper::StatusCode;
use preflight_model::api::{ApiErrorBody, NodeDetail, WaiverRequest};
use preflight_model::report::{GateAnswer, NodeSummary, Report, ReportAck, Waiver};
use preflight_model::Verdict;
use serde::de::DeserializeOwned;

pub use http::{BaseUrl, HttpClient, HttpError, TlsOptions};
pub use plan::{Held, Lease, LeaseTerms, PlanAnswer, PlanQuery, PlanResult};

/// An answer and the server that gave it.
#[derive(Debug, Clone)]
pub struct Answered<T> {
    /// The server that answered.
    pub server: BaseUrl,
    /// Servers tried before it that did not answer, with why.
    pub skipped: Vec<String>,
    /// The answer.
    pub value: T,
}

/// Why a call has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A server refused the request (4xx): the request is wrong, or not
    /// allowed, and another replica would say the same.
    #[error("{server}: HTTP {status}: {message}")]
    Refused {
        /// The server.
        server: BaseUrl,
        /// HTTP status.
        status: u16,
        /// The API's error code (`unknown_scope`), when the body had one.
        code: Option<String>,
        /// What the server said.
        message: String,
    },
    /// No server gave a usable answer; one entry per server tried.
    #[error("{}", .0.join("; "))]
    NoAnswer(Vec<String>),
}

impl ClientError {
    /// The HTTP status of a refusal.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::NoAnswer(_) => None,
        }
    }
}

/// The gate's answer, fail-closed.
#[derive(Debug, Clone)]
pub enum GateResult {
    /// The scope is go (HTTP 200 and a go verdict agree).
    Go(Answered<GateAnswer>),
    /// The scope is not go (HTTP 503 and a no-go verdict agree).
    NoGo(Answered<GateAnswer>),
    /// The question was refused (bad or unknown scope).
    Refused(ClientError),
    /// No server gave a well-formed answer: treat as no-go.
    Undecided(ClientError),
}

/// Whether a request may be sent again to the next server after a server
/// answered with an error: reads may; a write that a server answered
/// (even with 5xx) might have taken effect, so it goes to the next server
/// only when the first did not answer at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Read,
    Write,
}

/// The aggregator API, over one or more servers tried in order.
#[derive(Debug, Clone)]
pub struct AggregatorClient {
    http: HttpClient,
    servers: Vec<BaseUrl>,
    token: Option<String>,
}

impl AggregatorClient {
    /// A client for `servers` (tried in order), each request bounded by `timeout`.
    #[must_use]
    pub fn new(servers: Vec<BaseUrl>, timeout: Duration) -> Self {
        Self {
            http: HttpClient::new(timeout),
            servers,
            token: None,
        }
    }

    /// A client for `http://` servers only (see [`HttpClient::http_only`]):
    /// the system's CA store is not read.
    #[must_use]
    pub fn http_only(servers: Vec<BaseUrl>, timeout: Duration) -> Self {
        Self {
            http: HttpClient::http_only(timeout),
            servers,
            token: None,
        }
    }

    /// Verifies servers and presents a client certificate as `tls` says.
    ///
    /// # Errors
    /// The TLS files cannot be used.
    pub fn with_tls(mut self, tls: &TlsOptions) -> Result<Self, HttpError> {
        self.http = HttpClient::with_tls(self.http.timeout(), tls)?;
        Ok(self)
    }

    /// Sends `token` as a bearer token with every request.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The same client (TLS, token, pool) for other servers.
    #[must_use]
    pub fn for_servers(&self, servers: Vec<BaseUrl>) -> Self {
        Self {
            servers,
            ..self.clone()
        }
    }

    /// The same client (TLS, token, servers) with a connection pool of its
    /// own (see [`HttpClient::separate_pool`]).
    #[must_use]
    pub fn separate_pool(&self) -> Self {
        Self {
            http: self.http.separate_pool(),
            ..self.clone()
        }
    }

    /// The servers, in the order they are tried.
    #[must_use]
    pub fn servers(&self) -> &[BaseUrl] {
        &self.servers
    }

    /// `POST /v1/reports`.
    ///
    /// # Errors
    /// Refused (400, 401, 403, 409...) or no answer.
    pub async fn post_report(&self, report: &Report) -> Result<Answered<ReportAck>, ClientError> {
        let body = serde_json::to_vec(report).expect("a report serializes");
        self.call(
            Method::POST,
            "/v1/reports",
            Some(body),
            StatusCode::OK,
            Retry::Write,
        )
        .await
    }

    /// `GET /v1/gate?scope=...`; the empty scope is every node.
    pub async fn gate(&self, scope: &str) -> GateResult {
        let path = format!("/v1/gate?scope={}", form_urlencode(scope));
        let mut skipped = Vec::new();
        for server in &self.servers {
            let (status, body) = match self.send(server, Method::GET, &path, None).await {
                Ok(r) => r,
                Err(e) => {
                    skipped.push(e);
                    continue;
                }
            };
            if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
                if status.is_client_error() {
                    return GateResult::Refused(refused(server, status, &body));
                }
                skipped.push(format!("{server}: HTTP {status}"));
                continue;
            }
            match serde_json::from_slice::<GateAnswer>(&body) {
                // The status code and the body must agree, or the answer is not trusted.
                Ok(a) if (a.verdict == Verdict::Go) == (status == StatusCode::OK) => {
                    let go = a.verdict == Verdict::Go;
                    let answered = Answered {
                        server: server.clone(),
                        skipped,
                        value: a,
                    };
                    return if go {
                        GateResult::Go(answered)
                    } else {
                        GateResult::NoGo(answered)
                    };
                }
                Ok(_) => skipped.push(format!(
                    "{server}: HTTP {status} disagrees with the verdict in the body"
                )),
                Err(e) => skipped.push(format!(
                    "{server}: HTTP {status} with an unreadable answer ({e})"
                )),
            }
        }
        GateResult::Undecided(ClientError::NoAnswer(skipped))
    }

    /// `GET /v1/nodes`.
    ///
    /// # Errors
    /// Refused or no answer.
    pub async fn nodes(&self) -> Result<Answered<Vec<NodeSummary>>, ClientError> {
        self.get("/v1/nodes").await
    }

    /// `GET /v1/nodes/{node}`.
    ///
    /// # Errors
    /// Refused (404 for a node not in the inventory) or no answer.
    pub async fn node(&self, name: &str) -> Result<Answered<NodeDetail>, ClientError> {
        self.get(&format!("/v1/nodes/{}", form_urlencode(name)))
            .await
    }

    /// `GET /v1/waivers`: the waivers in force.
    ///
    /// # Errors
    /// Refused or no answer.
    pub async fn waivers(&self) -> Result<Answered<Vec<Waiver>>, ClientError> {
        self.get("/v1/waivers").await
    }

    /// `POST /v1/waivers` (admin token).
    ///
    /// # Errors
    /// Refused (no expiry, over the cap, bad token...) or no answer.
    pub async fn add_waiver(&self, w: &WaiverRequest) -> Result<Answered<Waiver>, ClientError> {
        let body = serde_json::to_vec(w).expect("a waiver request serializes");
        self.call(
            Method::POST,
            "/v1/waivers",
            Some(body),
            StatusCode::CREATED,
            Retry::Write,
        )
        .await
    }

    /// `DELETE /v1/waivers/{id}?by=...` (admin token).
    ///
    /// # Errors
    /// Refused (404 for an unknown id) or no answer.
    pub async fn remove_waiver(&self, id: i64, by: &str) -> Result<Answered<()>, ClientError> {
        self.delete(&format!("/v1/waivers/{id}?by={}", form_urlencode(by)))
            .await
    }

    /// A `DELETE` answered 204 by the first server that answers.
    async fn delete(&self, path: &str) -> Result<Answered<()>, ClientError> {
        let mut skipped = Vec::new();
        for server in &self.servers {
            match self.send(server, Method::DELETE, path, None).await {
                Ok((StatusCode::NO_CONTENT, _)) => {
                    return Ok(Answered {
                        server: server.clone(),
                        skipped,
                        value: (),
                    })
                }
                Ok((status, body)) if status.is_client_error() => {
                    return Err(refused(server, status, &body))
                }
                Ok((status, body)) => {
                    return Err(ClientError::NoAnswer(
                        skipped
                            .into_iter()
                            .chain([format!("{server}: HTTP {status}: {}", message(&body))])
                            .collect(),
                    ))
                }
                Err(e) => skipped.push(e),
            }
        }
        Err(ClientError::NoAnswer(skipped))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answered<T>, ClientError> {
        self.call(Method::GET, path, None, StatusCode::OK, Retry::Read)
            .await
    }

    /// One request walked across the servers until one answers `expect`
    /// with a body that parses as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        expect: StatusCode,
        retry: Retry,
    ) -> Result<Answered<T>, ClientError> {
        let mut skipped = Vec::new();
        for server in &self.servers {
            let (status, bytes) = match self.send(server, method.clone(), path, body.clone()).await
            {
                Ok(r) => r,
                Err(e) => {
                    skipped.push(e);
                    continue;
                }
            };
            if status.is_client_error() {
                return Err(refused(server, status, &bytes));
            }
            let problem = if status == expect {
                match serde_json::from_slice(&bytes) {
                    Ok(value) => {
                        return Ok(Answered {
                            server: server.clone(),
                            skipped,
                            value,
                        })
                    }
                    Err(e) => format!("{server}: unreadable answer: {e}"),
                }
            } else {
                format!("{server}: HTTP {status}: {}", message(&bytes))
            };
            skipped.push(problem);
            if retry == Retry::Write {
                break;
            }
        }
        Err(ClientError::NoAnswer(skipped))
    }

    async fn send(
        &self,
        server: &BaseUrl,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let uri = server.join(path).map_err(|e| e.to_string())?;
        self.http
            .request_as(
                method,
                uri,
                server.host_header(),
                self.token.as_deref(),
                body,
            )
            .await
            .map_err(|e| e.to_string())
    }
}

fn refused(server: &BaseUrl, status: StatusCode, body: &[u8]) -> ClientError {
    let parsed = serde_json::from_slice::<ApiErrorBody>(body).ok();
    ClientError::Refused {
        server: server.clone(),
        status: status.as_u16(),
        code: parsed.as_ref().map(|b| b.error.clone()),
        message: parsed.map_or_else(|| String::from_utf8_lossy(body).into_owned(), |b| b.message),
    }
}

/// The API's error message, or the body as text.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<ApiErrorBody>(body).map_or_else(
        |_| String::from_utf8_lossy(body).into_owned(),
        |b| b.message,
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn form_urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
