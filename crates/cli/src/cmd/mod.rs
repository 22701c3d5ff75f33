//! Commands that talk to an aggregator through [`preflight_client`]:
//! `gate` (pipelines), `status` (fleet table), `waive` (waivers), `plan`
//! and `maintenance` (rolling updates). This
//! module holds what they share: the server and token flags, and the map
//! from a client error to an exit code.

pub mod gate;
pub mod maintenance;
pub mod plan;
pub mod status;
pub mod waive;

use std::time::Duration;

use std::path::PathBuf;

use preflight_client::{AggregatorClient, BaseUrl, TlsOptions};

use crate::EXIT_USAGE;

/// Duration flags (`--timeout 10m`): the one parser of config and flags.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    preflight_model::config::parse_duration(s)
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Aggregator base URL; repeat for several (the next is asked when one does not answer).
    #[arg(
        long = "server",
        short = 's',
        value_name = "URL",
        env = "PREFLIGHT_SERVER",
        value_delimiter = ',',
        required = true
    )]
    servers: Vec<String>,
    /// Request timeout per server.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// CA certificates (PEM) to verify https:// servers against; default: the system's.
    #[arg(long, value_name = "FILE", env = "PREFLIGHT_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) to present (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", env = "PREFLIGHT_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", env = "PREFLIGHT_KEY", requires = "cert")]
    key: Option<PathBuf>,
}

impl ServerArgs {
    /// The client for these servers; a bad URL is a usage error (printed).
    pub fn client(&self) -> Result<AggregatorClient, u8> {
        let urls = self
            .servers
            .iter()
            .map(|s| BaseUrl::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                eprintln!("preflight: {e}");
                EXIT_USAGE
            })?;
        let tls = TlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        let client = AggregatorClient::new(urls, self.request_timeout);
        if tls == TlsOptions::default() && !client.servers().iter().any(BaseUrl::is_tls) {
            return Ok(client);
        }
        client.with_tls(&tls).map_err(|e| {
            eprintln!("preflight: {e}");
            EXIT_USAGE
        })
    }
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Bearer token for the aggregator (operator for waivers; any identity
    /// for reads where the aggregator requires a credential to read).
    #[arg(long, env = "PREFLIGHT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
}

impl TokenArgs {
    /// The token, read from its file if given so; an unreadable file is a
    /// usage error (printed).
    pub fn get(&self) -> Result<Option<String>, u8> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| {
                    eprintln!("preflight: cannot read {}: {e}", f.display());
                    EXIT_USAGE
                }),
            (None, None) => Ok(None),
        }
    }
}
