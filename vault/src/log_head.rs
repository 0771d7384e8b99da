//! The agent's side of log-head anchoring: report the head of its log to the vault, and read back
//! what the vault holds. Both are signed with the private key of the credentials the machine
//! registered with; both go through the agent's proxy and retry as registration does (every
//! attempt signed again with a fresh nonce and timestamp).
//!
//! Anchoring is not a wizard step: nothing here touches the agent's log (recording the report
//! would move the head it reports).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use regent_credentials::PrivateKey;
use regent_engine::Reason;
use regent_engine::ports::ProxyConfig;
use reqwest::blocking::Client;
use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

use crate::client::{Attempt, CallError, HttpVaultClient};
use crate::http;
use crate::protocol::{
    LOG_HEAD_BASE_REQUIRED, LOG_HEAD_CONFLICT, LOG_HEAD_NOT_FOUND, LOG_HEAD_REGRESSED, LogHead, LogHeadBase,
    LogHeadBody, SIGNATURE_HEADERS, log_head_message, log_head_read_message,
};

/// What speaks for a registered machine at its vault: where, which machine, and the key it
/// registered with. Debug does not print the key.
pub struct MachineSigner {
    /// The vault service's address (the registration's, unless overridden).
    pub endpoint: String,
    pub vault: String,
    pub machine_id: String,
    /// The thumbprint of the certificate the machine registered with.
    pub thumbprint: String,
    /// That certificate's private key (PKCS#8 DER), from the agent's secrets area.
    pub private_key: Zeroizing<Vec<u8>>,
    pub proxy: Option<ProxyConfig>,
}

impl fmt::Debug for MachineSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineSigner")
            .field("endpoint", &self.endpoint)
            .field("vault", &self.vault)
            .field("machine_id", &self.machine_id)
            .field("thumbprint", &self.thumbprint)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why a log-head call failed. [`LogHeadError::code`] is a stable code for scripts and messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogHeadError {
    /// The service refused: `log_head_regressed`, `log_head_conflict`, `machine_not_found`,
    /// `credentials_invalid`, `credentials_wrong_vault`, `nonce_replayed`, `clock_skew`, ...
    #[error("{message}")]
    Refused { code: String, message: String },
    /// The call did not get an answer from the service, or not a usable one: `vault_unreachable`,
    /// `proxy_auth_failed`, `vault_error`, `invalid_proxy`, `credentials_invalid` (an unusable key).
    #[error("{detail}")]
    Failed { reason: Reason, detail: String },
}

impl LogHeadError {
    pub fn code(&self) -> &str {
        match self {
            LogHeadError::Refused { code, .. } => code,
            LogHeadError::Failed { reason, .. } => reason.code(),
        }
    }

    /// A refusal that says the agent's log is not the one the vault saw (cut, or rewritten).
    pub fn is_tamper_evidence(&self) -> bool {
        matches!(self, LogHeadError::Refused { code, .. } if code == LOG_HEAD_REGRESSED || code == LOG_HEAD_CONFLICT)
    }
}

impl From<CallError> for LogHeadError {
    fn from(error: CallError) -> Self {
        match error.service {
            Some((code, message)) => LogHeadError::Refused { code, message },
            None => LogHeadError::Failed { reason: error.reason, detail: error.detail },
        }
    }
}

/// What one attempt signed: sent as the body's fields or as headers.
struct Signed {
    timestamp: i64,
    nonce: String,
    signature: String,
}

fn fresh_nonce() -> Result<String, LogHeadError> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|_| LogHeadError::Failed {
        reason: Reason::VaultError,
        detail: "the system random source failed".into(),
    })?;
    Ok(hex::encode(nonce))
}

fn signing_key(signer: &MachineSigner) -> Result<PrivateKey, LogHeadError> {
    PrivateKey::from_pkcs8_der(&signer.private_key).map_err(|e| LogHeadError::Failed {
        reason: Reason::CredentialsInvalid,
        detail: format!("the registration's private key cannot be used: {e}"),
    })
}

impl HttpVaultClient {
    /// Reports the head of the machine's log (`position`, `hash` as 64 lowercase hex digits) and
    /// returns the head the vault holds now.
    ///
    /// It reads the anchored head first: a head past it names it in `extends`, with the hash
    /// `hash_at` gives for that position (the hash the agent's log holds there), so that a log cut
    /// back and grown past the anchor again cannot take its place. A head behind the anchored one,
    /// or another record at its position, is refused (`log_head_regressed`, `log_head_conflict`)
    /// and recorded by the vault.
    pub fn report_log_head(
        &self,
        signer: &MachineSigner,
        position: u64,
        hash: &str,
        hash_at: &dyn Fn(u64) -> Option<String>,
    ) -> Result<LogHead, LogHeadError> {
        let hash = hash.to_ascii_lowercase();
        // A second round only if another report moved the anchor between the read and the report.
        let mut round = 0;
        loop {
            round += 1;
            let held = self.fetch_log_head(signer)?;
            if let Some(held) = &held
                && held.position == position
                && held.hash == hash
            {
                return Ok(held.clone());
            }
            let extends = held
                .filter(|held| held.position < position)
                .and_then(|held| hash_at(held.position).map(|hash| LogHeadBase { position: held.position, hash }));
            match self.post_log_head(signer, position, &hash, extends.as_ref()) {
                Err(LogHeadError::Refused { code, .. }) if code == LOG_HEAD_BASE_REQUIRED && round < 2 => continue,
                answer => return answer,
            }
        }
    }

    fn post_log_head(
        &self,
        signer: &MachineSigner,
        position: u64,
        hash: &str,
        extends: Option<&LogHeadBase>,
    ) -> Result<LogHead, LogHeadError> {
        let message = |timestamp: i64, nonce: &str| {
            let (vault, machine, thumbprint) = (&signer.vault, &signer.machine_id, &signer.thumbprint);
            log_head_message(vault, machine, thumbprint, position, hash, extends, timestamp, nonce)
        };
        let send = |client: &Client, url: &reqwest::Url, signed: Signed| {
            let body = LogHeadBody {
                thumbprint: signer.thumbprint.clone(),
                position,
                hash: hash.to_string(),
                extends: extends.cloned(),
                timestamp: signed.timestamp,
                nonce: signed.nonce,
                signature: signed.signature,
            };
            self.answer(client.post(url.clone()).json(&body).send(), signer.proxy.as_ref(), url)
        };
        self.signed_call(signer, "the log head", message, send)
    }

    /// The head the vault holds for the machine, or `None` if it never anchored one.
    pub fn fetch_log_head(&self, signer: &MachineSigner) -> Result<Option<LogHead>, LogHeadError> {
        let message = |timestamp: i64, nonce: &str| {
            log_head_read_message(&signer.vault, &signer.machine_id, &signer.thumbprint, timestamp, nonce)
        };
        let send = |client: &Client, url: &reqwest::Url, signed: Signed| {
            let mut request = client.get(url.clone());
            let values = [signer.thumbprint.clone(), signed.timestamp.to_string(), signed.nonce, signed.signature];
            for (name, value) in SIGNATURE_HEADERS.into_iter().zip(values) {
                match HeaderValue::from_str(&value) {
                    Ok(value) => request = request.header(name, value),
                    Err(_) => {
                        return Attempt::Fail(
                            Reason::CredentialsInvalid,
                            format!("the {name} header cannot carry {value:?}"),
                        );
                    }
                }
            }
            self.answer::<LogHead>(request.send(), signer.proxy.as_ref(), url)
        };
        match self.signed_call(signer, "the read", message, send) {
            Ok(head) => Ok(Some(head)),
            Err(LogHeadError::Refused { code, .. }) if code == LOG_HEAD_NOT_FOUND => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One call to the machine's log-head URL, retried as registration is: every attempt signs
    /// `message(timestamp, nonce)` afresh with the registration's key and `send`s it.
    fn signed_call<T>(
        &self,
        signer: &MachineSigner,
        what: &str,
        message: impl Fn(i64, &str) -> Vec<u8>,
        send: impl Fn(&Client, &reqwest::Url, Signed) -> Attempt<T>,
    ) -> Result<T, LogHeadError> {
        let key = signing_key(signer)?;
        let url = self.log_head_url(signer)?;
        let client = self
            .client_for(signer.proxy.as_ref())
            .map_err(|detail| LogHeadError::Failed { reason: Reason::InvalidProxy, detail })?;
        let answer = self.with_retries_detailed(|| {
            let nonce = match fresh_nonce() {
                Ok(nonce) => nonce,
                Err(e) => return Attempt::Fail(Reason::VaultError, e.to_string()),
            };
            let timestamp = Utc::now().timestamp();
            match key.sign(&message(timestamp, &nonce)) {
                Ok(signature) => {
                    send(&client, &url, Signed { timestamp, nonce, signature: STANDARD.encode(signature) })
                }
                Err(e) => Attempt::Fail(Reason::CredentialsInvalid, format!("signing {what} failed: {e}")),
            }
        });
        answer.map_err(LogHeadError::from)
    }

    fn log_head_url(&self, signer: &MachineSigner) -> Result<reqwest::Url, LogHeadError> {
        http::join_url(&signer.endpoint, &["v1", "vaults", &signer.vault, "machines", &signer.machine_id, "log-head"])
            .map_err(|e| LogHeadError::Failed {
                reason: Reason::VaultUnreachable,
                detail: format!("the vault endpoint {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_tamper_evidence() {
        let conflict = LogHeadError::Refused { code: LOG_HEAD_CONFLICT.into(), message: "m".into() };
        assert_eq!(conflict.code(), "log_head_conflict");
        assert!(conflict.is_tamper_evidence());
        let down = LogHeadError::Failed { reason: Reason::VaultUnreachable, detail: "d".into() };
        assert_eq!(down.code(), "vault_unreachable");
        assert!(!down.is_tamper_evidence());
    }

    #[test]
    fn the_key_does_not_show_in_debug() {
        let signer = MachineSigner {
            endpoint: "http://v".into(),
            vault: "v".into(),
            machine_id: "m".into(),
            thumbprint: "t".into(),
            private_key: Zeroizing::new(b"very-secret-key-bytes".to_vec()),
            proxy: None,
        };
        assert!(!format!("{signer:?}").contains("very-secret"));
    }
}
