//! The rolling-update calls: `/v1/plan` (which nodes may go now; `POST`
//! takes them under a lease) and `/v1/maintenance` (leases). A plan is
//! typed like the gate: a batch, an empty batch, refused, or no answer.

use std::time::SystemTime;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{form_urlencode, message, refused, AggregatorClient, Answered, ClientError};

/// A maintenance lease, as the aggregator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Id.
    pub id: i64,
    /// The nodes under it.
    pub nodes: Vec<String>,
    /// The pipeline that holds it.
    pub pipeline: String,
    /// Why.
    pub reason: String,
    /// Who took it.
    pub author: String,
    /// When it was taken.
    #[serde(with = "preflight_model::time::rfc3339")]
    pub created_at: SystemTime,
    /// When it ends unless ended earlier.
    #[serde(with = "preflight_model::time::rfc3339")]
    pub expires_at: SystemTime,
}

/// A node of the scope not in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Node.
    pub node: String,
    /// Why, as a code (`maintenance`, `not_go`, `domain_blocked`,
    /// `domain_full`, `budget_spent`, `no_domain`).
    pub reason: String,
    /// The same for people.
    #[serde(default)]
    pub detail: String,
}

/// The plan's answer (`GET` and `POST /v1/plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAnswer {
    /// The scope, as asked.
    #[serde(default)]
    pub scope: String,
    /// Nodes that may start now.
    pub batch: Vec<String>,
    /// Every other node of the scope, and why.
    pub held: Vec<Held>,
    /// Nodes of the scope.
    #[serde(default)]
    pub members: usize,
    /// `max_unavailable` in nodes.
    #[serde(default)]
    pub max_unavailable: usize,
    /// Nodes of the scope out for maintenance now.
    #[serde(default)]
    pub unavailable: Vec<String>,
    /// With `POST`: the lease its batch was taken under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// The question to the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanQuery {
    /// Label selector; empty: every node.
    pub scope: String,
    /// `N` or `P%`; the aggregator's default (1) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<String>,
    /// `LABEL:K`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

/// A lease's terms, for `POST /v1/plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseTerms {
    /// How long (`30m`).
    pub duration: String,
    /// Why.
    pub reason: String,
    /// The pipeline taking it.
    pub pipeline: String,
}

/// The plan's answer, fail-closed as the gate's.
#[derive(Debug, Clone)]
pub enum PlanResult {
    /// A batch may start (HTTP 200 and a non-empty batch agree).
    Batch(Answered<PlanAnswer>),
    /// Nothing may start now (HTTP 503 and an empty batch agree).
    Empty(Answered<PlanAnswer>),
    /// The question was refused (4xx: bad selector, budget, lease...).
    Refused(ClientError),
    /// No server gave a well-formed answer: start nothing.
    Undecided(ClientError),
}

#[derive(Serialize)]
struct TakeBody<'a> {
    #[serde(flatten)]
    query: &'a PlanQuery,
    #[serde(flatten)]
    terms: &'a LeaseTerms,
}

impl AggregatorClient {
    /// `GET /v1/plan`: the largest batch of the scope that may start now.
    pub async fn plan(&self, q: &PlanQuery) -> PlanResult {
        let mut path = format!("/v1/plan?scope={}", form_urlencode(&q.scope));
        for (key, value) in [("max_unavailable", &q.max_unavailable), ("per", &q.per)] {
            if let Some(v) = value {
                path.push_str(&format!("&{key}={}", form_urlencode(v)));
            }
        }
        self.plan_call(Method::GET, &path, None).await
    }

    /// `POST /v1/plan` (operator): the batch, taken under one lease.
    pub async fn take_plan(&self, q: &PlanQuery, terms: &LeaseTerms) -> PlanResult {
        let body =
            serde_json::to_vec(&TakeBody { query: q, terms }).expect("a plan request serializes");
        self.plan_call(Method::POST, "/v1/plan", Some(body)).await
    }

    /// `GET /v1/maintenance`: the leases in force.
    ///
    /// # Errors
    /// Refused or no answer.
    pub async fn leases(&self) -> Result<Answered<Vec<Lease>>, ClientError> {
        self.get("/v1/maintenance").await
    }

    /// `DELETE /v1/maintenance/{id}` (operator): ends a lease now.
    ///
    /// # Errors
    /// Refused (404 for no lease in force with that id) or no answer.
    pub async fn end_lease(&self, id: i64) -> Result<Answered<()>, ClientError> {
        self.delete(&format!("/v1/maintenance/{id}")).await
    }

    /// A plan question walked across the servers. A `POST` that a server
    /// answered (even with 5xx) may have taken a lease, so it goes to the
    /// next server only when the first did not answer at all.
    async fn plan_call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> PlanResult {
        let write = method == Method::POST;
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
                return PlanResult::Refused(refused(server, status, &bytes));
            }
            if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
                skipped.push(format!("{server}: HTTP {status}: {}", message(&bytes)));
                if write {
                    break;
                }
                continue;
            }
            match serde_json::from_slice::<PlanAnswer>(&bytes) {
                // The status, the batch and (for a take) the lease must
                // agree, or the answer is not trusted.
                Ok(a)
                    if a.batch.is_empty() == (status == StatusCode::SERVICE_UNAVAILABLE)
                        && (!write || a.batch.is_empty() || a.lease.is_some()) =>
                {
                    let empty = a.batch.is_empty();
                    let answered = Answered {
                        server: server.clone(),
                        skipped,
                        value: a,
                    };
                    return if empty {
                        PlanResult::Empty(answered)
                    } else {
                        PlanResult::Batch(answered)
                    };
                }
                Ok(_) => skipped.push(format!(
                    "{server}: HTTP {status} disagrees with the batch in the body"
                )),
                Err(e) => skipped.push(format!(
                    "{server}: HTTP {status} with an unreadable answer ({e})"
                )),
            }
            if write {
                break;
            }
        }
        PlanResult::Undecided(ClientError::NoAnswer(skipped))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::BaseUrl;

    /// A server that answers every plan question with `status` and `body`.
    async fn server(status: u16, body: serde_json::Value) -> SocketAddr {
        let reply = move || {
            let b = body.clone();
            async move {
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    axum::Json(b),
                )
            }
        };
        let app =
            axum::Router::new().route("/v1/plan", axum::routing::get(reply.clone()).post(reply));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    fn client(addr: SocketAddr) -> AggregatorClient {
        let url = BaseUrl::parse(&format!("http://{addr}")).expect("url");
        AggregatorClient::new(vec![url], Duration::from_secs(5))
    }

    fn terms() -> LeaseTerms {
        LeaseTerms {
            duration: "30m".into(),
            reason: "test".into(),
            pipeline: "p".into(),
        }
    }

    /// Fail-closed: a 200 with an empty batch, or a taken batch without its
    /// lease, starts nothing; a 503 with an empty batch is "none now".
    #[tokio::test]
    async fn status_batch_and_lease_must_agree() {
        let empty = serde_json::json!({"batch": [], "held": []});
        let one = serde_json::json!({"batch": ["n1"], "held": []});
        let q = PlanQuery::default();

        let c = client(server(200, empty.clone()).await);
        assert!(matches!(c.plan(&q).await, PlanResult::Undecided(_)));
        let c = client(server(503, empty).await);
        assert!(matches!(c.plan(&q).await, PlanResult::Empty(_)));
        let c = client(server(200, one).await);
        assert!(matches!(c.plan(&q).await, PlanResult::Batch(_)));
        match c.take_plan(&q, &terms()).await {
            PlanResult::Undecided(e) => assert!(e.to_string().contains("disagrees"), "{e}"),
            other => panic!("a batch taken without a lease: {other:?}"),
        }
        let c = client(
            server(
                400,
                serde_json::json!({"error": "bad_request", "message": "per"}),
            )
            .await,
        );
        assert!(matches!(
            c.plan(&q).await,
            PlanResult::Refused(ClientError::Refused { status: 400, .. })
        ));
    }
}
