//! The certificate's private key, and the signatures that prove possession of it at registration.
//!
//! Signature formats: RSA keys sign with RSASSA-PKCS1-v1_5 over SHA-256; P-256 keys sign with ECDSA over
//! SHA-256, the signature ASN.1 DER encoded (as in X.509 and CMS).

use std::fmt;

use p256::pkcs8::der::asn1::ObjectIdentifier;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, PrivateKeyInfoRef};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CredentialsError;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// The key types a credentials file may carry: the real portal issues RSA, this project issues P-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAlgorithm {
    Rsa,
    EcdsaP256,
}

/// The certificate's private key, PKCS#8 DER, wiped from memory on drop.
///
/// Debug prints `PrivateKey(<redacted>)`. There is deliberately no Serialize: the engine seals the key
/// (see [`PrivateKey::pkcs8_der`]) and records only its digest.
#[derive(Clone)]
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// Accepts an RSA or P-256 key in PKCS#8 DER; used by the parser and to restore a sealed key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CredentialsError> {
        let info = PrivateKeyInfoRef::try_from(der).map_err(|_| CredentialsError::BadPrivateKey)?;
        let oid = info.algorithm.oid;
        let algorithm = if oid == RSA_ENCRYPTION {
            rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| CredentialsError::BadPrivateKey)?;
            KeyAlgorithm::Rsa
        } else if oid == EC_PUBLIC_KEY {
            match info.algorithm.parameters_oid() {
                Ok(curve) if curve == SECP256R1 => {}
                Ok(curve) => {
                    return Err(CredentialsError::UnsupportedKey { algorithm: format!("EC on curve {curve}") });
                }
                Err(_) => return Err(CredentialsError::BadPrivateKey),
            }
            p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| CredentialsError::BadPrivateKey)?;
            KeyAlgorithm::EcdsaP256
        } else {
            return Err(CredentialsError::UnsupportedKey { algorithm: oid.to_string() });
        };
        Ok(Self { pkcs8: Zeroizing::new(der.to_vec()), algorithm })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The PKCS#8 DER, for sealing beside the log. Handle as a secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Signs `message` (SHA-256; see the module docs for the encoding) to prove possession at registration.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CredentialsError> {
        match self.algorithm {
            KeyAlgorithm::Rsa => {
                let key = rsa::PrivateKey::from_pkcs8_der(&self.pkcs8).map_err(|_| CredentialsError::BadPrivateKey)?;
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
                let signature = signer.try_sign(message).map_err(|_| CredentialsError::SigningFailed)?;
                Ok(signature.to_vec())
            }
            KeyAlgorithm::EcdsaP256 => {
                let key = p256::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|_| CredentialsError::BadPrivateKey)?;
                let signature: p256::ecdsa::DerSignature =
                    key.try_sign(message).map_err(|_| CredentialsError::SigningFailed)?;
                Ok(signature.as_bytes().to_vec())
            }
        }
    }

    /// Whether this key is the private half of `public`; a bundle whose key and certificate disagree
    /// would only fail later, at registration.
    pub(crate) fn matches(&self, public: &PublicKey) -> Result<bool, CredentialsError> {
        Ok(match (self.algorithm, public) {
            (KeyAlgorithm::Rsa, PublicKey::Rsa(public)) => {
                let key = rsa::PrivateKey::from_pkcs8_der(&self.pkcs8).map_err(|_| CredentialsError::BadPrivateKey)?;
                key.to_public_key() == *public
            }
            (KeyAlgorithm::EcdsaP256, PublicKey::P256(public)) => {
                let key = p256::ecdsa::SigningKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|_| CredentialsError::BadPrivateKey)?;
                key.verifying_key() == public
            }
            _ => false,
        })
    }
}

/// A certificate's public key, decoded from its SubjectPublicKeyInfo.
pub(crate) enum PublicKey {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Decodes an X.509 SubjectPublicKeyInfo (DER); the error names the algorithm when it is not supported.
    pub(crate) fn from_spki_der(spki: &[u8]) -> Result<Self, CredentialsError> {
        let bad =
            |what: &str| CredentialsError::BadCertificate { detail: format!("its {what} public key does not parse") };
        let info = p256::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(spki).map_err(|_| bad("subject"))?;
        let oid = info.algorithm.oid;
        if oid == RSA_ENCRYPTION {
            rsa::PublicKey::from_public_key_der(spki).map(Self::Rsa).map_err(|_| bad("RSA"))
        } else if oid == EC_PUBLIC_KEY {
            match info.algorithm.parameters_oid() {
                Ok(curve) if curve == SECP256R1 => {}
                Ok(curve) => {
                    return Err(CredentialsError::UnsupportedKey { algorithm: format!("EC on curve {curve}") });
                }
                Err(_) => return Err(bad("EC")),
            }
            p256::ecdsa::VerifyingKey::from_public_key_der(spki).map(Self::P256).map_err(|_| bad("EC"))
        } else {
            Err(CredentialsError::UnsupportedKey { algorithm: oid.to_string() })
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CredentialsError> {
        match self {
            Self::Rsa(public) => {
                let signature =
                    rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| CredentialsError::BadSignature)?;
                rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public.clone())
                    .verify(message, &signature)
                    .map_err(|_| CredentialsError::BadSignature)
            }
            Self::P256(public) => {
                let signature =
                    p256::ecdsa::Signature::from_der(signature).map_err(|_| CredentialsError::BadSignature)?;
                public.verify(message, &signature).map_err(|_| CredentialsError::BadSignature)
            }
        }
    }
}

/// Checks a proof-of-possession signature against the certificate's public key (the vault side of
/// registration, and tests). Validity dates are not checked here: the caller has the clock.
pub fn verify_signature(certificate_der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), CredentialsError> {
    let certificate = crate::cert::Certificate::parse(certificate_der)?;
    certificate.public_key()?.verify(message, signature)
}
