//! TLS to PostgreSQL with rustls (ring), following libpq's `sslmode`
//! semantics so that a URL means here what it means to `psql`:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (also when absent) | when the server offers TLS, else clear | no |
//! | `require` | always | no; chain only (as `verify-ca`) when `aggregator.database_ca_file` is set |
//! | `verify-ca` | always | chain to the CA file, or to the system roots |
//! | `verify-full` | always | chain and host name (the URL's host: name or IP address) |
//!
//! `allow` (clear first, TLS only if the server insists) is refused: it is
//! a downgrade by design. The CA file is read at every connect, so a
//! renewed CA is picked up on the next reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// `sslmode`, as libpq reads it (`allow` excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it; certificate not checked.
    Prefer,
    /// TLS; certificate not checked (chain only with a CA file).
    Require,
    /// TLS; the chain must lead to a trusted CA.
    VerifyCa,
    /// TLS; the chain and the host name are checked.
    VerifyFull,
}

impl SslMode {
    /// Parses a URL's `sslmode` value.
    ///
    /// # Errors
    /// `allow` and anything libpq does not know.
    pub fn parse(v: &str) -> Result<Self, String> {
        Ok(match v {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => return Err("sslmode=allow connects in clear whenever the server allows it; use disable (loopback, private network), prefer, require, verify-ca or verify-full".into()),
            v => return Err(format!("sslmode={v}: expected disable, prefer, require, verify-ca or verify-full")),
        })
    }

    /// The driver's own mode (it knows no certificate checks; those are
    /// the rustls configuration's).
    #[must_use]
    pub fn driver(self) -> postgres::config::SslMode {
        match self {
            Self::Disable => postgres::config::SslMode::Disable,
            Self::Prefer => postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => postgres::config::SslMode::Require,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit, so that another rustls provider linked into the binary
    // never makes the choice ambiguous.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trusted roots: the CA file, or the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if let Some(f) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
            .and_then(Iterator::collect)
            .map_err(|e| format!("database_ca_file {}: {e}", f.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "database_ca_file {}: no usable CA certificate (PEM)",
                f.display()
            ));
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no system CA certificates found ({}); set aggregator.database_ca_file",
                found
                    .errors
                    .first()
                    .map_or_else(|| "empty store".to_owned(), ToString::to_string)
            ));
        }
    }
    Ok(roots)
}

/// The rustls client configuration for `mode` (not `Disable`).
///
/// # Errors
/// An unreadable CA file, or no roots at all for a verifying mode.
pub fn client_config(mode: SslMode, ca_file: Option<&PathBuf>) -> Result<ClientConfig, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca_file) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(Lenient {
            provider: Arc::clone(&provider),
            chain: None,
        }),
        (SslMode::Require | SslMode::VerifyCa, ca) => Arc::new(Lenient {
            provider: Arc::clone(&provider),
            chain: Some(webpki(ca, &provider)?),
        }),
        (SslMode::VerifyFull, ca) => webpki(ca, &provider)?,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki(
    ca: Option<&PathBuf>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca.map(PathBuf::as_path))?),
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| e.to_string())
}

/// `prefer` and `require` without a CA (`chain` is `None`): encrypted, but
/// any certificate is accepted, as libpq does. `verify-ca` (`chain` set):
/// the full WebPKI check, except that a certificate valid for another name
/// is accepted (webpki checks the name only after the chain). Handshake
/// signatures are checked either way, with the provider's algorithms (as
/// the WebPKI verifier does).
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        for (s, m) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(s), Ok(m));
        }
        assert!(SslMode::parse("allow")
            .expect_err("allow")
            .contains("clear"));
        assert!(SslMode::parse("verify").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate\n").expect("write");
        let e = client_config(SslMode::VerifyFull, Some(&bad)).expect_err("no CA");
        assert!(e.contains("no usable CA certificate"), "{e}");
        let e = client_config(SslMode::VerifyCa, Some(&dir.path().join("missing")))
            .expect_err("missing");
        assert!(e.contains("database_ca_file"), "{e}");
        client_config(SslMode::Require, None).expect("no CA needed");
    }
}
