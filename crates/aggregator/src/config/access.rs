//! Who may call the aggregator, as `[aggregator]` says it: the report and
//! admin tokens, `[aggregator.tls]`, `[[aggregator.identity]]`, `reads` and
//! `auth`, validated together because they decide together whether a
//! non-loopback listener is safe; then [`AggregatorSection::resolve_auth`],
//! the step that reads the token files and builds the [`Auth`].

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use preflight_model::config::{at, ConfigError, Secret};
use serde::Deserialize;
use toml::Spanned;

use super::AggregatorSection;
use crate::auth::{parse_digest, parse_node_tokens, Auth, Identity, Nodes, Reads, Roles};
use crate::tls::TlsSettings;

/// `[aggregator.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    client_ca: Option<Spanned<String>>,
}

/// `[[aggregator.identity]]`: a token digest or a certificate name, and
/// what it may do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    name: Spanned<String>,
    cert_san: Option<String>,
    token_sha256: Option<String>,
    roles: Vec<String>,
    node: Option<String>,
}

/// How a configured identity is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKey {
    /// The SHA-256 of its bearer token.
    Token([u8; 32]),
    /// A DNS name in its client certificate.
    CertSan(String),
}

/// The keys of `[aggregator]` that say who may call, as written.
pub(super) struct RawAccess {
    pub(super) report_token: Option<String>,
    pub(super) report_token_file: Option<Spanned<String>>,
    pub(super) admin_token: Option<String>,
    pub(super) admin_token_file: Option<Spanned<String>>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) tls: Option<RawTls>,
    pub(super) insecure_plaintext: bool,
    pub(super) fleet_report_token: bool,
    pub(super) node_tokens_file: Option<Spanned<String>>,
    pub(super) reads: Option<Spanned<String>>,
    pub(super) identity: Vec<RawIdentity>,
}

/// Those keys validated (the fields of [`AggregatorSection`] they fill).
pub(super) struct Access {
    pub(super) report_token: Option<Secret>,
    pub(super) admin_token: Option<Secret>,
    pub(super) tls: Option<TlsSettings>,
    pub(super) node_tokens_file: Option<PathBuf>,
    pub(super) reads: Reads,
    pub(super) identities: Vec<(IdentityKey, Identity)>,
}

fn secret(
    key: String,
    inline: Option<&String>,
    file: Option<&Spanned<String>>,
) -> Result<Option<Secret>, ConfigError> {
    Secret::from_parts(
        &key,
        inline.map(String::as_str),
        file.map(|f| (f.get_ref().as_str(), f.span())),
    )
}

impl RawAccess {
    /// Validates for a listener on `listen` (`listen_span`: where the file
    /// sets it); `prefix` is the table's dotted path.
    pub(super) fn validate(
        self,
        prefix: &str,
        listen: SocketAddr,
        listen_span: Option<Range<usize>>,
    ) -> Result<Access, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let report_token = secret(
            key("report_token"),
            self.report_token.as_ref(),
            self.report_token_file.as_ref(),
        )?;
        let admin_token = secret(
            key("admin_token"),
            self.admin_token.as_ref(),
            self.admin_token_file.as_ref(),
        )?;
        let loopback = listen.ip().is_loopback();
        let tls = self.tls.as_ref().map(|t| TlsSettings {
            cert: PathBuf::from(t.cert.get_ref()),
            key: PathBuf::from(t.key.get_ref()),
            client_ca: t.client_ca.as_ref().map(|c| PathBuf::from(c.get_ref())),
        });
        if tls.is_none() && !loopback && !self.insecure_plaintext {
            return Err(ConfigError::new(key("tls"), listen_span, format!("listening on {listen} without TLS would send tokens in clear: set [{prefix}.tls] cert and key, or insecure_plaintext = true on a trusted network")));
        }
        if report_token.is_some() && !loopback && !self.fleet_report_token {
            return Err(ConfigError::new(key("report_token"), None, format!("one report token for the whole fleet lets any node report for any other: use node tokens ({prefix}.node_tokens_file) or client certificates ({prefix}.tls.client_ca), or set fleet_report_token = true on a trusted network")));
        }
        if self.fleet_report_token && report_token.is_none() {
            return Err(ConfigError::new(
                key("fleet_report_token"),
                None,
                "needs report_token (or report_token_file)",
            ));
        }
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let identities = self
            .identity
            .iter()
            .enumerate()
            .map(|(i, id)| id.validate(&key(&format!("identity[{i}]")), prefix, mtls))
            .collect::<Result<Vec<_>, _>>()?;
        let reads = reads(prefix, self.reads.as_ref(), loopback)?;
        let access = Access {
            report_token,
            admin_token,
            tls,
            node_tokens_file: self.node_tokens_file.map(|f| PathBuf::from(f.into_inner())),
            reads,
            identities,
        };
        access.check_auth(prefix, self.auth.as_ref(), listen)?;
        Ok(access)
    }
}

impl RawIdentity {
    /// One `[[aggregator.identity]]`; `key` names it (`aggregator.identity[0]`).
    fn validate(
        &self,
        key: &str,
        prefix: &str,
        mtls: bool,
    ) -> Result<(IdentityKey, Identity), ConfigError> {
        let err = |r: String| at(key.to_owned(), &self.name, r);
        let roles = Roles::parse(&self.roles).map_err(&err)?;
        if roles == Roles::default() {
            return Err(err(
                "roles is empty: give one or more of \"agent\", \"reader\", \"operator\"".into(),
            ));
        }
        if let Some(n) = &self.node {
            preflight_model::names::check_node_name(n).map_err(|e| err(e.to_string()))?;
        }
        let (ik, nodes) = match (&self.cert_san, &self.token_sha256) {
            (Some(san), None) => {
                if !mtls {
                    return Err(err(format!("cert_san needs {prefix}.tls.client_ca")));
                }
                let mut nodes = vec![san.to_ascii_lowercase()];
                nodes.extend(self.node.clone());
                (IdentityKey::CertSan(san.clone()), nodes)
            }
            (None, Some(h)) => {
                if roles.agent && self.node.is_none() {
                    return Err(err("a token with the agent role needs node = \"NAME\" (the node it reports for)".into()));
                }
                (
                    IdentityKey::Token(parse_digest(h).map_err(&err)?),
                    self.node.clone().into_iter().collect(),
                )
            }
            _ => return Err(err("give exactly one of cert_san or token_sha256".into())),
        };
        Ok((
            ik,
            Identity {
                name: self.name.get_ref().clone(),
                roles,
                nodes: Nodes::Only(nodes),
            },
        ))
    }
}

/// `reads`: open on loopback and authenticated elsewhere when absent.
fn reads(
    prefix: &str,
    reads: Option<&Spanned<String>>,
    loopback: bool,
) -> Result<Reads, ConfigError> {
    Ok(match reads.map(|r| (r, r.get_ref().as_str())) {
        None if loopback => Reads::Open,
        None => Reads::Authenticated,
        Some((_, "open")) => Reads::Open,
        Some((_, "authenticated")) => Reads::Authenticated,
        Some((_, "reader")) => Reads::Reader,
        Some((r, other)) => {
            return Err(at(
                format!("{prefix}.reads"),
                r,
                format!("`{other}`: expected \"open\", \"authenticated\" or \"reader\""),
            ))
        }
    })
}

impl Access {
    /// `auth`: with `"token"` (the default), a listener off loopback needs
    /// a credential for agents and one for operators; `"none"` only on
    /// loopback.
    fn check_auth(
        &self,
        prefix: &str,
        auth: Option<&Spanned<String>>,
        listen: SocketAddr,
    ) -> Result<(), ConfigError> {
        let auth_err = |reason: String| {
            ConfigError::new(format!("{prefix}.auth"), auth.map(Spanned::span), reason)
        };
        match auth.map_or("token", |a| a.get_ref().as_str()) {
            "token" => {
                let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
                let operator = self.admin_token.is_some()
                    || self.identities.iter().any(|(_, i)| i.roles.operator);
                let agent = self.report_token.is_some()
                    || self.node_tokens_file.is_some()
                    || mtls
                    || self.identities.iter().any(|(_, i)| i.roles.agent);
                if !(listen.ip().is_loopback() || operator && agent) {
                    return Err(auth_err(format!("listening on {listen} needs credentials for agents (node_tokens_file, tls.client_ca, or report_token with fleet_report_token) and for operators (admin_token or an identity with the operator role); set auth = \"none\" only on a loopback address")));
                }
                Ok(())
            }
            "none" => {
                if !listen.ip().is_loopback() {
                    return Err(auth_err(format!(
                        "auth = \"none\" is allowed only on a loopback address, not {listen}"
                    )));
                }
                Ok(())
            }
            other => Err(auth_err(format!(
                "`{other}`: expected \"token\" or \"none\""
            ))),
        }
    }
}

impl AggregatorSection {
    /// The resolve step for credentials: reads token files and the node
    /// tokens file and builds the credentials. `prefix` as in validation.
    ///
    /// # Errors
    /// A file that cannot be read, is empty or has a bad line; the same
    /// token given to two identities.
    pub fn resolve_auth(&self, prefix: &str) -> Result<Auth, ConfigError> {
        let read = |s: Option<&Secret>, k: &str| {
            s.map(|s| s.resolve(&format!("{prefix}.{k}"))).transpose()
        };
        let dup = |k: &str| {
            let k = format!("{prefix}.{k}");
            move |r: String| ConfigError::new(k, None, r)
        };
        let mut auth = Auth::new(self.reads);
        auth.set_mtls(self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
        if let Some(t) = read(self.report_token.as_ref(), "report_token")? {
            auth.add_fleet_report_token(&t)
                .map_err(dup("report_token"))?;
        }
        if let Some(t) = read(self.admin_token.as_ref(), "admin_token")? {
            auth.add_admin_token(&t).map_err(dup("admin_token"))?;
        }
        if let Some(f) = &self.node_tokens_file {
            let k = format!("{prefix}.node_tokens_file");
            let text = std::fs::read_to_string(f).map_err(|e| {
                ConfigError::new(&k, None, format!("cannot read {}: {e}", f.display()))
            })?;
            let lines = parse_node_tokens(&text)
                .map_err(|r| ConfigError::new(&k, None, format!("{}: {r}", f.display())))?;
            for (node, d) in lines {
                auth.add_node_token(&node, d)
                    .map_err(dup("node_tokens_file"))?;
            }
        }
        for (i, (k, id)) in self.identities.iter().enumerate() {
            match k {
                IdentityKey::Token(d) => auth
                    .add_token(*d, id.clone())
                    .map_err(dup(&format!("identity[{i}]")))?,
                IdentityKey::CertSan(san) => auth.add_cert(san, id.clone()),
            }
        }
        Ok(auth)
    }
}
