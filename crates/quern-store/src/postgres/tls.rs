//! TLS to PostgreSQL, as the database URL asks with libpq's parameters:
//! `sslmode=require` (encrypted; the certificate is not checked),
//! `verify-ca` (signed by a CA trusted: the PEM file `sslrootcert`, else the
//! system's roots), `verify-full` (and issued for the host connected to).
//! Without `sslmode`, or with `disable`, connections are plain, as before;
//! `prefer` tries TLS without checking the certificate.
//!
//! Invariant: a connection that asked for `verify-ca` or `verify-full` is
//! never made to a server whose certificate fails that check.

use crate::{Result, StoreError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL asks of the connection's security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The URL without the TLS parameters tokio-postgres does not read, the
/// mode to give it, and the connector that does what the URL asked.
pub(super) fn connector(url: &str) -> Result<(String, SslMode, MakeRustlsConnect)> {
    let bad = |message: String| StoreError::Backend(format!("database URL: {message}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root) = (Mode::Plain, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => Mode::Plain,
                    "prefer" | "allow" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(bad(format!(
                            "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => root = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let chain: Option<Arc<dyn ServerCertVerifier>> = match (mode, &root) {
        (Mode::Plain | Mode::Prefer | Mode::Require, _) => None,
        (_, Some(path)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("sslrootcert={path}: {e}")))? {
                roots
                    .add(cert.map_err(|e| bad(format!("sslrootcert={path}: {e}")))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| bad(format!("sslrootcert={path}: {e}")))?;
            Some(verifier)
        }
        (_, None) => Some(Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| bad(format!("the system's CA roots: {e}")))?,
        )),
    };
    let verifier =
        Checked { chain, names: mode == Mode::VerifyFull, algorithms: provider.signature_verification_algorithms };
    let config = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth();
    let ssl_mode = match mode {
        Mode::Plain => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    };
    Ok((url, ssl_mode, MakeRustlsConnect::new(config)))
}

/// `%2F` and friends in a URL's parameter (a file path).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is checked of the server's certificate: nothing without `chain`
/// (`require`, as libpq does without a root file), the chain (`verify-ca`),
/// or the chain and the name (`verify-full`). The handshake's signatures are
/// checked always.
#[derive(Debug)]
struct Checked {
    chain: Option<Arc<dyn ServerCertVerifier>>,
    names: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_become_a_mode() {
        let missing = connector("postgres://u@h/db?sslmode=verify-ca&sslrootcert=%2Fno%2Fsuch%2Fca.pem").err();
        assert!(missing.is_some_and(|e| e.to_string().contains("sslrootcert=/no/such/ca.pem")));
        let (url, mode, _) = connector("postgres://u@h/db?application_name=x&sslmode=require").expect("a URL");
        assert_eq!((url.as_str(), mode), ("postgres://u@h/db?application_name=x", SslMode::Require));
        let (url, mode, _) = connector("postgres://u@h/db").expect("a URL");
        assert_eq!((url.as_str(), mode), ("postgres://u@h/db", SslMode::Disable), "plain unless asked");
        assert!(connector("postgres://u@h/db?sslmode=sometimes").is_err());
        assert_eq!(percent_decode("%2Fetc%2Fssl%2Fca.pem"), "/etc/ssl/ca.pem");
    }
}
