//! The agent's side of log-head anchoring: report the head of its log to the vault, and read back
//! what the vault holds. Both are signed with the private key of the credentials the machine
//! registered with; both go through the agent's proxy and retry as registration does (every
//! attempt signed again with a fresh nonce and timestamp).
//!
//! A report carries the records the vault does not keep yet, which it walks from the last one it
//! keeps and keeps; an agent further ahead than one report carries them in steps.
//!
//! Anchoring is not a wizard step: nothing here writes to the agent's log (recording the report
//! would move the head it reports); it only reads the records a report carries.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use regent_credentials::PrivateKey;
use regent_engine::anchoring::{AnchorError, HeadKeeper, HeadSigner};
use regent_store::{EventStore, Head};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderValue;

use crate::client::{Attempt, CallError, HttpVaultClient, new_nonce};
use crate::http;
use crate::protocol::transparency::Hash;
use crate::protocol::{
    Anchor, ConsistencyProof, ErrorCode, HeadReport, MAX_PROOF_BYTES, MAX_PROOF_RECORDS, Reason, SIGNATURE_HEADERS,
    log_head_message, log_head_read_message,
};

// A report step holds at least one record, so a log of any length can be reported in steps.
const _: () = assert!(MAX_PROOF_BYTES >= regent_store::MAX_RECORD_BYTES);

impl From<CallError> for AnchorError {
    fn from(error: CallError) -> Self {
        match error.service {
            Some((code, message)) => AnchorError::Refused { code, message },
            None => AnchorError::Failed { reason: error.reason, detail: error.detail },
        }
    }
}

/// What one attempt signed: sent as the body's fields or as headers.
struct Signed {
    timestamp: i64,
    nonce: String,
    signature: String,
}

/// Caps a request's timeout at the time its call has left.
fn with_time_left(request: RequestBuilder, time_left: Option<Duration>) -> RequestBuilder {
    match time_left {
        Some(left) => request.timeout(left),
        None => request,
    }
}

fn signing_key(signer: &HeadSigner) -> Result<PrivateKey, AnchorError> {
    PrivateKey::from_pkcs8_der(&signer.private_key).map_err(|e| AnchorError::Failed {
        reason: Reason::CredentialsInvalid,
        detail: format!("the registration's private key cannot be used: {e}"),
    })
}

/// One step of a report: the head it reports and the stored records after the anchor up to it.
struct ReportStep {
    head: Head,
    records: Vec<String>,
}

fn log_unreadable(detail: String) -> AnchorError {
    AnchorError::LogUnreadable { detail }
}

/// The records of `log` after `anchored`, up to `head` and within one report's bounds
/// ([`MAX_PROOF_RECORDS`], [`MAX_PROOF_BYTES`]), exactly as the store holds them. The step's head is
/// `head` when they reach it, else the last record's (its stored hash: the vault computes it anyway).
fn next_step(log: &EventStore, anchored: u64, head: Head) -> Result<ReportStep, AnchorError> {
    let last = head.position.min(anchored.saturating_add(MAX_PROOF_RECORDS as u64));
    let mut records = Vec::new();
    let (mut bytes, mut full) = (0, false);
    for item in log.raw_records(anchored + 1) {
        let (position, stored) = item.map_err(|e| log_unreadable(format!("the log cannot be read: {e}")))?;
        let expected = anchored + 1 + records.len() as u64;
        if position != expected {
            return Err(log_unreadable(format!(
                "record {expected} is missing from the log; run `regent audit verify`"
            )));
        }
        // A step holds at least one record (a record is far smaller than a step's bytes).
        if !records.is_empty() && bytes + stored.len() > MAX_PROOF_BYTES {
            full = true;
            break;
        }
        bytes += stored.len();
        let line = String::from_utf8(stored.to_vec()).map_err(|_| {
            log_unreadable(format!("record {position} is not text: the log is damaged; run `regent audit verify`"))
        })?;
        records.push(line);
        if position == last {
            break;
        }
    }
    let end = anchored + records.len() as u64;
    if end == head.position {
        return Ok(ReportStep { head, records });
    }
    match records.last() {
        Some(line) if end == last || full => {
            let hash = regent_store::record::decode(line.as_bytes())
                .map_err(|e| log_unreadable(format!("record {end} cannot be read ({e}); run `regent audit verify`")))?
                .hash;
            Ok(ReportStep { head: Head { position: end, hash }, records })
        }
        _ => Err(log_unreadable(format!(
            "the log ends at record {end}, before its head {}; run `regent audit verify`",
            head.position
        ))),
    }
}

impl HttpVaultClient {
    /// Reports `head`, the head of the machine's log `log`, and returns the head the vault holds
    /// now. `deadline`, when given, bounds the whole report (the anchor read and every step): no
    /// call starts after it, and each gets only the time left.
    ///
    /// It reads the anchor first, which says up to where the vault keeps this log's records
    /// ([`Anchor::mirrored`]; nothing before the first report). The report carries the records
    /// after that, exactly as the log holds them, and the vault walks them itself and keeps them,
    /// so a log cut back and grown past the anchor again cannot take its place. Further than one
    /// report's bounds ahead, it reports in steps (each signed), each resuming where the last
    /// stopped; a deadline between steps ends it with [`AnchorError::Unfinished`], and the next
    /// report goes on. A head behind the anchored one, another record at its position, or records
    /// that do not lead from the last one kept are refused (`log_head_regressed`,
    /// `log_head_conflict`, `log_head_proof_invalid`) and recorded by the vault.
    pub fn report_log_head(
        &self,
        signer: &HeadSigner,
        log: &EventStore,
        head: Head,
        deadline: Option<Instant>,
        tree_size: Option<u64>,
    ) -> Result<Anchor, AnchorError> {
        let hash = head.hash.to_hex();
        let mut held = self.fetch_log_head_until(signer, deadline, None)?;
        // Asked again only if another report moved the anchor between the read and the report.
        let mut base_asked = 0;
        loop {
            // Where the vault's copy of this log ends (an older vault keeps none: it walks from its anchor).
            let mirrored = held.as_ref().map_or(0, |held| held.mirrored.unwrap_or(held.position));
            match &held {
                // Held already: read again for the proof of it (rarely: the head was reported before).
                Some(held) if held.position == head.position && held.hash == hash && mirrored >= head.position => {
                    let proved = self.fetch_log_head_until(signer, deadline, Some(tree_size))?;
                    return Ok(proved.unwrap_or_else(|| held.clone()));
                }
                // Behind the anchored head, or nothing to send: the bare head, which the vault
                // refuses as evidence (a regression, or another record at an anchored position).
                Some(held) if held.position > head.position || mirrored >= head.position => {
                    return self.post_log_head(signer, &ReportStep { head, records: Vec::new() }, deadline, tree_size);
                }
                _ => {}
            }
            if mirrored > 0 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(AnchorError::Unfinished { mirrored, position: head.position });
            }
            let step = next_step(log, mirrored, head)?;
            match self.post_log_head(signer, &step, deadline, tree_size) {
                Ok(answer) if step.head.position == head.position => return Ok(answer),
                // The next step goes on from what the vault keeps now: the step, unless it moved.
                Ok(answer) if answer.mirrored.unwrap_or(answer.position) > mirrored => held = Some(answer),
                Ok(answer) => {
                    return Err(AnchorError::Failed {
                        reason: Reason::VaultError,
                        detail: format!(
                            "the vault accepted records up to {} but keeps them up to {}; report again",
                            step.head.position,
                            answer.mirrored.unwrap_or(answer.position)
                        ),
                    });
                }
                Err(AnchorError::Refused { code: ErrorCode::LogHeadBaseRequired, .. }) if base_asked < 1 => {
                    base_asked += 1;
                    held = self.fetch_log_head_until(signer, deadline, None)?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn post_log_head(
        &self,
        signer: &HeadSigner,
        step: &ReportStep,
        deadline: Option<Instant>,
        tree_size: Option<u64>,
    ) -> Result<Anchor, AnchorError> {
        let (position, hash) = (step.head.position, step.head.hash.to_hex());
        let message = |timestamp: i64, nonce: &str| {
            let (vault, machine, thumbprint) = (&signer.vault, &signer.machine_id, &signer.thumbprint);
            log_head_message(vault, machine, thumbprint, position, &hash, &step.records, timestamp, nonce)
        };
        let send = |client: &Client, url: &reqwest::Url, signed: Signed, time_left: Option<Duration>| {
            let body = HeadReport {
                thumbprint: signer.thumbprint.clone(),
                position,
                hash: hash.clone(),
                records: step.records.clone(),
                timestamp: signed.timestamp,
                nonce: signed.nonce,
                signature: signed.signature,
                tree_size,
            };
            let request = with_time_left(client.post(url.clone()).json(&body), time_left);
            self.answer(request.send(), signer.proxy.as_ref(), url)
        };
        self.signed_call(signer, "the log head", deadline, message, send)
    }

    /// The key the vault names for its checkpoints (`GET /v1/health`), if it keeps a transparency
    /// log. One attempt, within the report's budget: only a first contact asks.
    pub fn checkpoint_key(&self, signer: &HeadSigner) -> Result<Option<String>, AnchorError> {
        let url = http::join_url(&signer.endpoint, &["v1", "health"]).map_err(|e| AnchorError::Failed {
            reason: Reason::VaultUnreachable,
            detail: format!("the vault endpoint {e}"),
        })?;
        let client = self
            .client_for(signer.proxy.as_ref())
            .map_err(|detail| AnchorError::Failed { reason: Reason::InvalidProxy, detail })?;
        let deadline = Instant::now() + Duration::from_secs(3);
        let answer = self.with_retries_until(Some(deadline), |time_left| {
            let request = with_time_left(client.get(url.clone()), time_left);
            self.answer::<crate::protocol::Health>(request.send(), signer.proxy.as_ref(), &url)
        });
        answer.map(|health| health.checkpoint_key).map_err(AnchorError::from)
    }

    /// The proof that the vault's transparency log of `from` leaves is a prefix of its log of `to`
    /// leaves: the hashes to check with `verify_consistency` against the roots of the two
    /// checkpoints the agent holds (empty for equal sizes). Unsigned (the route is public and the
    /// proof names no machine), through the machine's proxy, retried as a read is. A `from` of 0, a
    /// `from` past `to` or a `to` past the vault's tree is [`AnchorError::Refused`] (`bad_request`);
    /// an answer for other sizes or with a malformed hash is `vault_error`.
    pub fn consistency(&self, signer: &HeadSigner, from: u64, to: u64) -> Result<Vec<Hash>, AnchorError> {
        let mut url = http::join_url(&signer.endpoint, &["v1", "checkpoint", "consistency"]).map_err(|e| {
            AnchorError::Failed { reason: Reason::VaultUnreachable, detail: format!("the vault endpoint {e}") }
        })?;
        url.query_pairs_mut().append_pair("from", &from.to_string()).append_pair("to", &to.to_string());
        let client = self
            .client_for(signer.proxy.as_ref())
            .map_err(|detail| AnchorError::Failed { reason: Reason::InvalidProxy, detail })?;
        let answer = self.with_retries_until(None, |time_left| {
            let request = with_time_left(client.get(url.clone()), time_left);
            self.answer::<ConsistencyProof>(request.send(), signer.proxy.as_ref(), &url)
        })?;
        http::proof_hashes(&answer, from, to)
            .map_err(|detail| AnchorError::Failed { reason: Reason::VaultError, detail })
    }

    /// The head the vault holds for the machine, or `None` if it never anchored one, with the
    /// transparency log's proof of it (`Anchor::log`) when the vault keeps one.
    pub fn fetch_log_head(&self, signer: &HeadSigner) -> Result<Option<Anchor>, AnchorError> {
        self.fetch_log_head_until(signer, None, Some(None))
    }

    /// `proof`: ask for the proof too, with consistency from the tree of that many leaves when
    /// given (a report's own read, which only finds where to resume, does not ask: the report's
    /// answer proves the head it reports).
    fn fetch_log_head_until(
        &self,
        signer: &HeadSigner,
        deadline: Option<Instant>,
        proof: Option<Option<u64>>,
    ) -> Result<Option<Anchor>, AnchorError> {
        let message = |timestamp: i64, nonce: &str| {
            log_head_read_message(&signer.vault, &signer.machine_id, &signer.thumbprint, timestamp, nonce)
        };
        let send = |client: &Client, url: &reqwest::Url, signed: Signed, time_left: Option<Duration>| {
            let mut url = url.clone();
            if let Some(from) = proof {
                url.query_pairs_mut().append_pair("proof", "true");
                if let Some(from) = from {
                    url.query_pairs_mut().append_pair("from", &from.to_string());
                }
            }
            let mut request = with_time_left(client.get(url.clone()), time_left);
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
            self.answer::<Anchor>(request.send(), signer.proxy.as_ref(), &url)
        };
        match self.signed_call(signer, "the read", deadline, message, send) {
            Ok(head) => Ok(Some(head)),
            Err(AnchorError::Refused { code: ErrorCode::LogHeadNotFound, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One call to the machine's log-head URL, retried as registration is (within `deadline`): every
    /// attempt signs `message(timestamp, nonce)` afresh with the registration's key and `send`s it
    /// with the time left.
    fn signed_call<T>(
        &self,
        signer: &HeadSigner,
        what: &str,
        deadline: Option<Instant>,
        message: impl Fn(i64, &str) -> Vec<u8>,
        send: impl Fn(&Client, &reqwest::Url, Signed, Option<Duration>) -> Attempt<T>,
    ) -> Result<T, AnchorError> {
        let key = signing_key(signer)?;
        let url = self.log_head_url(signer)?;
        let client = self
            .client_for(signer.proxy.as_ref())
            .map_err(|detail| AnchorError::Failed { reason: Reason::InvalidProxy, detail })?;
        let answer = self.with_retries_until(deadline, |time_left| {
            let nonce = match new_nonce() {
                Ok(nonce) => nonce,
                Err(detail) => return Attempt::Fail(Reason::VaultError, detail),
            };
            let timestamp = Utc::now().timestamp();
            match key.sign(&message(timestamp, &nonce)) {
                Ok(signature) => {
                    send(&client, &url, Signed { timestamp, nonce, signature: STANDARD.encode(signature) }, time_left)
                }
                Err(e) => Attempt::Fail(Reason::CredentialsInvalid, format!("signing {what} failed: {e}")),
            }
        });
        answer.map_err(AnchorError::from)
    }

    fn log_head_url(&self, signer: &HeadSigner) -> Result<reqwest::Url, AnchorError> {
        http::join_url(&signer.endpoint, &["v1", "vaults", &signer.vault, "machines", &signer.machine_id, "log-head"])
            .map_err(|e| AnchorError::Failed {
                reason: Reason::VaultUnreachable,
                detail: format!("the vault endpoint {e}"),
            })
    }
}

/// The vault keeps the agent's head: the engine's port, over this client.
impl HeadKeeper for HttpVaultClient {
    fn report(
        &self,
        signer: &HeadSigner,
        log: &EventStore,
        head: Head,
        budget: Option<Duration>,
        tree_size: Option<u64>,
    ) -> Result<Anchor, AnchorError> {
        self.report_log_head(signer, log, head, budget.map(|budget| Instant::now() + budget), tree_size)
    }

    fn fetch(&self, signer: &HeadSigner) -> Result<Option<Anchor>, AnchorError> {
        self.fetch_log_head(signer)
    }

    fn vault_key(&self, signer: &HeadSigner) -> Result<Option<String>, AnchorError> {
        self.checkpoint_key(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_tamper_evidence() {
        let conflict = AnchorError::Refused { code: ErrorCode::LogHeadConflict, message: "m".into() };
        assert_eq!(conflict.code(), "log_head_conflict");
        assert!(conflict.is_tamper_evidence());
        for code in ErrorCode::ALL {
            let refused = AnchorError::Refused { code: code.clone(), message: "m".into() };
            let evidence = matches!(
                code,
                ErrorCode::LogHeadRegressed | ErrorCode::LogHeadConflict | ErrorCode::LogHeadProofInvalid
            );
            assert_eq!(refused.is_tamper_evidence(), evidence, "{code}");
        }
        let newer = AnchorError::Refused { code: ErrorCode::from_code("log_head_forked"), message: "m".into() };
        assert_eq!(newer.code(), "log_head_forked");
        assert!(!newer.is_tamper_evidence());
        let down = AnchorError::Failed { reason: Reason::VaultUnreachable, detail: "d".into() };
        assert_eq!(down.code(), "vault_unreachable");
        assert!(!down.is_tamper_evidence());
    }

    #[test]
    fn the_key_does_not_show_in_debug() {
        let signer = HeadSigner {
            endpoint: "http://v".into(),
            vault: "v".into(),
            machine_id: "m".into(),
            thumbprint: "t".into(),
            private_key: zeroize::Zeroizing::new(b"very-secret-key-bytes".to_vec()),
            proxy: None,
        };
        assert!(!format!("{signer:?}").contains("very-secret"));
    }
}
