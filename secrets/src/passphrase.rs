//! The encryption passphrase: an Argon2id verifier, generation, facts for the engine's rules, and
//! saving a generated one for the operator.

use std::fmt;
use std::path::Path;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::SecretsError;
use crate::fsutil;

/// Argon2id memory cost in KiB (19 MiB), the OWASP minimum.
pub const ARGON2_M_KIB: u32 = 19_456;
/// Argon2id passes.
pub const ARGON2_T: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Argon2id output length in bytes.
pub const ARGON2_OUTPUT_LEN: usize = 32;
/// Length of a generated passphrase, in characters.
pub const GENERATED_LEN: usize = 32;

/// An Argon2id verifier of a passphrase as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
///
/// Serializes as the bare PHC string. Parsing (and deserializing) refuses anything but Argon2id
/// v1.3 with at least the costs above, so an edited log cannot downgrade the verifier.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PassphraseVerifier {
    phc: String,
}

impl fmt::Debug for PassphraseVerifier {
    /// The parameters only: salt and hash stay out of debug output and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PassphraseVerifier(argon2id, {})", self.params_part())
    }
}

impl PassphraseVerifier {
    /// Hashes `passphrase` with Argon2id (m = 19456 KiB, t = 2, p = 1, 32-byte output) under
    /// `salt`, which the caller draws from its randomness.
    pub fn create(passphrase: &SecretString, salt: &[u8; 16]) -> Result<PassphraseVerifier, SecretsError> {
        let hash = argon2()?
            .hash_password_with_salt(passphrase.expose_secret().as_bytes(), salt)
            .map_err(|_| SecretsError::Crypto { what: "Argon2id hashing" })?;
        Ok(PassphraseVerifier { phc: hash.to_string() })
    }

    /// Parses a stored PHC string, refusing anything weaker than what [`PassphraseVerifier::create`]
    /// makes.
    pub fn from_phc(phc: &str) -> Result<PassphraseVerifier, SecretsError> {
        let bad = |detail: &str| SecretsError::BadVerifier { detail: detail.to_string() };
        let hash = PasswordHash::new(phc).map_err(|e| bad(&format!("not a PHC string: {e}")))?;
        if hash.algorithm.as_str() != "argon2id" {
            return Err(bad("not Argon2id"));
        }
        if hash.version != Some(Version::V0x13 as u32) {
            return Err(bad("not Argon2 version 1.3"));
        }
        let params = Params::try_from(&hash).map_err(|e| bad(&format!("bad parameters: {e}")))?;
        if params.m_cost() < ARGON2_M_KIB || params.t_cost() < ARGON2_T || params.p_cost() < ARGON2_P {
            return Err(bad("costs below m=19456,t=2,p=1"));
        }
        match (&hash.salt, &hash.hash) {
            (Some(salt), Some(out)) if salt.len() >= 16 && out.len() >= ARGON2_OUTPUT_LEN => {}
            _ => return Err(bad("salt or hash missing or too short")),
        }
        Ok(PassphraseVerifier { phc: phc.to_string() })
    }

    /// The PHC string, as it goes into an event.
    pub fn phc(&self) -> &str {
        &self.phc
    }

    /// Whether `candidate` is the passphrase this verifier was made from (constant-time compare of
    /// the Argon2id outputs).
    pub fn verify(&self, candidate: &SecretString) -> bool {
        let Ok(hash) = PasswordHash::new(&self.phc) else { return false };
        Argon2::default().verify_password(candidate.expose_secret().as_bytes(), &hash).is_ok()
    }

    fn params_part(&self) -> &str {
        // `$argon2id$v=19$m=...,t=...,p=...$salt$hash`: the fourth field.
        self.phc.split('$').nth(3).unwrap_or("?")
    }
}

impl TryFrom<String> for PassphraseVerifier {
    type Error = SecretsError;

    fn try_from(phc: String) -> Result<Self, Self::Error> {
        PassphraseVerifier::from_phc(&phc)
    }
}

impl From<PassphraseVerifier> for String {
    fn from(v: PassphraseVerifier) -> String {
        v.phc
    }
}

fn argon2() -> Result<Argon2<'static>, SecretsError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(ARGON2_OUTPUT_LEN))
        .map_err(|_| SecretsError::Crypto { what: "Argon2id parameters" })?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The printable non-space ASCII characters a generated passphrase is made of (`!` to `~`).
const ALPHABET_FIRST: u8 = 33;
const ALPHABET_LEN: u8 = 94;
/// Bytes below this map to a character; the rest are dropped. 188 = 2 × 94, the largest multiple
/// of 94 not above 256, so each character has exactly two bytes: uniform, no modulo bias.
const ACCEPT_BELOW: u8 = 2 * ALPHABET_LEN;
/// Random bytes asked for at a time.
const BATCH: usize = 64;
/// With a working source, a batch of 64 bytes yields no character with probability (68/256)^64,
/// about 1e-37; this many rounds without enough characters means the source is broken.
const MAX_ROUNDS: usize = 64;

fn char_of(byte: u8) -> Option<char> {
    (byte < ACCEPT_BELOW).then(|| char::from(ALPHABET_FIRST + byte % ALPHABET_LEN))
}

/// Generates a passphrase of [`GENERATED_LEN`] characters drawn uniformly from the 94 printable
/// non-space ASCII characters (`!`..=`~`, about 6.55 bits each, 209 bits in all) by rejection
/// sampling of the bytes `rng_bytes` writes (feed it the OS CSPRNG).
///
/// The buffer is zeroed before each call of `rng_bytes`, so a source that fails without writing
/// yields a (useless) passphrase quickly rather than hanging; the caller must notice its own
/// failure. A source that never yields usable bytes (always >= 188) is given up on after 64
/// rounds and the remaining characters are taken modulo 94, so this always returns.
pub fn generate_passphrase(mut rng_bytes: impl FnMut(&mut [u8])) -> SecretString {
    // Exact capacity: the string is never reallocated, so no unwiped copy is left behind, and
    // `SecretString::from` takes the allocation as it is.
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut buf = Zeroizing::new([0u8; BATCH]);
    let mut rounds = 0;
    while out.len() < GENERATED_LEN {
        buf.fill(0);
        rng_bytes(&mut buf[..]);
        rounds += 1;
        for &b in buf.iter() {
            if out.len() == GENERATED_LEN {
                break;
            }
            let c = if rounds > MAX_ROUNDS { Some(char::from(ALPHABET_FIRST + b % ALPHABET_LEN)) } else { char_of(b) };
            if let Some(c) = c {
                out.push(c);
            }
        }
    }
    SecretString::from(out)
}

/// Facts about a passphrase, never the passphrase: what the engine records and decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseFacts {
    /// Length in characters (Unicode scalar values).
    pub length: usize,
    /// Every byte is printable ASCII, space included (32..=126).
    pub printable_ascii: bool,
}

/// Measures passphrases; the engine applies the rules (e.g. at least 16 characters).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassphraseRules;

impl PassphraseRules {
    /// The facts about `passphrase`.
    pub fn check(passphrase: &SecretString) -> PassphraseFacts {
        let s = passphrase.expose_secret();
        PassphraseFacts { length: s.chars().count(), printable_ascii: s.bytes().all(|b| (32..=126).contains(&b)) }
    }
}

/// Writes `secret` and a newline to a new file at `path` for the operator to keep: the parent
/// folder must exist ([`SecretsError::DirMissing`]), an existing file (or link) is never
/// overwritten ([`SecretsError::AlreadyExists`]), the file gets mode 0600 and is fsynced, as is
/// its folder. A file left half-written by a failed write is removed.
pub fn write_new_secret_file(path: &Path, secret: &SecretString) -> Result<(), SecretsError> {
    fsutil::write_new_private_file(path, &[secret.expose_secret().as_bytes(), b"\n"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_has_exactly_two_bytes() {
        let mut counts = [0u32; 256];
        for b in 0..=255u8 {
            if let Some(c) = char_of(b) {
                counts[c as usize] += 1;
            }
        }
        for (c, &n) in counts.iter().enumerate() {
            let expected = if (33..=126).contains(&c) { 2 } else { 0 };
            assert_eq!(n, expected, "character {c}");
        }
    }
}
