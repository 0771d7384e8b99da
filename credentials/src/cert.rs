//! Reading the X.509 certificate: the facts the engine records, and the public key for verification.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::key::PublicKey;
use crate::{CertificateFacts, CredentialsError};

pub(crate) struct Certificate<'a> {
    der: &'a [u8],
    x509: X509Certificate<'a>,
}

impl<'a> Certificate<'a> {
    /// Parses one DER certificate; trailing bytes are refused so the thumbprint covers exactly the certificate.
    pub(crate) fn parse(der: &'a [u8]) -> Result<Self, CredentialsError> {
        let (rest, x509) =
            X509Certificate::from_der(der).map_err(|e| CredentialsError::BadCertificate { detail: e.to_string() })?;
        if !rest.is_empty() {
            return Err(CredentialsError::BadCertificate { detail: "trailing bytes after the certificate".into() });
        }
        Ok(Self { der, x509 })
    }

    /// The facts, all read from the certificate itself (validity is never assumed).
    pub(crate) fn facts(&self) -> Result<CertificateFacts, CredentialsError> {
        let validity = self.x509.validity();
        let time = |t: &x509_parser::time::ASN1Time, which: &str| {
            chrono::DateTime::from_timestamp(t.timestamp(), 0)
                .ok_or_else(|| CredentialsError::BadCertificate { detail: format!("its {which} is out of range") })
        };
        Ok(CertificateFacts {
            thumbprint: thumbprint(self.der),
            not_before: time(&validity.not_before, "NotBefore")?,
            not_after: time(&validity.not_after, "NotAfter")?,
            subject: self.x509.subject().to_string(),
            serial: serial_hex(self.x509.raw_serial()),
        })
    }

    pub(crate) fn public_key(&self) -> Result<PublicKey, CredentialsError> {
        PublicKey::from_spki_der(self.x509.public_key().raw)
    }
}

/// Lowercase hex SHA-256 of the DER certificate: the identity of one download.
pub(crate) fn thumbprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Lowercase hex of the serial's bytes without leading zero bytes, i.e. what `openssl x509 -serial` prints, lowercased.
fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(raw.get(first..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::serial_hex;

    #[test]
    fn serial_drops_leading_zero_bytes_only() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x0a, 0x00]), "0a00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }
}
