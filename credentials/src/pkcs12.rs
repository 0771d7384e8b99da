//! Opening the PKCS#12 bundle in `ManagementCert` with "no password".
//!
//! PKCS#12 has two encodings of an empty password and they derive different keys (RFC 7292 B.1 vs B.2):
//! OpenSSL and most tools write two zero bytes (a terminated empty BMPString); .NET's `Export(Pfx)` with a
//! null password, which is how the portal writes these files, uses zero bytes. p12-keystore reads only the
//! first, so this reader tries both, as OpenSSL's `PKCS12_parse` does: the MAC, when present, says which.
//!
//! It reads only what a credentials file needs (certificates and private keys) and bounds the key-derivation
//! work a hostile bundle can demand, since iteration counts come from the file.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use der::asn1::{ContextSpecific, OctetString};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use hmac::{KeyInit, Mac};
use pkcs12::cms::encrypted_data::EncryptedData;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::{AuthenticatedSafe, CertBag, MacData, Pfx, safe_bag::SafeContents};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::CredentialsError;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Real bundles use about 2,000 iterations per derivation; the bounds leave room for stronger writers
/// (p12-keystore allows 1,000,000 per step) while capping the total a file can ask for.
const MAX_ITERATIONS: u64 = 1_000_000;
const MAX_TOTAL_ITERATIONS: u64 = 4_000_000;
/// A credentials bundle holds one certificate and one key; chains add a few more bags.
const MAX_BAGS: usize = 64;

/// The certificates (DER) and private keys (PKCS#8 DER) found in a bundle, in bundle order.
pub(crate) struct Contents {
    pub(crate) certificates: Vec<Vec<u8>>,
    pub(crate) keys: Vec<Zeroizing<Vec<u8>>>,
}

/// The two readings of "no password". PBES2 (PBKDF2) derives from the UTF-8 bytes, empty in both cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Password {
    /// RFC 7292 B.1: the empty BMPString with its terminator (OpenSSL `-passout pass:`, p12-keystore).
    Terminated,
    /// RFC 7292 B.2: no bytes at all (.NET and Windows with a null password).
    Absent,
}

impl Password {
    fn pkcs12_bytes(self) -> &'static [u8] {
        match self {
            Self::Terminated => &[0, 0],
            Self::Absent => &[],
        }
    }
}

fn bad(detail: impl Into<String>) -> CredentialsError {
    CredentialsError::BadPkcs12 { detail: detail.into() }
}

fn der_error(e: der::Error) -> CredentialsError {
    bad(e.to_string())
}

/// Caps the key-derivation iterations one bundle may cost, across every attempt.
struct Budget(u64);

impl Budget {
    fn charge(&mut self, iterations: i64) -> Result<(), CredentialsError> {
        let iterations = u64::try_from(iterations.max(1)).unwrap_or(u64::MAX);
        if iterations > MAX_ITERATIONS || iterations > self.0 {
            return Err(bad("it asks for more key-derivation iterations than a credentials file needs"));
        }
        self.0 -= iterations;
        Ok(())
    }
}

/// Opens a bundle protected by an empty password, in either encoding.
pub(crate) fn open(der: &[u8]) -> Result<Contents, CredentialsError> {
    let pfx = Pfx::from_der(der).map_err(der_error)?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(bad("its contents are not plain data (public-key protected bundles are not supported)"));
    }
    let auth_safe = OctetString::from_der(&pfx.auth_safe.content.to_der().map_err(der_error)?).map_err(der_error)?;
    let mut budget = Budget(MAX_TOTAL_ITERATIONS);
    let candidates = match &pfx.mac_data {
        Some(mac) => vec![mac_password(mac, auth_safe.as_bytes(), &mut budget)?],
        // Without a MAC only decryption can tell: try the common encoding first.
        None => vec![Password::Terminated, Password::Absent],
    };
    let mut first_error = None;
    for password in candidates {
        match read_safes(auth_safe.as_bytes(), password, &mut budget) {
            Ok(contents) => return Ok(contents),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| bad("it could not be read")))
}

macro_rules! mac_matches {
    ($digest:ty, $password:expr, $mac:expr, $data:expr) => {{
        let key = Zeroizing::new(derive_key::<$digest>(
            $password.pkcs12_bytes(),
            $mac.mac_salt.as_bytes(),
            Pkcs12KeyType::Mac,
            $mac.iterations,
            <$digest as Digest>::output_size(),
        ));
        match <hmac::Hmac<$digest> as KeyInit>::new_from_slice(&key) {
            Ok(mut hmac) => {
                hmac.update($data);
                hmac.verify_slice($mac.mac.digest.as_bytes()).is_ok()
            }
            Err(_) => false,
        }
    }};
}

/// The password encoding under which the MAC verifies.
fn mac_password(mac: &MacData, data: &[u8], budget: &mut Budget) -> Result<Password, CredentialsError> {
    let digest = mac.mac.algorithm.oid;
    if ![SHA1, SHA256, SHA384, SHA512].contains(&digest) {
        return Err(bad(format!("its MAC uses an unsupported digest ({digest})")));
    }
    for password in [Password::Terminated, Password::Absent] {
        budget.charge(i64::from(mac.iterations))?;
        let matches = match digest {
            SHA1 => mac_matches!(sha1::Sha1, password, mac, data),
            SHA256 => mac_matches!(sha2::Sha256, password, mac, data),
            SHA384 => mac_matches!(sha2::Sha384, password, mac, data),
            _ => mac_matches!(sha2::Sha512, password, mac, data),
        };
        if matches {
            return Ok(password);
        }
    }
    Err(bad("its integrity check fails with an empty password (a password-protected or corrupted bundle)"))
}

fn read_safes(auth_safe: &[u8], password: Password, budget: &mut Budget) -> Result<Contents, CredentialsError> {
    let mut contents = Contents { certificates: Vec::new(), keys: Vec::new() };
    let mut bags_seen = 0usize;
    for safe in AuthenticatedSafe::from_der(auth_safe).map_err(der_error)? {
        let content = safe.content.to_der().map_err(der_error)?;
        let plain = if safe.content_type == ID_DATA {
            Zeroizing::new(Vec::from(OctetString::from_der(&content).map_err(der_error)?.into_bytes()))
        } else if safe.content_type == ID_ENCRYPTED_DATA {
            let encrypted = EncryptedData::from_der(&content).map_err(der_error)?;
            let info = encrypted.enc_content_info;
            let Some(ciphertext) = info.encrypted_content else { continue };
            decrypt(&info.content_enc_alg, ciphertext.as_bytes(), password, budget)?
        } else {
            return Err(bad(format!("it holds an unsupported content type ({})", safe.content_type)));
        };
        for bag in SafeContents::from_der(&plain).map_err(der_error)? {
            bags_seen += 1;
            if bags_seen > MAX_BAGS {
                return Err(bad("it holds more bags than a credentials file needs"));
            }
            match bag.bag_id {
                pkcs12::PKCS_12_CERT_BAG_OID => {
                    let cert = ContextSpecific::<CertBag>::from_der(&bag.bag_value).map_err(der_error)?.value;
                    if cert.cert_id == X509_CERTIFICATE {
                        contents.certificates.push(cert.cert_value.as_bytes().to_vec());
                    }
                }
                pkcs12::PKCS_12_KEY_BAG_OID => {
                    let key = ContextSpecific::<Any>::from_der(&bag.bag_value).map_err(der_error)?.value;
                    contents.keys.push(Zeroizing::new(key.to_der().map_err(der_error)?));
                }
                pkcs12::PKCS_12_PKCS8_KEY_BAG_OID => {
                    let shrouded =
                        ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value).map_err(der_error)?.value;
                    let key =
                        decrypt(&shrouded.encryption_algorithm, shrouded.encrypted_data.as_bytes(), password, budget)?;
                    contents.keys.push(key);
                }
                _ => {} // CRLs, secrets, nested safes: nothing a credentials file uses
            }
        }
    }
    Ok(contents)
}

fn decrypt(
    algorithm: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: Password,
    budget: &mut Budget,
) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
    let parameters = algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| bad("its encryption has no parameters"))?
        .to_der()
        .map_err(der_error)?;
    let failed = || bad("it does not decrypt with an empty password (a password-protected or corrupted bundle)");
    let oid = algorithm.oid;
    if oid == PBES2 {
        let parameters = pkcs5::pbes2::Parameters::from_der(&parameters).map_err(der_error)?;
        match &parameters.kdf {
            pkcs5::pbes2::Kdf::Pbkdf2(pbkdf2) => budget.charge(i64::from(pbkdf2.iteration_count))?,
            _ => return Err(bad("its encryption uses an unsupported key derivation (only PBKDF2 is read)")),
        }
        return parameters.decrypt(b"", ciphertext).map(Zeroizing::new).map_err(|_| failed());
    }
    let (key_len, cipher) = match oid {
        pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => (24, Pbe1Cipher::TripleDes),
        pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC => (16, Pbe1Cipher::Rc2),
        pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC => (5, Pbe1Cipher::Rc2),
        _ => return Err(bad(format!("it uses an unsupported encryption algorithm ({oid})"))),
    };
    let parameters = Pkcs12PbeParams::from_der(&parameters).map_err(der_error)?;
    let salt = parameters.salt.as_bytes();
    // Key and IV are two derivations.
    budget.charge(i64::from(parameters.iterations))?;
    budget.charge(i64::from(parameters.iterations))?;
    let pass = password.pkcs12_bytes();
    let key = Zeroizing::new(derive_key::<sha1::Sha1>(
        pass,
        salt,
        Pkcs12KeyType::EncryptionKey,
        parameters.iterations,
        key_len,
    ));
    let iv = derive_key::<sha1::Sha1>(pass, salt, Pkcs12KeyType::Iv, parameters.iterations, 8);
    let plain = match cipher {
        Pbe1Cipher::TripleDes => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| failed())?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        Pbe1Cipher::Rc2 => cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key, &iv)
            .map_err(|_| failed())?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
    };
    plain.map(Zeroizing::new).map_err(|_| failed())
}

/// The legacy PKCS#12 ciphers Windows and `openssl -legacy` still write.
enum Pbe1Cipher {
    TripleDes,
    Rc2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_single_and_cumulative_excess() {
        let mut budget = Budget(MAX_TOTAL_ITERATIONS);
        assert!(budget.charge(i64::try_from(MAX_ITERATIONS).unwrap() + 1).is_err());
        for _ in 0..MAX_TOTAL_ITERATIONS / MAX_ITERATIONS {
            budget.charge(i64::try_from(MAX_ITERATIONS).unwrap()).unwrap();
        }
        assert!(budget.charge(1).is_err());
        assert!(Budget(10).charge(-5).is_ok(), "non-positive counts cost one round");
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for input in [&b""[..], b"\x30\x00", b"\x30\x80\x00\x00", &[0xff; 64]] {
            assert!(matches!(open(input), Err(CredentialsError::BadPkcs12 { .. })));
        }
    }
}
