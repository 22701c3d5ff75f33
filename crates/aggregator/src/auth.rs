//! Who is calling and what they may do. A request carries at most one
//! credential: a bearer token (looked up by its SHA-256) or, over TLS, a
//! client certificate already verified against `aggregator.tls.client_ca`
//! (its DNS names). Either maps to an [`Identity`] with [`Roles`]; one
//! middleware ([`crate::api::require_role`]) decides every request from its
//! route ([`Auth::check`] with the role the route needs), so
//! handlers never check credentials themselves. The one check left to a
//! handler is the node a report names, which only the body carries
//! ([`Caller::may_report_for`]).
//!
//! Tokens are stored and compared as SHA-256 digests: the configuration may
//! hold digests only (`token_sha256`, the node tokens file), and a lookup keyed
//! by the digest of what was presented reveals nothing usable through timing
//! (finding a token whose digest shares a prefix is a preimage attack); the
//! final comparison is constant-time all the same.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::http::{header, HeaderMap, Method, StatusCode};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What an identity may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// Report for its own node(s) (or any node: the fleet report token).
    pub agent: bool,
    /// Gate, status, nodes, waivers list, audit, metrics, the page.
    pub reader: bool,
    /// Waivers and inventory changes.
    pub operator: bool,
}

impl Roles {
    /// The agent role only (a node's token or certificate).
    pub const AGENT: Self = Self {
        agent: true,
        reader: false,
        operator: false,
    };
    /// Operator and reader (the admin token).
    pub const OPERATOR: Self = Self {
        agent: false,
        reader: true,
        operator: true,
    };

    /// Parses `["agent", "reader", "operator"]`.
    ///
    /// # Errors
    /// An unknown role name.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut r = Self::default();
        for n in names {
            match n.as_str() {
                "agent" => r.agent = true,
                "reader" => r.reader = true,
                "operator" => r.operator = true,
                other => {
                    return Err(format!(
                        "unknown role `{other}`: expected \"agent\", \"reader\" or \"operator\""
                    ))
                }
            }
        }
        Ok(r)
    }

    fn has(self, role: Role) -> bool {
        match role {
            Role::Agent => self.agent,
            Role::Reader => self.reader,
            Role::Operator => self.operator,
        }
    }
}

/// One role a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `POST /v1/reports`.
    Agent,
    /// Every other `GET`.
    Reader,
    /// Every other write.
    Operator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Agent => "agent",
            Self::Reader => "reader",
            Self::Operator => "operator",
        })
    }
}

/// Who may read without a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Anyone, without a credential (a trusted network; the loopback default).
    Open,
    /// Any valid credential, a node's included (the default elsewhere).
    Authenticated,
    /// Only identities with the reader role.
    Reader,
}

/// Which nodes an identity may report for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// Any node: the fleet-wide report token (explicit opt-in).
    Any,
    /// These names only.
    Only(Vec<String>),
}

/// A known credential holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// How the audit log names it (`node-token:n1`, `cert:n1.example.com`).
    pub name: String,
    /// Roles.
    pub roles: Roles,
    /// Nodes it may report for (with the agent role).
    pub nodes: Nodes,
}

/// A configured certificate identity: a DNS name in a client certificate
/// and the roles it gets (instead of the default node identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRule {
    /// DNS SAN to match (case-insensitive).
    pub san: String,
    /// Identity given to a certificate with that name.
    pub identity: Identity,
}

/// Every credential the aggregator accepts; built by the configuration.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: HashMap<[u8; 32], Identity>,
    certs: Vec<CertRule>,
    /// Client certificates are verified (a `client_ca` is configured).
    mtls: bool,
    reads: Reads,
}

/// SHA-256 of a token.
#[must_use]
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses 64 hex digits.
///
/// # Errors
/// Not 64 hex digits.
pub fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("`{hex}` is not a SHA-256 digest (64 hex digits)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Lower-case hex of a digest (`preflight debug node-token`).
#[must_use]
pub fn hex(d: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A new random token for `node` (256 bits from the OS) and the line for
/// the node tokens file (`NODE SHA256HEX`): only the digest is kept there.
///
/// # Errors
/// A bad node name, or no randomness from the OS.
pub fn mint_node_token(node: &str) -> Result<(String, String), String> {
    use ring::rand::SecureRandom as _;
    preflight_model::names::check_node_name(node).map_err(|e| e.to_string())?;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| "no randomness from the OS".to_owned())?;
    let token = hex(&raw);
    let line = format!("{node} {}", hex(&token_digest(&token)));
    Ok((token, line))
}

/// Parses a node tokens file: `node sha256hex` per line, `#` comments.
///
/// # Errors
/// `line N: reason` for the first bad line.
pub fn parse_node_tokens(text: &str) -> Result<Vec<(String, [u8; 32])>, String> {
    let mut out: Vec<(String, [u8; 32])> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |r: String| format!("line {}: {r}", i + 1);
        let mut parts = line.split_whitespace();
        let (Some(node), Some(digest), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `NODE SHA256HEX`".into()));
        };
        preflight_model::names::check_node_name(node).map_err(|e| err(e.to_string()))?;
        let d = parse_digest(digest).map_err(err)?;
        if out.iter().any(|(_, o)| *o == d) {
            return Err(err("the same token digest is listed twice".into()));
        }
        out.push((node.to_owned(), d));
    }
    Ok(out)
}

impl Default for Auth {
    /// No credentials: every request is allowed (`auth = "none"`, loopback).
    fn default() -> Self {
        Self::new(Reads::Open)
    }
}

impl Auth {
    /// No credentials yet; reads as given.
    #[must_use]
    pub fn new(reads: Reads) -> Self {
        Self {
            tokens: HashMap::new(),
            certs: Vec::new(),
            mtls: false,
            reads,
        }
    }

    /// Accepts a token (by its digest) for `identity`.
    ///
    /// # Errors
    /// The same digest is already given to another identity.
    pub fn add_token(&mut self, digest: [u8; 32], identity: Identity) -> Result<(), String> {
        if let Some(old) = self.tokens.get(&digest) {
            return Err(format!(
                "the same token is given to `{}` and `{}`; each credential must be distinct",
                old.name, identity.name
            ));
        }
        self.tokens.insert(digest, identity);
        Ok(())
    }

    /// Gives certificates with DNS name `san` this identity.
    pub fn add_cert(&mut self, san: &str, identity: Identity) {
        self.certs.push(CertRule {
            san: san.to_ascii_lowercase(),
            identity,
        });
    }

    /// Client certificates are verified by the TLS layer.
    pub fn set_mtls(&mut self, on: bool) {
        self.mtls = on;
    }

    /// Some credential has this role. When none has but another credential
    /// exists, the role's routes are closed to everyone (said at start by
    /// [`Auth::closed_roles`]).
    fn configured(&self, role: Role) -> bool {
        let in_rules = self.tokens.values().any(|i| i.roles.has(role))
            || self.certs.iter().any(|c| c.identity.roles.has(role));
        in_rules || (role == Role::Agent && self.mtls)
    }

    fn any_credential(&self) -> bool {
        !self.tokens.is_empty() || !self.certs.is_empty() || self.mtls
    }

    /// The write roles no credential has while some credential exists:
    /// nobody can do what they allow (e.g. a reader identity alone leaves
    /// waivers closed, never open). The aggregator warns of them at start.
    #[must_use]
    pub fn closed_roles(&self) -> Vec<Role> {
        if !self.any_credential() {
            return Vec::new();
        }
        [Role::Agent, Role::Operator]
            .into_iter()
            .filter(|r| !self.configured(*r))
            .collect()
    }

    /// Accepts `token` from anywhere for any node (`report_token` with
    /// `fleet_report_token = true`: a trusted network only).
    ///
    /// # Errors
    /// The token equals another credential.
    pub fn add_fleet_report_token(&mut self, token: &str) -> Result<(), String> {
        self.add_token(
            token_digest(token),
            Identity {
                name: "fleet-report-token".into(),
                roles: Roles::AGENT,
                nodes: Nodes::Any,
            },
        )
    }

    /// Accepts `token` as operator and reader (`admin_token`).
    ///
    /// # Errors
    /// The token equals another credential.
    pub fn add_admin_token(&mut self, token: &str) -> Result<(), String> {
        self.add_token(
            token_digest(token),
            Identity {
                name: "admin-token".into(),
                roles: Roles::OPERATOR,
                nodes: Nodes::Only(Vec::new()),
            },
        )
    }

    /// Accepts a node token (by digest) for reports of `node` only.
    ///
    /// # Errors
    /// The digest equals another credential's.
    pub fn add_node_token(&mut self, node: &str, digest: [u8; 32]) -> Result<(), String> {
        self.add_token(
            digest,
            Identity {
                name: format!("node-token:{node}"),
                roles: Roles::AGENT,
                nodes: Nodes::Only(vec![node.to_owned()]),
            },
        )
    }

    /// The identity behind a bearer token, if any was sent.
    fn by_token(&self, token: &str) -> Option<&Identity> {
        let d = token_digest(token);
        let (k, id) = self.tokens.get_key_value(&d)?;
        bool::from(k.ct_eq(&d)).then_some(id)
    }

    /// The identity of a verified client certificate.
    fn by_cert(&self, peer: &PeerCert) -> Identity {
        for name in &peer.dns_names {
            if let Some(rule) = self.certs.iter().find(|c| c.san == *name) {
                return rule.identity.clone();
            }
        }
        Identity {
            name: format!("cert:{}", peer.dns_names.join(",")),
            roles: Roles::AGENT,
            nodes: Nodes::Only(peer.dns_names.clone()),
        }
    }

    /// Decides a request that needs `role`.
    ///
    /// # Errors
    /// 401 without a valid credential, 403 with one that lacks the role.
    pub fn check(
        &self,
        role: Role,
        headers: &HeaderMap,
        peer: Option<&PeerCert>,
    ) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let token = bearer(headers).map_err(|m| unauthorized(&m))?;
        let identity = match (token, peer) {
            (Some(t), _) => Some(
                self.by_token(t)
                    .cloned()
                    .ok_or_else(|| unauthorized("missing or wrong bearer token"))?,
            ),
            (None, Some(p)) if !p.dns_names.is_empty() => Some(self.by_cert(p)),
            (None, _) => None,
        };
        let Some(identity) = identity else {
            // A write (a report, a waiver, an inventory change) is open only
            // while no credential of any kind exists (`auth = "none"` or a
            // loopback aggregator with nothing configured). A role that has
            // no credential of its own is closed, not open: otherwise a
            // reader identity alone would leave waivers open to anyone.
            let open = match role {
                Role::Reader => self.reads == Reads::Open || !self.any_credential(),
                Role::Agent | Role::Operator => !self.any_credential(),
            };
            return if open {
                Ok(Caller(None))
            } else {
                Err(unauthorized(&format!(
                    "this request needs the {role} role: send a bearer token or a client certificate"
                )))
            };
        };
        let reads_any = role == Role::Reader && self.reads != Reads::Reader;
        if identity.roles.has(role) || reads_any {
            Ok(Caller(Some(Arc::new(identity))))
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("`{}` does not have the {role} role", identity.name),
            ))
        }
    }
}

/// The bearer token, if an `Authorization` header was sent; the scheme is
/// case-insensitive (RFC 9110).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| "the Authorization header is not text".to_owned())?;
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(Some(t.trim()))
        }
        _ => Err("expected `Authorization: Bearer TOKEN`".to_owned()),
    }
}

/// The DNS names of the client certificate of this connection, verified by
/// the TLS layer (wildcards are never an identity).
#[derive(Debug, Clone, Default)]
pub struct PeerCert {
    /// Lower-case DNS SANs.
    pub dns_names: Vec<String>,
}

/// The authenticated caller of a request; `None` on an open route.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Arc<Identity>>);

impl Caller {
    /// Whether this caller may report for `node`.
    #[must_use]
    pub fn may_report_for(&self, node: &str) -> bool {
        match &self.0 {
            None => true,
            Some(id) => match &id.nodes {
                Nodes::Any => true,
                Nodes::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(node)),
            },
        }
    }

    /// How the audit log names the caller.
    #[must_use]
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("anonymous", |i| i.name.as_str())
    }
}

/// The role a route needs: reports are the agent's, probes are open, every
/// other read is the reader's and every other write the operator's (so a
/// route added later is closed by default).
pub(crate) fn needs(method: &Method, route: &str) -> Option<Role> {
    match (method, route) {
        (_, "/healthz" | "/readyz") => None,
        (&Method::POST, "/v1/reports") => Some(Role::Agent),
        (&Method::GET | &Method::HEAD, _) => Some(Role::Reader),
        _ => Some(Role::Operator),
    }
}

#[cfg(test)]
mod tests;
