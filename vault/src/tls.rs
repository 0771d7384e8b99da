//! TLS on both sides, with rustls' ring provider (no cmake, no system OpenSSL). Nothing here installs
//! a process-wide default provider: each config names its own, so the crate cannot collide with
//! another rustls user in the same binary.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{ClientError, VaultError};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a CA file: PEM (one or more), or a single DER certificate.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |detail: String| ClientError::CaFile { path: path.to_path_buf(), detail };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let pem: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = pem.map_err(|e| fail(format!("not a PEM certificate file: {e}")))?;
    if !certs.is_empty() {
        return Ok(certs);
    }
    // No PEM block: a DER certificate starts with a SEQUENCE tag.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    Err(fail("it holds no certificate (expected PEM or DER)".into()))
}

/// The client's TLS: the system's roots plus those of `ca_file`. With neither (no CA bundle on the
/// system and no file), every HTTPS handshake fails with a message saying so, while plain HTTP works.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let extra = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> =
        match rustls_platform_verifier::Verifier::new_with_extra_roots(extra.clone(), provider.clone()) {
            Ok(verifier) => Arc::new(verifier),
            Err(e) if extra.is_empty() => {
                Arc::new(NoTrustedRoots { detail: e.to_string(), provider: provider.clone() })
            }
            Err(e) => return Err(ClientError::Tls(format!("the CA certificates cannot be used: {e}"))),
        };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The service speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The service's TLS from PEM files: the certificate chain and its private key.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, VaultError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| VaultError::Tls { what: "certificate", path: cert.to_path_buf(), detail: e.to_string() })?
        .collect();
    let certs =
        certs.map_err(|e| VaultError::Tls { what: "certificate", path: cert.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(VaultError::Tls {
            what: "certificate",
            path: cert.to_path_buf(),
            detail: "it holds no PEM certificate".into(),
        });
    }
    // The key's own parse error can quote key bytes in some versions: say only that it failed.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| VaultError::Tls {
        what: "private key",
        path: key.to_path_buf(),
        detail: "it cannot be read as a PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Tls { what: "setup", path: cert.to_path_buf(), detail: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| VaultError::Tls {
            what: "certificate and key",
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The hint every certificate failure ends with.
const CA_FILE_HINT: &str = "to trust a private CA, pass its certificate (PEM or DER) with --ca-file";

/// One line for a failed TLS connection, when the failure (anywhere in `error`'s chain) is one of
/// rustls': what is wrong with the vault's certificate (or the handshake), and that `--ca-file` is
/// how a private CA is trusted. `None` when TLS is not what failed.
pub(crate) fn describe_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    find_rustls_error(error).map(describe_rustls_error)
}

fn find_rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An io::Error's source() skips the error it wraps (often another io::Error wrapping
        // rustls'), so step into it instead.
        current = match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

fn describe_rustls_error(error: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let certificate = |what: String| format!("the vault's TLS certificate {what}; {CA_FILE_HINT}");
    match error {
        E::InvalidCertificate(problem) => certificate(match problem {
            C::UnknownIssuer => "was issued by an authority this machine does not trust".into(),
            C::Expired => "has expired".into(),
            C::ExpiredContext { not_after, .. } => format!("expired at {}", unix_time(*not_after)),
            C::NotValidYet => "is not valid yet (check this machine's clock)".into(),
            C::NotValidYetContext { not_before, .. } => {
                format!("is not valid before {} (check this machine's clock)", unix_time(*not_before))
            }
            C::NotValidForName => "is for another host name than the endpoint's".into(),
            C::NotValidForNameContext { expected, presented } => format!(
                "is for {} and not for {} (the endpoint's host name)",
                if presented.is_empty() {
                    "no host name".to_string()
                } else {
                    presented.iter().map(|name| presented_name(name)).collect::<Vec<_>>().join(", ")
                },
                expected.to_str()
            ),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "is not issued for a TLS server (its extended key usage)".into()
            }
            C::BadSignature => "carries a signature that does not verify".into(),
            C::BadEncoding => "cannot be read (malformed)".into(),
            C::Revoked => "was revoked".into(),
            C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "is signed with an algorithm this agent does not accept".into()
            }
            C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => {
                    "is a CA certificate used as the server's own: the vault must present a certificate issued by \
                     that CA for its host name"
                        .into()
                }
                Some(webpki::Error::EndEntityUsedAsCa) => {
                    "chain uses a server certificate as an issuing authority".into()
                }
                Some(webpki::Error::NameConstraintViolation) => {
                    "is for a name its issuing authority may not certify".into()
                }
                Some(webpki::Error::MaximumPathDepthExceeded | webpki::Error::PathLenConstraintViolated) => {
                    "chain is longer than its authorities allow".into()
                }
                Some(other) => format!("is not acceptable ({other:?})"),
                None => format!("is not acceptable ({other})"),
            },
            other => format!("is not acceptable ({other:?})"),
        }),
        E::NoCertificatesPresented => certificate("is missing: the vault presented none".into()),
        // Our own verifier's text when there are no roots at all: it says what to do already.
        E::General(text) => format!("TLS failed: {text}"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the endpoint does not speak TLS (an http:// service?): check the endpoint's scheme and port".into()
        }
        E::AlertReceived(alert) => format!("the vault refused the TLS handshake ({alert:?})"),
        E::PeerIncompatible(why) => {
            format!("the vault and this agent share no TLS version or cipher suite ({why:?})")
        }
        other => format!("TLS failed: {other}"),
    }
}

/// A name a certificate presents, as rustls shows it (`DnsName("host")`, `IpAddress(...)`): the
/// name alone.
fn presented_name(shown: &str) -> &str {
    let inner = match (shown.find('('), shown.rfind(')')) {
        (Some(open), Some(close)) if open < close => &shown[open + 1..close],
        _ => shown,
    };
    inner.trim_matches('"')
}

fn unix_time(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{} (Unix seconds)", time.as_secs()))
}

/// Refuses every server certificate, saying why: the system has no CA bundle and no CA file was given.
#[derive(Debug)]
struct NoTrustedRoots {
    detail: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoTrustedRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(format!(
            "no trusted CA certificates ({}); install the system CA bundle or pass --ca-file",
            self.detail
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
