//! The agent's side: [`HttpVaultClient`] implements the engine's `VaultClient` port over HTTP(S).
//!
//! Every failure becomes one of the agent's reason codes ([`Reason`]), with a one-line detail that
//! never holds a secret:
//! - refused connection, DNS failure, timeout, a connection broken before the answer:
//!   `vault_unreachable`;
//! - a TLS failure (a certificate this machine does not trust, another host's, no TLS at the other
//!   end): `vault_tls_failed`, never a refusal of the credentials, the PIN or the proxy;
//! - the proxy's 407, or the 401 tinyproxy 1.11 answers a wrong password: `proxy_auth_failed`;
//! - the service's refusals: the reason they name (`credentials_superseded`, ...);
//! - the service's 5xx, its refusals that name no reason this build knows, and anything else
//!   unexpected: `vault_error`.
//!
//! Connect failures, answers lost to a broken connection, and 5xx are retried with backoff; every
//! attempt is signed again (fresh nonce and timestamp) but keeps the request id, so the service
//! answers a retry with the first answer. A TLS failure is not retried: it says what is wrong with
//! the vault's certificate and that `--ca-file` trusts a private CA.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use regent_credentials::PrivateKey;
use regent_engine::anchoring::{AnchorError, HeadSigner};
use regent_engine::model::{PinAnswer, ProbeAnswer, RemovalAnswer, VaultAnswer};
use regent_engine::ports::{PinCheck, ProxyConfig, RegisterRequest, UnregisterRequest, VaultClient};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{ClientError, chain_text};
use crate::http;
use crate::protocol::{
    ErrorBody, ErrorCode, PinCheckBody, PinValid, Reason, RegisterBody, Registered, UnregisterBody, Unregistered,
    pin_check_message, registration_message, unregistration_message,
};

/// Timeouts and retries of the agent's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Extra CA certificates (PEM or DER) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// For the TCP (and proxy) connection of one attempt.
    pub connect_timeout: Duration,
    /// For one attempt, from connecting to the last byte of the answer.
    pub request_timeout: Duration,
    /// For the whole call, retries included: no retry starts after this.
    pub total_timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(60),
            attempts: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// What a proxy setting is, for reusing a client: the password only as a digest.
#[derive(Clone, PartialEq, Eq)]
struct ProxyKey(Option<ProxyIdentity>);

#[derive(Clone, PartialEq, Eq)]
struct ProxyIdentity {
    host: String,
    port: u16,
    user_and_password_digest: Option<(String, [u8; 32])>,
}

impl ProxyKey {
    fn of(proxy: Option<&ProxyConfig>) -> ProxyKey {
        ProxyKey(proxy.map(|p| {
            let credentials = p.credentials.as_ref().map(|(user, password)| {
                (user.clone(), <[u8; 32]>::from(Sha256::digest(password.expose_secret().as_bytes())))
            });
            ProxyIdentity { host: p.host.clone(), port: p.port, user_and_password_digest: credentials }
        }))
    }
}

/// The agent's vault client. Cheap to share; reuses one HTTP client (and its connections) for as
/// long as the proxy setting stays the same.
pub struct HttpVaultClient {
    options: ClientOptions,
    tls: rustls::ClientConfig,
    cached: Mutex<Option<(ProxyKey, Client)>>,
}

impl std::fmt::Debug for HttpVaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpVaultClient").field("options", &self.options).finish_non_exhaustive()
    }
}

/// How one attempt ended.
pub(crate) enum Attempt<T> {
    Done(T),
    /// Worth another attempt (connect failure, 5xx); the reason and detail stand if none is left.
    Retry(Reason, String),
    Fail(Reason, String),
    /// The service refused the request (a 4xx from the service itself): never retried.
    Refused(CallError),
}

/// Why a call failed: the agent's reason code, a one-line detail, and, when the service itself
/// refused, its protocol code and message.
#[derive(Debug)]
pub(crate) struct CallError {
    pub reason: Reason,
    pub detail: String,
    pub service: Option<(ErrorCode, String)>,
}

impl HttpVaultClient {
    pub fn new(options: ClientOptions) -> Result<HttpVaultClient, ClientError> {
        let tls = crate::tls::client_config(options.ca_file.as_deref())?;
        Ok(HttpVaultClient { options, tls, cached: Mutex::new(None) })
    }

    /// Default timeouts and retries, trusting the system roots plus `ca_file`.
    pub fn with_ca_file(ca_file: Option<&std::path::Path>) -> Result<HttpVaultClient, ClientError> {
        HttpVaultClient::new(ClientOptions { ca_file: ca_file.map(PathBuf::from), ..ClientOptions::default() })
    }

    pub(crate) fn client_for(&self, proxy: Option<&ProxyConfig>) -> Result<Client, String> {
        let key = ProxyKey::of(proxy);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_key, client)) = cached.as_ref()
            && *cached_key == key
        {
            return Ok(client.clone());
        }
        let client = http::build_client(&self.tls, proxy, self.options.connect_timeout, self.options.request_timeout)?;
        *cached = Some((key, client.clone()));
        Ok(client)
    }

    /// Runs attempts until one is done or fails for good, the attempts are used up, or the total
    /// timeout would pass during the next backoff.
    fn with_retries<T>(&self, mut attempt: impl FnMut() -> Attempt<T>) -> Result<T, (Reason, String)> {
        self.with_retries_until(None, |_| attempt()).map_err(|e| (e.reason, e.detail))
    }

    /// As [`Self::with_retries`], keeping the service's own refusal code when there is one, and
    /// within `deadline` when there is one: each attempt is given the time left (for its request's
    /// timeout), no attempt or retry starts after it.
    pub(crate) fn with_retries_until<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(Option<Duration>) -> Attempt<T>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let mut backoff = self.options.backoff;
        let mut tries = 0;
        loop {
            let time_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if time_left.is_some_and(|left| left.is_zero()) {
                return Err(CallError { reason: Reason::VaultUnreachable, detail: out_of_time(tries), service: None });
            }
            tries += 1;
            match attempt(time_left) {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(reason, detail) => return Err(CallError { reason, detail, service: None }),
                Attempt::Refused(error) => return Err(error),
                Attempt::Retry(reason, detail) => {
                    if tries >= self.options.attempts.max(1)
                        || started.elapsed() + backoff >= self.options.total_timeout
                        || deadline.is_some_and(|d| Instant::now() + backoff >= d)
                    {
                        let detail = if tries > 1 { format!("{detail} (after {tries} attempts)") } else { detail };
                        return Err(CallError { reason, detail, service: None });
                    }
                    tracing::debug!(%reason, %detail, attempt = tries, "vault call failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }

    /// What a sent request came to: the answer, or a reason.
    pub(crate) fn answer<T: DeserializeOwned>(
        &self,
        sent: reqwest::Result<Response>,
        proxy: Option<&ProxyConfig>,
        url: &reqwest::Url,
    ) -> Attempt<T> {
        let response = match sent {
            Ok(response) => response,
            Err(e) => return self.transport_failure(&e, proxy, url),
        };
        let status = response.status();
        let from_service = http::from_service(&response);
        if status.is_success() && from_service {
            return match http::read_body(response, http::MAX_ANSWER_BYTES) {
                // The answer was lost on the way (the connection broke mid-body): every call of
                // this client is idempotent (by request id, or by what it reports), so ask again.
                Err(e) => Attempt::Retry(Reason::VaultUnreachable, format!("the vault's answer was cut off: {e}")),
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(value) => Attempt::Done(value),
                    Err(e) => Attempt::Fail(Reason::VaultError, format!("the vault's answer cannot be read: {e}")),
                },
            };
        }
        if from_service {
            return refusal(status, http::error_body(response));
        }
        // Not the service: a proxy, or something else listening at the endpoint.
        match (status, proxy) {
            (StatusCode::PROXY_AUTHENTICATION_REQUIRED, Some(p)) => {
                Attempt::Fail(Reason::ProxyAuthFailed, proxy_refusal(p, status.as_u16()))
            }
            (StatusCode::UNAUTHORIZED, Some(p)) => {
                Attempt::Fail(Reason::ProxyAuthFailed, proxy_refusal(p, status.as_u16()))
            }
            (StatusCode::PROXY_AUTHENTICATION_REQUIRED, None) => Attempt::Fail(
                Reason::ProxyAuthFailed,
                "a proxy on the way asked for credentials (HTTP 407); set them with `regent proxy set`".into(),
            ),
            (s, Some(p)) if s.is_server_error() => Attempt::Retry(
                Reason::VaultUnreachable,
                format!("the proxy {}:{} could not reach the vault at {url} (HTTP {})", p.host, p.port, s.as_u16()),
            ),
            (s, _) if s.is_server_error() => Attempt::Retry(
                Reason::VaultError,
                format!("{url} answered HTTP {} and is not the regent vault service", s.as_u16()),
            ),
            (s, _) => Attempt::Fail(
                Reason::VaultError,
                format!("{url} answered HTTP {} and is not the regent vault service; check the endpoint", s.as_u16()),
            ),
        }
    }

    fn transport_failure<T>(
        &self,
        error: &reqwest::Error,
        proxy: Option<&ProxyConfig>,
        url: &reqwest::Url,
    ) -> Attempt<T> {
        // A TLS failure (an untrusted or wrong certificate, no TLS at the other end) does not go
        // away by asking again; it is one line saying what is wrong.
        if let Some(tls) = crate::tls::describe_failure(error) {
            return Attempt::Fail(Reason::VaultTlsFailed, format!("cannot reach {url}: {tls}"));
        }
        // reqwest names the URL in its own text; the detail names it once.
        let text = chain_text(error).replace(&format!(" for url ({url})"), "");
        let lower = text.to_ascii_lowercase();
        if error.is_connect() || lower.contains("tunnel") {
            if let Some(p) = proxy {
                if lower.contains("proxy authorization required") {
                    return Attempt::Fail(Reason::ProxyAuthFailed, proxy_refusal(p, 407));
                }
                if lower.contains("tunnel") {
                    // The proxy refused the CONNECT without saying why to reqwest: ask it directly.
                    let target = format!(
                        "{}:{}",
                        url.host_str().unwrap_or_default(),
                        url.port_or_known_default().unwrap_or(443)
                    );
                    return match http::probe_tunnel_status(p, &target, self.options.connect_timeout) {
                        Some(status @ (401 | 407)) => Attempt::Fail(Reason::ProxyAuthFailed, proxy_refusal(p, status)),
                        Some(status) => Attempt::Fail(
                            Reason::VaultUnreachable,
                            format!("the proxy {}:{} refused a tunnel to {target} (HTTP {status})", p.host, p.port),
                        ),
                        None => Attempt::Retry(
                            Reason::VaultUnreachable,
                            format!("the proxy {}:{} refused a tunnel to {target}: {text}", p.host, p.port),
                        ),
                    };
                }
            }
            let via = proxy.map(|p| format!(" through the proxy {}:{}", p.host, p.port)).unwrap_or_default();
            return Attempt::Retry(Reason::VaultUnreachable, format!("cannot connect to {url}{via}: {text}"));
        }
        if error.is_timeout() {
            // A call with a deadline may have given its attempt less than the request timeout.
            return Attempt::Fail(
                Reason::VaultUnreachable,
                format!("no answer from {url} in time (at most {}s)", self.options.request_timeout.as_secs()),
            );
        }
        // The request went out and the connection broke before the answer came (the vault was
        // killed or restarted mid-request, a proxy dropped it). Every call of this client is
        // idempotent: registrations and PIN checks by their request id (a retry gets the first
        // answer), log-head reports and reads by what they carry. So it is asked again, signed
        // afresh, within the same attempts and time.
        Attempt::Retry(
            Reason::VaultUnreachable,
            format!("the connection to {url} broke before the answer came: {text}"),
        )
    }

    fn register_attempts(&self, request: &RegisterRequest) -> Result<Registered, (Reason, String)> {
        let key = PrivateKey::from_pkcs8_der(&request.private_key)
            .map_err(|e| (Reason::CredentialsInvalid, format!("the credentials' private key cannot be used: {e}")))?;
        let vault = &request.vault.name;
        let url = http::join_url(&request.endpoint, &["v1", "vaults", vault, "registrations"])
            .map_err(|e| (Reason::VaultUnreachable, format!("the vault endpoint {e}")))?;
        let proxy = request.proxy.as_ref();
        let client = self.client_for(proxy).map_err(|e| (Reason::InvalidProxy, e))?;
        self.with_retries(|| {
            let nonce = match new_nonce() {
                Ok(nonce) => nonce,
                Err(detail) => return Attempt::Fail(Reason::VaultError, detail),
            };
            let timestamp = Utc::now().timestamp();
            let message = registration_message(
                vault,
                request.vault.resource_id,
                &request.machine_name,
                &request.thumbprint,
                timestamp,
                &nonce,
                &request.request_id,
            );
            let signature = match key.sign(&message) {
                Ok(signature) => signature,
                Err(e) => {
                    return Attempt::Fail(Reason::CredentialsInvalid, format!("signing the registration failed: {e}"));
                }
            };
            let body = RegisterBody {
                request_id: request.request_id.clone(),
                machine_name: request.machine_name.clone(),
                resource_id: request.vault.resource_id,
                thumbprint: request.thumbprint.clone(),
                timestamp,
                nonce,
                signature: STANDARD.encode(signature),
            };
            self.answer(client.post(url.clone()).json(&body).send(), proxy, &url)
        })
    }

    fn pin_attempts(&self, check: &PinCheck) -> Result<PinValid, (Reason, String)> {
        let key = PrivateKey::from_pkcs8_der(&check.private_key).map_err(|e| {
            (
                Reason::CredentialsInvalid,
                format!("the registration's private key cannot be used to sign the check: {e}"),
            )
        })?;
        let url = http::join_url(&check.endpoint, &["v1", "vaults", &check.vault, "pin-checks"])
            .map_err(|e| (Reason::VaultUnreachable, format!("the vault endpoint {e}")))?;
        let proxy = check.proxy.as_ref();
        let client = self.client_for(proxy).map_err(|e| (Reason::InvalidProxy, e))?;
        self.with_retries(|| {
            let nonce = match new_nonce() {
                Ok(nonce) => nonce,
                Err(detail) => return Attempt::Fail(Reason::VaultError, detail),
            };
            let timestamp = Utc::now().timestamp();
            let pin = check.pin.expose_secret();
            let message = pin_check_message(
                &check.vault,
                &check.machine_id,
                &check.thumbprint,
                &check.request_id,
                pin,
                timestamp,
                &nonce,
            );
            let signature = match key.sign(&message) {
                // The signature covers the PIN, so it is held like the PIN.
                Ok(signature) => Zeroizing::new(STANDARD.encode(signature)),
                Err(e) => {
                    return Attempt::Fail(Reason::CredentialsInvalid, format!("signing the PIN check failed: {e}"));
                }
            };
            let mut body = PinCheckBody {
                request_id: check.request_id.clone(),
                machine_id: check.machine_id.clone(),
                thumbprint: check.thumbprint.clone(),
                pin: pin.to_string(),
                timestamp,
                nonce,
                signature: signature.to_string(),
            };
            let bytes = serde_json::to_vec(&body).map(Zeroizing::new);
            body.pin.zeroize();
            body.signature.zeroize();
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) => return Attempt::Fail(Reason::VaultError, format!("the PIN check cannot be encoded: {e}")),
            };
            let sent = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.to_vec())
                .send();
            self.answer(sent, proxy, &url)
        })
    }
}

/// A fresh nonce for one attempt: 16 random bytes, hex.
pub(crate) fn new_nonce() -> Result<String, String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|_| "the system random source failed".to_string())?;
    Ok(hex::encode(nonce))
}

fn out_of_time(tries: u32) -> String {
    match tries {
        0 => "no time was left to call the vault".into(),
        _ => format!("no answer from the vault in the time allowed (after {tries} attempts)"),
    }
}

fn proxy_refusal(proxy: &ProxyConfig, status: u16) -> String {
    let given = if proxy.credentials.is_some() {
        "refused the user name or password"
    } else {
        "asked for a user name and password"
    };
    format!("the proxy {}:{} {given} (HTTP {status})", proxy.host, proxy.port)
}

/// What the service's own refusal or failure comes to: the reason it names, or `vault_error` when it
/// names none this build knows (a newer vault's reason is not one the engine can act on).
fn refusal<T>(status: StatusCode, mut body: ErrorBody) -> Attempt<T> {
    let reason = body.reason.take().filter(|reason| !matches!(reason, Reason::Unknown(_)));
    match reason {
        _ if status.is_server_error() => Attempt::Retry(
            Reason::VaultError,
            format!("the vault service failed (HTTP {}, {}): {}", status.as_u16(), body.error, body.message),
        ),
        Some(reason) => Attempt::Refused(CallError {
            reason,
            detail: body.message.clone(),
            service: Some((body.error, body.message)),
        }),
        None => Attempt::Refused(CallError {
            reason: Reason::VaultError,
            detail: format!(
                "the vault service refused the request (HTTP {}, {}): {}",
                status.as_u16(),
                body.error,
                body.message
            ),
            service: Some((body.error, body.message)),
        }),
    }
}

impl HttpVaultClient {
    fn unregister_attempts(&self, request: &UnregisterRequest) -> Result<Unregistered, CallError> {
        let (signer, request_id) = (&request.signer, &request.request_id);
        let fail = |reason, detail| CallError { reason, detail, service: None };
        let key = PrivateKey::from_pkcs8_der(&signer.private_key).map_err(|e| {
            fail(Reason::CredentialsInvalid, format!("the registration's private key cannot be used to sign: {e}"))
        })?;
        let url = http::join_url(
            &signer.endpoint,
            &["v1", "vaults", &signer.vault, "machines", &signer.machine_id, "unregistrations"],
        )
        .map_err(|e| fail(Reason::VaultUnreachable, format!("the vault endpoint {e}")))?;
        let proxy = signer.proxy.as_ref();
        let client = self.client_for(proxy).map_err(|e| fail(Reason::InvalidProxy, e))?;
        self.with_retries_until(None, |_| {
            let nonce = match new_nonce() {
                Ok(nonce) => nonce,
                Err(detail) => return Attempt::Fail(Reason::VaultError, detail),
            };
            let timestamp = Utc::now().timestamp();
            let message = unregistration_message(
                &signer.vault,
                &signer.machine_id,
                &signer.thumbprint,
                request_id,
                timestamp,
                &nonce,
            );
            let signature = match key.sign(&message) {
                Ok(signature) => signature,
                Err(e) => {
                    return Attempt::Fail(
                        Reason::CredentialsInvalid,
                        format!("signing the unregistration failed: {e}"),
                    );
                }
            };
            let body = UnregisterBody {
                request_id: request_id.clone(),
                thumbprint: signer.thumbprint.clone(),
                timestamp,
                nonce,
                signature: STANDARD.encode(signature),
            };
            self.answer(client.post(url.clone()).json(&body).send(), proxy, &url)
        })
    }
}

impl VaultClient for HttpVaultClient {
    fn unregister(&self, request: &UnregisterRequest) -> RemovalAnswer {
        match self.unregister_attempts(request) {
            Ok(Unregistered { removed_at, .. }) => RemovalAnswer::Removed { removed_at },
            Err(CallError { service: Some((ErrorCode::MachineNotFound, message)), .. }) => {
                RemovalAnswer::NotFound { detail: message }
            }
            Err(CallError { reason, detail, .. }) => RemovalAnswer::Refused { reason, detail },
        }
    }

    fn register(&self, request: &RegisterRequest) -> VaultAnswer {
        match self.register_attempts(request) {
            Ok(Registered { machine_id, vault, registered_at }) => {
                VaultAnswer::Registered { machine_id, vault, registered_at }
            }
            Err((reason, detail)) => VaultAnswer::Refused { reason, detail },
        }
    }

    fn check_pin(&self, check: &PinCheck) -> PinAnswer {
        match self.pin_attempts(check) {
            Ok(PinValid { issued_at }) => PinAnswer::Valid { issued_at },
            Err((reason, detail)) => PinAnswer::Refused { reason, detail },
        }
    }

    /// The machine's signed read of its anchored head, through the proxy tried: any answer of the
    /// service itself (an anchor, none yet, even a refusal) shows the proxy lets the machine through.
    fn probe(&self, signer: &HeadSigner) -> ProbeAnswer {
        match self.fetch_log_head(signer) {
            Ok(_) | Err(AnchorError::Refused { .. }) => ProbeAnswer::Reached,
            Err(AnchorError::Failed { reason, detail }) => ProbeAnswer::Failed { reason, detail },
            Err(other) => ProbeAnswer::Failed { reason: Reason::VaultError, detail: other.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, body: &str) -> (Reason, String, Option<(ErrorCode, String)>) {
        let body = serde_json::from_str(body).unwrap();
        match refusal::<()>(StatusCode::from_u16(status).unwrap(), body) {
            Attempt::Refused(CallError { reason, detail, service }) => (reason, detail, service),
            _ => panic!("not a refusal"),
        }
    }

    #[test]
    fn a_refusal_is_its_reason_and_an_unknown_or_missing_reason_is_the_vaults_error() {
        for reason in Reason::ALL {
            let body = format!(r#"{{"error":"e","reason":"{reason}","message":"m"}}"#);
            assert_eq!(refused(403, &body), (reason, "m".into(), Some((ErrorCode::Unknown("e".into()), "m".into()))));
        }
        for body in [
            r#"{"error":"quota_exceeded","reason":"vault_full","message":"m"}"#,
            r#"{"error":"quota_exceeded","message":"m"}"#,
        ] {
            let (reason, detail, service) = refused(409, body);
            assert_eq!(reason, Reason::VaultError);
            assert_eq!(detail, "the vault service refused the request (HTTP 409, quota_exceeded): m");
            assert_eq!(service, Some((ErrorCode::Unknown("quota_exceeded".into()), "m".into())));
        }
        let (_, _, service) = refused(409, r#"{"error":"log_head_conflict","message":"m"}"#);
        assert_eq!(service.map(|(code, _)| code), Some(ErrorCode::LogHeadConflict));
        let failed = serde_json::from_str(r#"{"error":"internal","reason":"vault_error","message":"m"}"#).unwrap();
        assert!(matches!(
            refusal::<()>(StatusCode::INTERNAL_SERVER_ERROR, failed),
            Attempt::Retry(Reason::VaultError, detail) if detail == "the vault service failed (HTTP 500, internal): m"
        ));
    }

    #[test]
    fn proxy_keys_differ_by_password_without_holding_it() {
        let proxy = |password: &str| ProxyConfig {
            host: "p".into(),
            port: 3128,
            credentials: Some(("u".into(), secrecy::SecretString::from(password.to_string()))),
        };
        assert!(ProxyKey::of(Some(&proxy("a"))) == ProxyKey::of(Some(&proxy("a"))));
        assert!(ProxyKey::of(Some(&proxy("a"))) != ProxyKey::of(Some(&proxy("b"))));
        assert!(ProxyKey::of(None) != ProxyKey::of(Some(&proxy("a"))));
    }
}
