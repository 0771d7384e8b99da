//! What the HTTP layer answers a refusal with ([`ApiError`], an [`ErrorBody`] on the wire), the
//! extractors that answer malformed requests the same way, and the checks of a request's shape
//! (ids, names, nonces, signatures, the clock) that run before anything is looked up.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::protocol::{self, ErrorBody, ErrorCode, Reason, RegisterBody, valid_vault_name};
use crate::state::RegistrationKey;

/// A refusal or failure, answered as an [`ErrorBody`].
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub reason: Option<Reason>,
    pub message: String,
    /// Sent as `Retry-After` (seconds): when a lock-out ends.
    pub retry_after_secs: Option<i64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, reason: None, message: message.into(), retry_after_secs: None }
    }

    /// `403` under a code that is also the agent's reason (`credentials_invalid`, ...): the
    /// refusal names that reason.
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let reason = code.as_reason();
        ApiError { status: StatusCode::FORBIDDEN, code, reason, message: message.into(), retry_after_secs: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }

    pub(crate) fn vault_not_found(vault: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::VaultNotFound,
            format!("there is no vault named {vault:?} on this service"),
        )
    }

    pub(crate) fn with_reason(mut self, reason: Reason) -> ApiError {
        self.reason = Some(reason);
        self
    }

    /// The log or the database could not take or give what was asked: nothing was changed. The
    /// text names the storage's problem, never a secret.
    pub(crate) fn unavailable(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "the vault's storage failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            format!("the vault's storage cannot be used right now ({detail}); retry"),
        )
        .with_reason(Reason::VaultError)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code, reason: self.reason, message: self.message };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// `axum::Json`, with its rejections answered as [`ErrorBody`] like every other refusal.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    // The texts come from serde and axum and describe the body's shape; they go back to the caller
    // only, never to the log.
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(format!("the body has the wrong shape: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!(
                "the body is too large: at most {} bytes ({} for a log-head report)",
                protocol::MAX_BODY_BYTES,
                protocol::MAX_LOG_HEAD_BODY_BYTES
            ),
        ),
        other => ApiError::new(other.status(), ErrorCode::BadRequest, other.body_text()),
    }
}

/// `axum::extract::Path`, with its rejections answered as [`ErrorBody`].
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

/// `axum::extract::Query`, with its rejections answered as [`ErrorBody`].
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("the query is malformed: {}", rejection.body_text()),
            )),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        format!("the path is malformed: {}", rejection.body_text()),
    )
}

/// A request id: 1 to 128 printable ASCII characters without spaces (safe to sign and show).
pub(crate) fn valid_request_id(request_id: &str) -> Result<(), ApiError> {
    if request_id.is_empty() || request_id.len() > 128 || !request_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad_request("request_id must be 1 to 128 printable ASCII characters without spaces"));
    }
    Ok(())
}

/// Unicode format characters that hide text or change its direction.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

/// Checks the shape of a registration, so that every field is safe to sign, store and show.
pub(crate) fn validate_registration(body: &RegisterBody) -> Result<Vec<u8>, ApiError> {
    let printable = |s: &str| !s.chars().any(char::is_control);
    valid_request_id(&body.request_id)?;
    if body.machine_name.trim().is_empty() || body.machine_name.len() > 255 || !printable(&body.machine_name) {
        return Err(ApiError::bad_request("machine_name must be 1 to 255 bytes without control characters"));
    }
    // Shown to the admin in machine lists: no character that hides text or turns it around (a name
    // that reads as another machine's).
    if body.machine_name.chars().any(is_invisible_or_bidi) {
        return Err(ApiError::bad_request(
            "machine_name must not hold invisible or text-direction characters (U+200B-U+200F, U+202A-U+202E, \
             U+2060-U+2069, U+061C, U+FEFF)",
        ));
    }
    signed_fields(&body.thumbprint, &body.nonce, &body.signature)
}

pub(crate) fn request_id_conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::RequestIdConflict, message).with_reason(Reason::RequestIdConflict)
}

/// What differs between a registration and the first one sent under its request id.
pub(crate) fn registration_conflict(first: &RegistrationKey, now: &RegistrationKey) -> ApiError {
    let what = if first.thumbprint != now.thumbprint { "another certificate" } else { "another machine name" };
    request_id_conflict(format!(
        "this registration's request id was first sent with {what}: it belongs to another server's registration \
         (a data directory copied from another server?); start a new registration on this server"
    ))
}

pub(crate) fn pin_wrong() -> ApiError {
    ApiError::refused(ErrorCode::SecurityPinInvalid, "the security PIN is wrong or was already used; ask for a new one")
}

/// A time in a message: RFC 3339 to the second (`2026-12-02T02:26:28Z`), never its nanoseconds.
pub(crate) fn seconds(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn pin_checks_locked(until: DateTime<Utc>, now: DateTime<Utc>) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PinChecksLocked,
        format!(
            "this machine sent {} wrong security PINs in a row: its PIN checks are locked until {}; then ask for a new PIN",
            protocol::MAX_PIN_FAILURES,
            seconds(until)
        ),
    )
    .with_reason(Reason::SecurityPinInvalid);
    error.retry_after_secs = Some((until - now).num_seconds());
    error
}

/// Refuses what cannot be a machine id (ids are UUIDs; anything printable up to 128 is tolerated).
pub(crate) fn valid_machine_id(machine_id: &str) -> Result<(), ApiError> {
    if machine_id.is_empty()
        || machine_id.len() > 128
        || !machine_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(
            "the machine id must be 1 to 128 characters of A-Z, a-z, 0-9, '-', '_' and '.'",
        ));
    }
    Ok(())
}

pub(crate) fn is_lower_hex64(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Checks the fields every signed agent request carries; returns the decoded signature.
pub(crate) fn signed_fields(thumbprint: &str, nonce: &str, signature: &str) -> Result<Vec<u8>, ApiError> {
    if !is_lower_hex64(thumbprint) {
        return Err(ApiError::bad_request("thumbprint must be 64 lowercase hex digits (SHA-256 of the certificate)"));
    }
    if nonce.len() < 16
        || nonce.len() > 128
        || !nonce.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(ApiError::bad_request("nonce must be 16 to 128 characters of A-Z, a-z, 0-9, '-' and '_'"));
    }
    if signature.len() > 4096 {
        return Err(ApiError::bad_request("signature is too long"));
    }
    let signature = STANDARD.decode(signature).map_err(|_| ApiError::bad_request("signature is not base64"))?;
    if signature.is_empty() {
        return Err(ApiError::bad_request("signature is empty"));
    }
    Ok(signature)
}

pub(crate) fn check_clock(timestamp: i64, now: DateTime<Utc>) -> Result<(), ApiError> {
    let skew = timestamp.saturating_sub(now.timestamp());
    // unsigned_abs: `abs` of i64::MIN (a timestamp of i64::MIN saturates to it) overflows, which
    // panics in a debug build and, wrapping in a release build, would pass the check.
    if skew.unsigned_abs() > protocol::MAX_CLOCK_SKEW_SECS.unsigned_abs() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::ClockSkew,
            format!(
                "the request was signed {} seconds {} the vault's clock (at most {} allowed); check this machine's clock",
                skew.unsigned_abs(),
                if skew > 0 { "ahead of" } else { "behind" },
                protocol::MAX_CLOCK_SKEW_SECS
            ),
        )
        .with_reason(Reason::VaultError));
    }
    Ok(())
}

pub(crate) fn nonce_replayed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::NonceReplayed,
        "this request was already received (its nonce was used); a retry must be signed again with a fresh nonce",
    )
    .with_reason(Reason::VaultError)
}

pub(crate) fn machine_not_found(vault: &str, machine_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::MachineNotFound,
        format!("vault {vault} has no machine {machine_id:?} (never registered, or removed)"),
    )
}

/// Refuses a report's records before anything else is looked at: too many, too large, or with a
/// line break inside (which would make their digest ambiguous; a stored record never holds one).
pub(crate) fn check_proof_shape(records: &[String]) -> Result<(), ApiError> {
    let bytes: usize = records.iter().map(String::len).sum();
    if records.len() > protocol::MAX_PROOF_RECORDS || bytes > protocol::MAX_PROOF_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::LogHeadProofTooLarge,
            format!(
                "a report carries at most {} records and {} bytes of them ({} and {bytes} bytes sent); report the head in steps",
                protocol::MAX_PROOF_RECORDS,
                protocol::MAX_PROOF_BYTES,
                if records.len() == 1 { "1 record".to_string() } else { format!("{} records", records.len()) }
            ),
        ));
    }
    if let Some(index) = records.iter().position(|r| r.is_empty() || r.contains(['\n', '\r'])) {
        return Err(proof_malformed(format!("record {} of the report is empty or holds a line break", index + 1)));
    }
    Ok(())
}

pub(crate) fn proof_malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LogHeadProofMalformed, message)
}

pub(crate) fn known_vault(vault: &str) -> Result<(), ApiError> {
    if valid_vault_name(vault) { Ok(()) } else { Err(ApiError::vault_not_found(vault)) }
}
