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
