//! The service: the admin API, registration and PIN checks, over the state folded from its log.
//!
//! The router is built from [`protocol::ROUTES`] alone. Admin routes check the token before the
//! body is read; every other route but health authenticates from the request's signed fields
//! (registration: a certificate the vault issued; PIN checks and log heads: the certificate that
//! machine registered with), and nothing is remembered or written for a request before that.
//! Registrations and PIN checks are idempotent by request id, bound to what they first came with.
//!
//! Every change is appended to the log (durably) before it is applied to the in-memory state and
//! before it is answered, so an acknowledged change survives `kill -9`. Appends run on tokio's
//! blocking pool. Registrations, the only frequent change, go through the group committer
//! ([`crate::commit`]), so concurrent ones share one append and one flush; admin changes are rare
//! and append one at a time, in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use regent_credentials::{IssueRequest, VaultIdentity};
use regent_store::{
    Actor, BatchMeta, ChainWalker, Digest32, EventStore, ExpectedVersion, Head, Problem, StoreError, StoreOptions,
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::commit::{CommitQueue, Committer};
use crate::error::VaultError;
use crate::events::{
    CredentialsIssued, LogHeadAnchored, LogHeadRefused, MachineRegistered, MachineRemoved, PinCheckFailed,
    PinCheckRecord, PinIssued, PinUsed, UnregistrationRecord, VaultCreated, VaultEvent, stream_of,
};
use crate::metrics::Metrics;
use crate::protocol::{
    self, Anchor, CreateVault, CredentialsFile, DownloadCredentials, ErrorBody, ErrorCode, HeadReport, Health,
    IssuedPin, MachineInfo, Machines, PinCheckBody, PinValid, Reason, RegisterBody, Registered, RouteId,
    SERVICE_HEADER, SIGNATURE_HEADERS, UnregisterBody, Unregistered, VaultInfo, valid_vault_name,
};
use crate::service_log::ServiceLog;
use crate::state::{
    HeldAnchor, PendingAnswer, PendingRegistration, PinGuard, PinOutcome, RegistrationKey, ServiceState,
};
use crate::token::{self, AdminKey};

/// The service's log lives here inside the data directory.
const LOG_DIR: &str = "log";

pub(crate) struct App {
    store: Arc<ServiceLog>,
    state: Mutex<ServiceState>,
    admin: AdminKey,
    /// Admin changes (create, download, PIN, remove) run one at a time, so they reach the state in
    /// log order. Registrations do not take it.
    admin_changes: tokio::sync::Mutex<()>,
    /// Log-head reports run one at a time (check, append, apply), so two reports of one machine
    /// cannot both pass the check against the same anchored head.
    anchor_changes: tokio::sync::Mutex<()>,
    /// PIN checks run one at a time (decide, append, apply), so a PIN is used once and a machine's
    /// wrong PINs are counted against the state the last one left.
    pin_changes: tokio::sync::Mutex<()>,
    /// What credentials name as `IdMgmtRestEndpoint` when set; otherwise the address the admin
    /// reached the service at.
    public_url: Option<String>,
    /// `http` or `https`.
    scheme: &'static str,
    /// The address bound, as a URL: the last resort for `IdMgmtRestEndpoint`.
    bound_url: Mutex<String>,
    /// Registrations are written through the group committer...
    committer: Committer,
    /// ...unless this is off (for measuring only).
    group_commit: bool,
}

pub(crate) struct Opened {
    pub app: Arc<App>,
    pub token_path: PathBuf,
    pub token_created: bool,
    /// For [`crate::commit::run`], which the caller starts on its runtime.
    pub store: Arc<ServiceLog>,
    pub commits: CommitQueue,
}

impl App {
    /// Opens (or creates) the data directory: the admin token and the log, folded into the state.
    pub(crate) fn open(
        data_dir: &Path,
        public_url: Option<String>,
        tls: bool,
        group_commit: bool,
        metrics: &Metrics,
    ) -> Result<Opened, VaultError> {
        regent_secrets::create_private_dir(data_dir)
            .map_err(|source| VaultError::DataDir { path: data_dir.to_path_buf(), source })?;
        let (admin, token_path, token_created) = token::load_or_create(data_dir)?;
        let options = StoreOptions { lock_wait: std::time::Duration::from_secs(5), cache_bytes: 64 * 1024 * 1024 };
        let store = EventStore::open(data_dir.join(LOG_DIR), &options)?;
        let mut state = ServiceState::default();
        for record in store.read_all(0) {
            let record = record?;
            let vault = record.stream.strip_prefix("vault/").ok_or_else(|| VaultError::BadEvent {
                position: record.position,
                detail: format!("stream {:?} is not a vault's", record.stream),
            })?;
            let event = VaultEvent::from_record(&record)
                .map_err(|detail| VaultError::BadEvent { position: record.position, detail })?;
            state.apply(vault, &event).map_err(|detail| VaultError::BadEvent { position: record.position, detail })?;
        }
        let store = Arc::new(ServiceLog::new(store, metrics));
        let (committer, commits) = crate::commit::channel();
        let app = App {
            store: store.clone(),
            state: Mutex::new(state),
            admin,
            admin_changes: tokio::sync::Mutex::new(()),
            anchor_changes: tokio::sync::Mutex::new(()),
            pin_changes: tokio::sync::Mutex::new(()),
            public_url,
            scheme: if tls { "https" } else { "http" },
            bound_url: Mutex::new(String::new()),
            committer,
            group_commit,
        };
        Ok(Opened { app: Arc::new(app), token_path, token_created, store, commits })
    }

    pub(crate) fn set_bound(&self, addr: SocketAddr) {
        let host = reachable(addr);
        *self.bound_url.lock().unwrap_or_else(|p| p.into_inner()) = format!("{}://{host}", self.scheme);
    }

    /// Whether the service can serve (`GET /readyz`): for now, whether its log would take a change.
    pub(crate) fn ready(&self) -> Result<(), String> {
        self.store.ready()
    }

    fn lock_state(&self) -> MutexGuard<'_, ServiceState> {
        // Every change to the state is applied whole under the lock after its append; a panic in
        // between cannot leave half an event applied, so a poisoned lock still holds a good state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends events to a vault's stream on the blocking pool; durable when it returns Ok.
    async fn append(
        &self,
        vault: &str,
        expected: ExpectedVersion,
        actor: Actor,
        events: Vec<(VaultEvent, Option<Uuid>)>,
    ) -> Result<(), StoreError> {
        let mut new_events = Vec::with_capacity(events.len());
        for (event, id) in &events {
            new_events.push(
                event
                    .to_new_event(*id)
                    .map_err(|e| StoreError::InvalidBatch(format!("an event cannot be written: {e}")))?,
            );
        }
        let meta = BatchMeta { recorded_at: Utc::now(), actor, correlation_id: Uuid::now_v7() };
        let store = self.store.clone();
        let stream = stream_of(vault);
        tokio::task::spawn_blocking(move || store.append(&stream, expected, &meta, &new_events).map(|_| ()))
            .await
            .map_err(|e| StoreError::Internal(format!("the append task failed: {e}")))?
    }

    /// Applies events already on disk to the state.
    fn apply(&self, vault: &str, events: &[VaultEvent]) -> Result<(), ApiError> {
        let mut state = self.lock_state();
        for event in events {
            state.apply(vault, event).map_err(|detail| {
                tracing::error!(vault, %detail, "an event was stored but cannot be applied");
                ApiError::internal("the change was stored but cannot be applied; restart the service")
            })?;
        }
        Ok(())
    }

    fn pin_digest(&self, pin_id: &Uuid, pin: &str) -> [u8; 32] {
        let mut digest = [0u8; 32];
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.admin.pin_key()) {
            mac.update(pin_id.as_bytes());
            mac.update(pin.as_bytes());
            digest.copy_from_slice(&mac.finalize().into_bytes());
        }
        digest
    }
}

/// Where a service bound to `addr` is reached: bound to every interface, the loopback one at least.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// The router, built from [`protocol::ROUTES`] and nothing else, with the body limit, the admin
/// check on admin routes, and the service header on every answer (refusals included, so a client
/// tells the service's 401 from a proxy's).
pub(crate) fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for route in protocol::ROUTES {
        let filter = match route.method {
            protocol::Method::Get => MethodFilter::GET,
            protocol::Method::Post => MethodFilter::POST,
            protocol::Method::Delete => MethodFilter::DELETE,
        };
        // Exhaustive: a route in the table without a handler does not compile.
        let handler: MethodRouter<Arc<App>> = match route.id {
            RouteId::Healthz => on(filter, crate::ops::healthz),
            RouteId::Readyz => on(filter, crate::ops::readyz),
            RouteId::Metrics => on(filter, crate::metrics::scrape),
            RouteId::Health => on(filter, health),
            RouteId::CreateVault => on(filter, create_vault),
            RouteId::GetVault => on(filter, get_vault),
            RouteId::DownloadCredentials => on(filter, download_credentials),
            RouteId::IssuePin => on(filter, issue_pin),
            RouteId::ListMachines => on(filter, list_machines),
            RouteId::RemoveMachine => on(filter, remove_machine),
            RouteId::Register => on(filter, register),
            RouteId::CheckPin => on(filter, check_pin),
            // A report carries records: its own, larger limit (the innermost limit applies).
            RouteId::ReportLogHead => {
                on(filter, report_log_head).layer(DefaultBodyLimit::max(protocol::MAX_LOG_HEAD_BODY_BYTES))
            }
            RouteId::ReadLogHead => on(filter, read_log_head),
            RouteId::Unregister => on(filter, unregister_machine),
        };
        let handler = match route.access {
            // route_layer: only matched routes ask for the token, so an unknown path is a 404, not a 401.
            protocol::Access::Admin => handler.route_layer(from_fn_with_state(app.clone(), require_admin)),
            // Authenticated by the handler, from the signed fields of the request.
            protocol::Access::Anyone | protocol::Access::Credentials | protocol::Access::Machine => handler,
        };
        // Two methods of one path merge into one method router.
        router = router.route(route.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(protocol::MAX_BODY_BYTES))
        .layer(map_response(add_service_header))
        .with_state(app)
}

async fn add_service_header(mut response: Response) -> Response {
    response.headers_mut().insert(SERVICE_HEADER, HeaderValue::from_static("1"));
    response
}

// ---------------------------------------------------------------------------------------------
// Errors and extractors

/// A refusal or failure, answered as an [`ErrorBody`].
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    reason: Option<Reason>,
    message: String,
    /// Sent as `Retry-After` (seconds): when a lock-out ends.
    retry_after_secs: Option<i64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, reason: None, message: message.into(), retry_after_secs: None }
    }

    /// `403` under a code that is also the agent's reason (`credentials_invalid`, ...): the
    /// refusal names that reason.
    fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let reason = code.as_reason();
        ApiError { status: StatusCode::FORBIDDEN, code, reason, message: message.into(), retry_after_secs: None }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }

    fn vault_not_found(vault: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::VaultNotFound,
            format!("there is no vault named {vault:?} on this service"),
        )
    }

    fn with_reason(mut self, reason: Reason) -> ApiError {
        self.reason = Some(reason);
        self
    }

    /// A store failure: the change was not made. The text names the store's problem, never a secret.
    fn store(error: StoreError) -> ApiError {
        tracing::error!(error = %error, "the vault's log refused an append");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            format!("the vault's log cannot be written: {error}"),
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

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        format!("the path is malformed: {}", rejection.body_text()),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint; the API lives under /v1")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method",
    )
}

async fn require_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if app.admin.accepts(token) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "the admin token is wrong").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the admin API needs Authorization: Bearer <token from admin.token>",
        )
        .into_response(),
    }
}

fn admin_actor(peer: SocketAddr) -> Actor {
    Actor { user: "admin".into(), host: peer.ip().to_string() }
}

fn known_vault(vault: &str) -> Result<(), ApiError> {
    if valid_vault_name(vault) { Ok(()) } else { Err(ApiError::vault_not_found(vault)) }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("the system random source failed"))?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Handlers: anyone

async fn health() -> axum::Json<Health> {
    axum::Json(Health { service: "regent-vault".into(), protocol: protocol::PROTOCOL_VERSION })
}

// ---------------------------------------------------------------------------------------------
// Handlers: admin

async fn create_vault(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<CreateVault>,
) -> Result<(StatusCode, axum::Json<VaultInfo>), ApiError> {
    if !valid_vault_name(&body.name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidVaultName,
            "a vault name is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
        ));
    }
    let _serial = app.admin_changes.lock().await;
    let exists = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::VaultExists,
            format!("a vault named {:?} already exists", body.name),
        )
    };
    if app.lock_state().vaults.contains_key(&body.name) {
        return Err(exists());
    }
    let subscription = uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid();
    // A positive, non-zero 63-bit id, as the real portal's ResourceId.
    let resource_id = (i64::from_be_bytes(random_bytes::<8>()?) & i64::MAX).max(1);
    let event = VaultEvent::VaultCreated(VaultCreated {
        identity: VaultIdentity {
            resource_name: body.name.clone(),
            subscription_id: subscription.to_string(),
            resource_group: "regent-vaults".into(),
            location: "local".into(),
            resource_id,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        created_at: Utc::now(),
    });
    match app.append(&body.name, ExpectedVersion::NoStream, admin_actor(peer), vec![(event.clone(), None)]).await {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(exists()),
        Err(e) => return Err(ApiError::store(e)),
    }
    app.apply(&body.name, &[event])?;
    tracing::info!(vault = %body.name, "vault created");
    let info = app
        .lock_state()
        .vaults
        .get(&body.name)
        .map(|v| v.info())
        .ok_or_else(|| ApiError::internal("the vault vanished"))?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

async fn get_vault(
    State(app): State<Arc<App>>,
    ApiPath(vault): ApiPath<String>,
) -> Result<axum::Json<VaultInfo>, ApiError> {
    let state = app.lock_state();
    let info = state.vaults.get(&vault).map(|v| v.info()).ok_or_else(|| ApiError::vault_not_found(&vault))?;
    Ok(axum::Json(info))
}

async fn download_credentials(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DownloadCredentials>,
) -> Result<axum::Json<CredentialsFile>, ApiError> {
    known_vault(&vault)?;
    let validity = body.validity_seconds.unwrap_or(protocol::DEFAULT_VALIDITY_SECS);
    if validity == 0 || validity > protocol::MAX_VALIDITY_SECS {
        return Err(ApiError::bad_request(format!(
            "validity_seconds must be between 1 and {} (30 days)",
            protocol::MAX_VALIDITY_SECS
        )));
    }
    let _serial = app.admin_changes.lock().await;
    let identity = app
        .lock_state()
        .vaults
        .get(&vault)
        .map(|v| v.identity.clone())
        .ok_or_else(|| ApiError::vault_not_found(&vault))?;
    let now = Utc::now();
    let request = IssueRequest {
        identity,
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: app.endpoint_for(&headers),
        agent_links: Vec::new(),
        not_before: now - Duration::seconds(protocol::NOT_BEFORE_BACKDATE_SECS),
        // validity <= 30 days, so this cannot overflow.
        not_after: now + Duration::seconds(validity as i64),
    };
    // Key generation and the PKCS#12 cost milliseconds of CPU: keep them off the async workers.
    let issued = tokio::task::spawn_blocking(move || {
        let issued = regent_credentials::issue(&request)?;
        // Read the file back, as the agent will: this is the certificate registrations are checked against.
        let parsed = regent_credentials::parse(&issued.file_name, issued.xml.as_bytes())?;
        Ok::<_, regent_credentials::CredentialsError>((issued, parsed.certificate_der))
    })
    .await
    .map_err(|_| ApiError::internal("issuing credentials failed"))?;
    let (issued, certificate_der) =
        issued.map_err(|e| ApiError::internal(format!("issuing credentials failed: {e}")))?;
    let facts = issued.certificate.clone();
    let event = VaultEvent::CredentialsIssued(CredentialsIssued {
        thumbprint: facts.thumbprint.clone(),
        certificate: STANDARD.encode(&certificate_der),
        not_before: facts.not_before,
        not_after: facts.not_after,
        file_name: issued.file_name.clone(),
        issued_at: now,
    });
    app.append(&vault, ExpectedVersion::Any, admin_actor(peer), vec![(event.clone(), None)])
        .await
        .map_err(ApiError::store)?;
    app.apply(&vault, &[event])?;
    tracing::info!(vault = %vault, thumbprint = %facts.thumbprint, not_after = %facts.not_after, "credentials issued");
    Ok(axum::Json(CredentialsFile {
        file_name: issued.file_name,
        xml: issued.xml.as_str().to_string(),
        thumbprint: facts.thumbprint,
        not_before: facts.not_before,
        not_after: facts.not_after,
    }))
}

impl App {
    /// `IdMgmtRestEndpoint` for a download: the configured public URL, else the address the admin used
    /// to reach the service (the Host header, when it is a plain host[:port]), else the bound address.
    fn endpoint_for(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        });
        match host {
            Some(host) => format!("{}://{host}", self.scheme),
            None => self.bound_url.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

async fn issue_pin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<IssuedPin>), ApiError> {
    known_vault(&vault)?;
    let _serial = app.admin_changes.lock().await;
    if !app.lock_state().vaults.contains_key(&vault) {
        return Err(ApiError::vault_not_found(&vault));
    }
    let pin = Zeroizing::new(new_pin()?);
    let pin_id = Uuid::now_v7();
    let issued_at = Utc::now();
    let expires_at = issued_at + Duration::seconds(protocol::PIN_VALIDITY_SECS);
    let event = VaultEvent::PinIssued(PinIssued {
        pin_id,
        digest: hex::encode(app.pin_digest(&pin_id, &pin)),
        issued_at,
        expires_at,
    });
    app.append(&vault, ExpectedVersion::Any, admin_actor(peer), vec![(event.clone(), None)])
        .await
        .map_err(ApiError::store)?;
    app.apply(&vault, &[event])?;
    tracing::info!(vault = %vault, %pin_id, %expires_at, "security PIN issued");
    Ok((StatusCode::CREATED, axum::Json(IssuedPin { pin: pin.as_str().to_string(), issued_at, expires_at })))
}

/// Eight uniformly random digits: 4,200,000,000 is a multiple of 10^8, so rejecting larger draws
/// removes the modulo bias.
fn new_pin() -> Result<String, ApiError> {
    loop {
        let draw = u32::from_be_bytes(random_bytes::<4>()?);
        if draw < 4_200_000_000 {
            return Ok(format!("{:08}", draw % 100_000_000));
        }
    }
}

async fn list_machines(
    State(app): State<Arc<App>>,
    ApiPath(vault): ApiPath<String>,
) -> Result<axum::Json<Machines>, ApiError> {
    let state = app.lock_state();
    let v = state.vaults.get(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
    let mut machines: Vec<MachineInfo> = v.machines.values().map(|m| v.machine_info(m)).collect();
    machines.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then_with(|| a.machine_id.cmp(&b.machine_id)));
    Ok(axum::Json(Machines { vault, machines }))
}

async fn remove_machine(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<MachineInfo>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    let _serial = app.admin_changes.lock().await;
    let machine = {
        let state = app.lock_state();
        let v = state.vaults.get(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
        v.machines.get(&machine_id).map(|m| v.machine_info(m)).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::MachineNotFound,
                format!("vault {vault} has no machine {machine_id:?}"),
            )
        })?
    };
    let event = VaultEvent::MachineRemoved(MachineRemoved {
        machine_id: machine_id.clone(),
        removed_at: Utc::now(),
        unregistration: None,
    });
    app.append(&vault, ExpectedVersion::Any, admin_actor(peer), vec![(event.clone(), None)])
        .await
        .map_err(ApiError::store)?;
    app.apply(&vault, &[event])?;
    tracing::info!(vault = %vault, machine_id = %machine_id, "machine removed");
    Ok(axum::Json(machine))
}

// ---------------------------------------------------------------------------------------------
// Handlers: the agent

/// Checks the shape of a registration, so that every field is safe to sign, store and show.
fn validate_registration(body: &RegisterBody) -> Result<Vec<u8>, ApiError> {
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

/// Unicode format characters that hide text or change its direction.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

/// A request id: 1 to 128 printable ASCII characters without spaces (safe to sign and show).
fn valid_request_id(request_id: &str) -> Result<(), ApiError> {
    if request_id.is_empty() || request_id.len() > 128 || !request_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad_request("request_id must be 1 to 128 printable ASCII characters without spaces"));
    }
    Ok(())
}

fn request_id_conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::RequestIdConflict, message).with_reason(Reason::RequestIdConflict)
}

/// What differs between a registration and the first one sent under its request id.
fn registration_conflict(first: &RegistrationKey, now: &RegistrationKey) -> ApiError {
    let what = if first.thumbprint != now.thumbprint { "another certificate" } else { "another machine name" };
    request_id_conflict(format!(
        "this registration's request id was first sent with {what}: it belongs to another server's registration \
         (a data directory copied from another server?); start a new registration on this server"
    ))
}

/// What to do with a registration once it is verified.
enum Step {
    /// This request id was answered before: the same answer again.
    Answer(Registered),
    /// The same request id is being written right now: wait for its answer.
    Wait(PendingAnswer),
    /// New: write it.
    Commit(watch::Sender<Option<Result<Registered, String>>>),
}

async fn register(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<axum::Json<Registered>, ApiError> {
    known_vault(&vault).map_err(|e| e.with_reason(Reason::CredentialsInvalid))?;
    let signature = validate_registration(&body)?;
    let now = Utc::now();
    check_clock(body.timestamp, now)?;

    // Find the certificate this vault issued under the thumbprint.
    let certificate = {
        let state = app.lock_state();
        let v = state
            .vaults
            .get(&vault)
            .ok_or_else(|| ApiError::vault_not_found(&vault).with_reason(Reason::CredentialsInvalid))?;
        if v.identity.resource_id != body.resource_id {
            return Err(ApiError::refused(
                ErrorCode::CredentialsWrongVault,
                format!(
                    "the credentials are for another vault with the name {vault} (resource id {})",
                    body.resource_id
                ),
            ));
        }
        match v.certs.get(&body.thumbprint) {
            Some(cert) => cert.der.clone(),
            None => {
                return Err(match state.thumbprints.get(&body.thumbprint) {
                    Some(other) => ApiError::refused(
                        ErrorCode::CredentialsWrongVault,
                        format!("the credentials were downloaded from vault {other}, not {vault}"),
                    ),
                    None => {
                        ApiError::refused(ErrorCode::CredentialsInvalid, "this vault never issued that certificate")
                    }
                });
            }
        }
    };
    // Outside the lock: a signature check costs tens to hundreds of microseconds.
    if regent_credentials::verify_signature(&certificate, &body.message(&vault), &signature).is_err() {
        return Err(ApiError::refused(
            ErrorCode::CredentialsInvalid,
            "the request's signature does not verify against the certificate: it was not signed with the credentials' private key",
        ));
    }

    let step = {
        let mut state = app.lock_state();
        let v = state.vaults.get_mut(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
        if !v.remember_nonce(&body.nonce, now, now) {
            return Err(nonce_replayed());
        }
        let key = RegistrationKey { thumbprint: body.thumbprint.clone(), machine_name: body.machine_name.clone() };
        if let Some(answered) = v.registrations.get(&body.request_id) {
            if answered.key != key {
                return Err(registration_conflict(&answered.key, &key));
            }
            if answered.removed {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    ErrorCode::MachineRemoved,
                    format!(
                        "the machine this registration made ({}) was removed from vault {vault}: its request id is not \
                         registered again; start a new registration",
                        answered.answer.machine_id
                    ),
                )
                .with_reason(Reason::MachineRemoved));
            }
            Step::Answer(answered.answer.clone())
        } else if let Some(pending) = v.pending.get(&body.request_id) {
            if pending.key != key {
                return Err(registration_conflict(&pending.key, &key));
            }
            Step::Wait(pending.answer.clone())
        } else {
            if v.newest.as_deref() != Some(body.thumbprint.as_str()) {
                return Err(ApiError::refused(
                    ErrorCode::CredentialsSuperseded,
                    "a newer credentials file was downloaded from the vault after this one",
                ));
            }
            if let Some(cert) = v.certs.get(&body.thumbprint) {
                if now > cert.not_after {
                    return Err(ApiError::refused(
                        ErrorCode::CredentialsExpired,
                        format!("the certificate's validity ended at {} by the vault's clock", seconds(cert.not_after)),
                    ));
                }
                if now < cert.not_before {
                    return Err(ApiError::refused(
                        ErrorCode::CredentialsInvalid,
                        format!("the certificate is not valid before {}", seconds(cert.not_before)),
                    ));
                }
            }
            let (sender, receiver) = watch::channel(None);
            v.pending.insert(body.request_id.clone(), PendingRegistration { key, answer: receiver });
            Step::Commit(sender)
        }
    };

    match step {
        Step::Answer(answer) => Ok(axum::Json(answer)),
        Step::Wait(mut pending) => {
            let waited = pending.wait_for(Option::is_some).await.map(|answer| answer.clone());
            match waited {
                Ok(Some(Ok(answer))) => return Ok(axum::Json(answer)),
                Ok(_) => {}
                Err(_) => {
                    // The writer vanished without an answer (it cannot, short of a bug): forget it,
                    // so that the next retry writes the registration instead of waiting forever.
                    if let Some(v) = app.lock_state().vaults.get_mut(&vault)
                        && v.pending.get(&body.request_id).is_some_and(|p| p.answer.same_channel(&pending))
                    {
                        v.pending.remove(&body.request_id);
                    }
                }
            }
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the registration could not be stored; retry",
            )
            .with_reason(Reason::VaultError))
        }
        Step::Commit(sender) => {
            let machine_id = derived_id("machine-id", &vault, body.resource_id, &body.request_id);
            let event = MachineRegistered {
                machine_id: machine_id.to_string(),
                machine_name: body.machine_name.clone(),
                thumbprint: body.thumbprint.clone(),
                request_id: body.request_id.clone(),
                nonce: body.nonce.clone(),
                registered_at: now,
                peer: peer.ip().to_string(),
            };
            // The write runs in its own task: a client that hangs up mid-write must not leave the
            // request pending forever (retries wait on it).
            let task = tokio::spawn(commit_registration(app, vault, body.resource_id, event, sender));
            match task.await {
                Ok(result) => result.map(axum::Json),
                Err(_) => Err(ApiError::internal("the registration task failed")),
            }
        }
    }
}

async fn commit_registration(
    app: Arc<App>,
    vault: String,
    resource_id: i64,
    event: MachineRegistered,
    sender: watch::Sender<Option<Result<Registered, String>>>,
) -> Result<Registered, ApiError> {
    let request_id = event.request_id.clone();
    let event_id = derived_id("machine-registered-event", &vault, resource_id, &request_id);
    let wrapped = VaultEvent::MachineRegistered(event.clone());
    // Through the group committer: durable when it answers, sharing its flush with the
    // registrations that arrived meanwhile.
    let stored = if app.group_commit {
        match wrapped.to_new_event(Some(event_id)) {
            Ok(new_event) => app.committer.commit(stream_of(&vault), new_event).await,
            Err(e) => Err(format!("the event cannot be written: {e}")),
        }
    } else {
        let actor = Actor { user: "regent-vault".into(), host: regent_store::host_name() };
        app.append(&vault, ExpectedVersion::Any, actor, vec![(wrapped.clone(), Some(event_id))])
            .await
            .map_err(|e| e.to_string())
    };
    let outcome = {
        let mut state = app.lock_state();
        let outcome = match stored {
            Ok(()) => match state.apply(&vault, &wrapped) {
                Ok(()) => Ok(Registered {
                    machine_id: event.machine_id.clone(),
                    vault: vault.clone(),
                    registered_at: event.registered_at,
                }),
                Err(detail) => {
                    Err(ApiError::internal(format!("the registration was stored but cannot be applied: {detail}")))
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "a registration could not be written");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreUnavailable,
                    format!("the vault's log cannot be written: {e}"),
                )
                .with_reason(Reason::VaultError))
            }
        };
        // Under the same lock as the answer is recorded: a retry finds either the pending entry or
        // the answer, never neither.
        if let Some(v) = state.vaults.get_mut(&vault) {
            v.pending.remove(&request_id);
        }
        outcome
    };
    sender.send_replace(Some(outcome.as_ref().map(Registered::clone).map_err(|e| e.message.clone())));
    if let Ok(answer) = &outcome {
        tracing::info!(vault = %vault, machine_id = %answer.machine_id, machine_name = %event.machine_name, "machine registered");
    }
    outcome
}

/// A UUID (version 8) derived from the vault (name and resource id) and the request id: a retried
/// request gets the same machine id, and its event the same event id, whatever happened in between.
fn derived_id(purpose: &str, vault: &str, resource_id: i64, request_id: &str) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(b"regent-vault/");
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(vault.as_bytes());
    hasher.update([0]);
    hasher.update(resource_id.to_be_bytes());
    hasher.update(request_id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl App {
    /// What a PIN check's event keeps of the PIN: an HMAC under the PIN key of the request id and
    /// the PIN (the log alone allows no guess of it), to tell a retry from another PIN.
    fn pin_check_digest(&self, request_id: &str, pin: &str) -> [u8; 32] {
        let mut digest = [0u8; 32];
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.admin.pin_key()) {
            mac.update(b"regent-vault pin check\0");
            mac.update(request_id.as_bytes());
            mac.update(b"\0");
            mac.update(pin.as_bytes());
            digest.copy_from_slice(&mac.finalize().into_bytes());
        }
        digest
    }
}

/// What a verified PIN check comes to.
enum PinDecision {
    /// This request id was answered before, for this machine and PIN: the same answer again.
    Again(PinOutcome),
    /// The machine's PIN checks are locked until then: refused, nothing counted.
    Locked(DateTime<Utc>),
    /// Good: use it up.
    Valid { pin_id: Uuid, issued_at: DateTime<Utc> },
    /// It matched an outstanding PIN that expired: refused, not counted (not a guess).
    Expired(DateTime<Utc>),
    /// It matches no outstanding PIN: counted, and locks the machine when it is one too many.
    Wrong { locks_until: Option<DateTime<Utc>> },
}

fn pin_wrong() -> ApiError {
    ApiError::refused(ErrorCode::SecurityPinInvalid, "the security PIN is wrong or was already used; ask for a new one")
}

/// A time in a message: RFC 3339 to the second (`2026-12-02T02:26:28Z`), never its nanoseconds.
fn seconds(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn pin_checks_locked(until: DateTime<Utc>, now: DateTime<Utc>) -> ApiError {
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

/// A PIN check: signed by the machine with the key it registered with (so only the machine's own
/// guesses count against it), idempotent by request id, and counted per machine: the
/// [`protocol::MAX_PIN_FAILURES`]th wrong PIN in a row locks that machine's checks for
/// [`protocol::PIN_LOCKOUT_SECS`]. No guess ever revokes a PIN.
async fn check_pin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
    ApiJson(mut body): ApiJson<PinCheckBody>,
) -> Result<axum::Json<PinValid>, ApiError> {
    let pin = Zeroizing::new(std::mem::take(&mut body.pin));
    // What the agent records for a refusal that names no reason of its own (an unknown vault or
    // machine); a wrong key keeps its `credentials_invalid`.
    let pin_reason = |e: ApiError| if e.reason.is_some() { e } else { e.with_reason(Reason::SecurityPinInvalid) };
    known_vault(&vault).map_err(pin_reason)?;
    valid_request_id(&body.request_id)?;
    valid_machine_id(&body.machine_id)?;
    // A signature over the PIN lets whoever holds it test guesses offline: held like the PIN.
    let signature_text = Zeroizing::new(std::mem::take(&mut body.signature));
    let signature = Zeroizing::new(signed_fields(&body.thumbprint, &body.nonce, &signature_text)?);
    // Checked before the signature: the PIN is one of the signed lines, so it must not hold a line break.
    if pin.len() != 8 || !pin.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::refused(ErrorCode::SecurityPinInvalid, "a security PIN is 8 digits"));
    }
    let now = Utc::now();
    check_clock(body.timestamp, now)?;
    let key = machine_key(&app, &vault, &body.machine_id, &body.thumbprint).map_err(pin_reason)?;
    let message = protocol::pin_check_message(
        &vault,
        &body.machine_id,
        &body.thumbprint,
        &body.request_id,
        &pin,
        body.timestamp,
        &body.nonce,
    );
    verify_machine_signature(&key.certificate, &message, &signature)?;
    let removed = || {
        ApiError::new(
            StatusCode::GONE,
            ErrorCode::MachineRemoved,
            format!("machine {} was removed from vault {vault}; register this server again", body.machine_id),
        )
        .with_reason(Reason::MachineRemoved)
    };
    if key.removed {
        return Err(removed());
    }
    let pin_digest = app.pin_check_digest(&body.request_id, &pin);

    // One check at a time: the state decided on is the state the event is applied to.
    let _serial = app.pin_changes.lock().await;
    let decision = {
        let mut state = app.lock_state();
        let v = state.vaults.get_mut(&vault).ok_or_else(|| pin_reason(ApiError::vault_not_found(&vault)))?;
        if !v.remember_nonce(&body.nonce, now, now) {
            return Err(nonce_replayed());
        }
        // Removed while this check waited for its turn: it uses up no PIN.
        if !v.machines.contains_key(&body.machine_id) {
            return Err(removed());
        }
        let guard = v.pin_guards.get(&body.machine_id).copied().unwrap_or_default();
        if let Some(answered) = v.pin_checks.get(&body.request_id) {
            // Bound to its machine and PIN: the same request id with others is not a retry.
            if answered.machine_id != body.machine_id || !bool::from(answered.pin_digest.ct_eq(&pin_digest)) {
                return Err(request_id_conflict(
                    "this PIN check's request id was first sent by another machine or with another PIN; \
                     a new check needs a new request id",
                ));
            }
            PinDecision::Again(answered.outcome)
        } else if let Some(until) = guard.locked_until.filter(|until| now < *until) {
            PinDecision::Locked(until)
        } else {
            v.prune_pins(now);
            // Compare against every outstanding PIN, each in constant time.
            let matched = v
                .pins
                .iter()
                .find(|(id, record)| bool::from(app.pin_digest(id, &pin).ct_eq(&record.digest)))
                .map(|(id, record)| (*id, record.issued_at, record.expires_at));
            match matched {
                Some((_, _, expires_at)) if now > expires_at => PinDecision::Expired(expires_at),
                Some((pin_id, issued_at, _)) => PinDecision::Valid { pin_id, issued_at },
                None => {
                    let PinGuard { wrong_in_row, .. } = guard;
                    let locks = wrong_in_row.saturating_add(1) >= protocol::MAX_PIN_FAILURES;
                    let locks_until = locks.then(|| now + Duration::seconds(protocol::PIN_LOCKOUT_SECS));
                    PinDecision::Wrong { locks_until }
                }
            }
        }
    };
    let actor = Actor { user: format!("machine:{}", body.machine_id), host: peer.ip().to_string() };
    let record = PinCheckRecord {
        request_id: body.request_id.clone(),
        pin_digest: hex::encode(pin_digest),
        nonce: body.nonce.clone(),
        peer: peer.ip().to_string(),
    };
    match decision {
        PinDecision::Again(PinOutcome::Valid(issued_at)) => Ok(axum::Json(PinValid { issued_at })),
        PinDecision::Again(PinOutcome::Wrong) => {
            let locked = app
                .lock_state()
                .vaults
                .get(&vault)
                .and_then(|v| v.pin_guards.get(&body.machine_id))
                .and_then(|guard| guard.locked_until)
                .filter(|until| now < *until);
            Err(match locked {
                Some(until) => pin_checks_locked(until, now),
                None => pin_wrong(),
            })
        }
        PinDecision::Locked(until) => Err(pin_checks_locked(until, now)),
        PinDecision::Expired(at) => Err(ApiError::refused(
            ErrorCode::SecurityPinInvalid,
            format!("the security PIN expired at {}; ask for a new one", seconds(at)),
        )),
        PinDecision::Valid { pin_id, issued_at } => {
            let event = VaultEvent::PinUsed(PinUsed {
                pin_id,
                machine_id: body.machine_id.clone(),
                used_at: now,
                issued_at: Some(issued_at),
                check: Some(record),
            });
            app.append(&vault, ExpectedVersion::Any, actor, vec![(event.clone(), None)])
                .await
                .map_err(ApiError::store)?;
            app.apply(&vault, &[event])?;
            tracing::info!(vault = %vault, %pin_id, machine_id = %body.machine_id, "security PIN used");
            Ok(axum::Json(PinValid { issued_at }))
        }
        PinDecision::Wrong { locks_until } => {
            let event = VaultEvent::PinCheckFailed(PinCheckFailed {
                machine_id: body.machine_id.clone(),
                check: record,
                failed_at: now,
                locked_until: locks_until,
            });
            // Counted before answering: a restart (or another process) must not forget a guess.
            app.append(&vault, ExpectedVersion::Any, actor, vec![(event.clone(), None)])
                .await
                .map_err(ApiError::store)?;
            app.apply(&vault, &[event])?;
            match locks_until {
                Some(until) => {
                    tracing::warn!(vault = %vault, machine_id = %body.machine_id, %until, "too many wrong security PINs: the machine's PIN checks are locked");
                    Err(pin_checks_locked(until, now))
                }
                None => {
                    tracing::info!(vault = %vault, machine_id = %body.machine_id, "a wrong security PIN");
                    Err(pin_wrong())
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: the agent's log head

/// Refuses what cannot be a machine id (ids are UUIDs; anything printable up to 128 is tolerated).
fn valid_machine_id(machine_id: &str) -> Result<(), ApiError> {
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

fn is_lower_hex64(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Checks the fields every signed agent request carries; returns the decoded signature.
fn signed_fields(thumbprint: &str, nonce: &str, signature: &str) -> Result<Vec<u8>, ApiError> {
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

fn check_clock(timestamp: i64, now: DateTime<Utc>) -> Result<(), ApiError> {
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

fn nonce_replayed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::NonceReplayed,
        "this request was already received (its nonce was used); a retry must be signed again with a fresh nonce",
    )
    .with_reason(Reason::VaultError)
}

/// The certificate a machine's requests are verified with: the one it registered with, and no
/// other. Its expiry and later downloads do not matter here: they limit who may enroll a machine,
/// while this key is the enrolled machine's identity. Any other certificate of the vault would let
/// every holder of a credentials file speak for every machine.
fn machine_certificate(app: &App, vault: &str, machine_id: &str, thumbprint: &str) -> Result<Arc<[u8]>, ApiError> {
    let key = machine_key(app, vault, machine_id, thumbprint)?;
    if key.removed {
        return Err(machine_not_found(vault, machine_id));
    }
    Ok(key.certificate)
}

/// A machine's registration certificate, and whether the machine was removed since. Removed
/// machines are found too, so that a request signed by one can be told so once its signature
/// verifies (and only then: nobody else learns that a machine id was removed).
struct MachineKey {
    certificate: Arc<[u8]>,
    removed: bool,
}

fn machine_not_found(vault: &str, machine_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::MachineNotFound,
        format!("vault {vault} has no machine {machine_id:?} (never registered, or removed)"),
    )
}

fn machine_key(app: &App, vault: &str, machine_id: &str, thumbprint: &str) -> Result<MachineKey, ApiError> {
    machine_key_in(&app.lock_state(), vault, machine_id, thumbprint)
}

fn machine_key_in(
    state: &ServiceState,
    vault: &str,
    machine_id: &str,
    thumbprint: &str,
) -> Result<MachineKey, ApiError> {
    let v = state.vaults.get(vault).ok_or_else(|| ApiError::vault_not_found(vault))?;
    let (machine, removed) = match (v.machines.get(machine_id), v.removed.get(machine_id)) {
        (Some(machine), _) => (machine, false),
        (None, Some(machine)) => (machine, true),
        (None, None) => return Err(machine_not_found(vault, machine_id)),
    };
    if machine.thumbprint != thumbprint {
        return Err(match state.thumbprints.get(thumbprint) {
            Some(other) if other != vault => ApiError::refused(
                ErrorCode::CredentialsWrongVault,
                format!("the request was signed with credentials of vault {other}, not {vault}"),
            ),
            _ => ApiError::refused(
                ErrorCode::CredentialsInvalid,
                format!(
                    "machine {machine_id} registered with another certificate; only the key it registered with speaks for it"
                ),
            ),
        });
    }
    let certificate =
        v.certs.get(thumbprint).map(|cert| cert.der.clone()).ok_or_else(|| {
            ApiError::refused(ErrorCode::CredentialsInvalid, "this vault never issued that certificate")
        })?;
    Ok(MachineKey { certificate, removed })
}

fn verify_machine_signature(certificate: &[u8], message: &[u8], signature: &[u8]) -> Result<(), ApiError> {
    regent_credentials::verify_signature(certificate, message, signature).map_err(|_| {
        ApiError::refused(
            ErrorCode::CredentialsInvalid,
            "the request's signature does not verify: it was not signed with the key this machine registered with",
        )
    })
}

/// What a verified report comes to.
enum HeadDecision {
    /// Nothing anchored yet, or past the anchored head with records that lead from it: anchor it.
    Anchor,
    /// The head anchored already: the same answer again, nothing written.
    Same(Anchor),
    /// Past the anchored head (at this position) with records that do not start right after it:
    /// ask again, nothing written.
    BaseRequired(u64),
    /// Refused, with the protocol code, what was wrong with the records (when that was it) and the
    /// head the vault holds; recorded unless `again` (the same refused head as the last refusal: a
    /// retry adds no evidence).
    Refuse { code: ErrorCode, detail: Option<String>, held_position: u64, held_hash: String, again: bool },
}

/// What the records of a report past the anchored head come to, walked from the anchor.
enum ProofWalk {
    /// They lead from the anchored head to the reported one.
    Extends,
    /// They do not start right after the anchored position (none sent, or sent against an older
    /// anchor).
    StartsElsewhere,
    /// The first one does not follow the anchored record: the agent's log holds another record at
    /// the anchored position.
    Forked(String),
    /// They follow the anchor but do not chain up to the reported head.
    Broken(String),
    /// One is not a record at all.
    Malformed(String),
}

/// Refuses a report's records before anything else is looked at: too many, too large, or with a
/// line break inside (which would make their digest ambiguous; a stored record never holds one).
fn check_proof_shape(records: &[String]) -> Result<(), ApiError> {
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

fn proof_malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LogHeadProofMalformed, message)
}

/// Walks a report's records from the anchored head with the same walker the agent's own verify
/// uses: each must be the next position, name the hash before it, and hash to its stored hash;
/// the last must be the reported head. The vault computes every hash itself: nothing the agent
/// says about its log is taken on its word.
fn walk_proof(held: &HeldAnchor, records: &[String], reported: Head) -> Result<ProofWalk, ApiError> {
    let held_hash = Digest32::from_hex(&held.hash)
        .ok_or_else(|| ApiError::internal("the anchored head's hash cannot be read; restart the service"))?;
    if records.is_empty() {
        return Ok(ProofWalk::StartsElsewhere);
    }
    let mut walker = ChainWalker::resume(Head { position: held.position, hash: held_hash });
    for (index, record) in records.iter().enumerate() {
        if let Err(failure) = walker.push(None, record.as_bytes()) {
            return Ok(match (index, &failure.problem) {
                (_, Problem::Malformed { .. }) => ProofWalk::Malformed(failure.to_string()),
                (0, Problem::Gap { .. } | Problem::PositionMismatch { .. }) => ProofWalk::StartsElsewhere,
                (0, Problem::BrokenLink { .. }) => ProofWalk::Forked(failure.to_string()),
                _ => ProofWalk::Broken(failure.to_string()),
            });
        }
    }
    let end = walker.head();
    Ok(if end == reported {
        ProofWalk::Extends
    } else if end.position == reported.position {
        ProofWalk::Broken(format!(
            "record {}: it hashes to {}…, not to the reported head's hash {}…",
            end.position,
            &end.hash.to_hex()[..16],
            &reported.hash.to_hex()[..16]
        ))
    } else {
        ProofWalk::Broken(format!(
            "the records end at position {}, not at the reported head {}",
            end.position, reported.position
        ))
    })
}

async fn report_log_head(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<HeadReport>,
) -> Result<axum::Json<Anchor>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    let signature = signed_fields(&body.thumbprint, &body.nonce, &body.signature)?;
    if body.position == 0 {
        return Err(ApiError::bad_request("position must be 1 or more: a registered machine's log is never empty"));
    }
    let reported_hash = Digest32::from_hex(&body.hash)
        .filter(|_| is_lower_hex64(&body.hash))
        .ok_or_else(|| ApiError::bad_request("hash must be 64 lowercase hex digits"))?;
    let reported = Head { position: body.position, hash: reported_hash };
    check_proof_shape(&body.records)?;
    let now = Utc::now();
    check_clock(body.timestamp, now)?;
    let certificate = machine_certificate(&app, &vault, &machine_id, &body.thumbprint)?;
    verify_machine_signature(&certificate, &body.message(&vault, &machine_id), &signature)?;

    // One report at a time: the anchor read here is still the anchor when the decision is applied.
    let _serial = app.anchor_changes.lock().await;
    let records_sha256 = (!body.records.is_empty()).then(|| protocol::records_digest(&body.records));
    let (head, same, last_refusal) = {
        let mut state = app.lock_state();
        let v = state.vaults.get_mut(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
        if !v.remember_nonce(&body.nonce, now, now) {
            return Err(nonce_replayed());
        }
        let anchor = v.anchors.get(&machine_id);
        (
            anchor.and_then(|a| a.head.clone()),
            anchor.and_then(|a| a.anchor(&machine_id)),
            anchor.and_then(|a| a.last_refusal.clone().map(|refusal| (refusal, a.last_refused_records.clone()))),
        )
    };
    let refuse = |code: ErrorCode, detail: Option<String>, held: &HeldAnchor| {
        let again = last_refusal.as_ref().is_some_and(|(last, last_records)| {
            last.error == code
                && last.position == body.position
                && last.hash == body.hash
                && *last_records == records_sha256
        });
        HeadDecision::Refuse { code, detail, held_position: held.position, held_hash: held.hash.clone(), again }
    };
    // Walked outside the state's lock (up to a mebibyte of records to hash).
    let decision = match &head {
        // Trust on first use: with nothing anchored there is nothing to walk records from.
        None if !body.records.is_empty() => {
            return Err(proof_malformed(
                "no head is anchored for this machine yet: the first report carries no records",
            ));
        }
        None => HeadDecision::Anchor,
        Some(held) if body.position > held.position => match walk_proof(held, &body.records, reported)? {
            ProofWalk::Extends => HeadDecision::Anchor,
            ProofWalk::StartsElsewhere => HeadDecision::BaseRequired(held.position),
            ProofWalk::Forked(detail) => refuse(ErrorCode::LogHeadConflict, Some(detail), held),
            ProofWalk::Broken(detail) => refuse(ErrorCode::LogHeadProofInvalid, Some(detail), held),
            ProofWalk::Malformed(detail) => return Err(proof_malformed(format!("the records sent: {detail}"))),
        },
        Some(held) if body.position == held.position && body.hash == held.hash => match same {
            Some(head) => HeadDecision::Same(head),
            None => HeadDecision::Anchor,
        },
        Some(held) if body.position == held.position => refuse(ErrorCode::LogHeadConflict, None, held),
        Some(held) => refuse(ErrorCode::LogHeadRegressed, None, held),
    };
    let actor = Actor { user: format!("machine:{machine_id}"), host: peer.ip().to_string() };
    match decision {
        HeadDecision::Same(head) => Ok(axum::Json(head)),
        HeadDecision::Anchor => {
            let event = VaultEvent::LogHeadAnchored(LogHeadAnchored {
                machine_id: machine_id.clone(),
                position: body.position,
                hash: body.hash.clone(),
                nonce: body.nonce.clone(),
                anchored_at: now,
                peer: peer.ip().to_string(),
            });
            app.append(&vault, ExpectedVersion::Any, actor, vec![(event.clone(), None)])
                .await
                .map_err(ApiError::store)?;
            app.apply(&vault, &[event])?;
            tracing::info!(vault = %vault, machine_id = %machine_id, position = body.position, records = body.records.len(), "log head anchored");
            let state = app.lock_state();
            state
                .vaults
                .get(&vault)
                .and_then(|v| v.anchors.get(&machine_id))
                .and_then(|a| a.anchor(&machine_id))
                .map(axum::Json)
                .ok_or_else(|| ApiError::internal("the log head was stored but cannot be read back"))
        }
        HeadDecision::BaseRequired(held_position) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::LogHeadBaseRequired,
            format!(
                "the vault anchored head {held_position} for this machine: a later head must carry the records from \
                 position {} on, as the agent's log holds them; read the anchor and report again",
                held_position + 1
            ),
        )),
        HeadDecision::Refuse { code, detail, held_position, held_hash, again } => {
            if !again {
                let event = VaultEvent::LogHeadRefused(LogHeadRefused {
                    machine_id: machine_id.clone(),
                    error: code.clone(),
                    position: body.position,
                    hash: body.hash.clone(),
                    records: body.records.len() as u64,
                    records_sha256: records_sha256.clone(),
                    detail: detail.clone(),
                    anchored_position: held_position,
                    anchored_hash: held_hash.clone(),
                    nonce: body.nonce.clone(),
                    refused_at: now,
                    peer: peer.ip().to_string(),
                });
                // Recorded before answering: the refusal is the evidence, it must not be lost.
                app.append(&vault, ExpectedVersion::Any, actor, vec![(event.clone(), None)])
                    .await
                    .map_err(ApiError::store)?;
                app.apply(&vault, &[event])?;
                tracing::warn!(vault = %vault, machine_id = %machine_id, position = body.position, held = held_position, code = code.code(), "log head refused");
            }
            let held = format!("{held_position}:{}…", held_hash.chars().take(16).collect::<String>());
            let message = match &code {
                ErrorCode::LogHeadConflict => format!(
                    "the vault anchored head {held} for this machine, and the agent's log holds another record at \
                     position {held_position}: it was rewritten, or restored from a copy and changed since"
                ),
                ErrorCode::LogHeadProofInvalid => format!(
                    "the vault anchored head {held} for this machine, and the records sent after it do not lead to \
                     head {} ({}): the agent's log is damaged or was altered; run `regent audit verify`",
                    body.position,
                    detail.as_deref().unwrap_or("they do not chain")
                ),
                _ => format!(
                    "the vault anchored head {held} for this machine, and the agent's log ends at {}: {} \
                     missing from it (cut off, or an older copy restored)",
                    body.position,
                    if body.position + 1 == held_position {
                        format!("record {held_position} is")
                    } else {
                        format!("records {}-{held_position} are", body.position + 1)
                    }
                ),
            };
            Err(ApiError::new(StatusCode::CONFLICT, code, message))
        }
    }
}

async fn read_log_head(
    State(app): State<Arc<App>>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Anchor>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    let field = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).ok_or_else(|| {
            ApiError::bad_request(format!(
                "reading a log head is signed by the machine: send the headers {}",
                SIGNATURE_HEADERS.join(", ")
            ))
        })
    };
    let [thumbprint, timestamp, nonce, signature] = SIGNATURE_HEADERS;
    let (thumbprint, timestamp, nonce, signature) =
        (field(thumbprint)?, field(timestamp)?, field(nonce)?, field(signature)?);
    let signature = signed_fields(thumbprint, nonce, signature)?;
    let timestamp: i64 = timestamp.parse().map_err(|_| ApiError::bad_request("the timestamp must be Unix seconds"))?;
    let now = Utc::now();
    check_clock(timestamp, now)?;
    let certificate = machine_certificate(&app, &vault, &machine_id, thumbprint)?;
    let message = protocol::log_head_read_message(&vault, &machine_id, thumbprint, timestamp, nonce);
    verify_machine_signature(&certificate, &message, &signature)?;
    let mut state = app.lock_state();
    let v = state.vaults.get_mut(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
    if !v.remember_nonce(nonce, now, now) {
        return Err(nonce_replayed());
    }
    v.anchors.get(&machine_id).and_then(|a| a.anchor(&machine_id)).map(axum::Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::LogHeadNotFound,
            format!("machine {machine_id} has not anchored a log head at vault {vault} yet"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers: a machine unregisters itself

/// What a verified unregistration comes to.
#[derive(Debug, PartialEq, Eq)]
enum UnregisterDecision {
    /// A live machine: remove it (recorded).
    Remove,
    /// Removed before (by itself or the admin), at this time: the same answer, nothing written.
    AlreadyRemoved(DateTime<Utc>),
}

/// The rules of an unregistration, pure over the folded state: the machine must exist (live or
/// removed), the request be signed by the key it registered with, within the clock window, with a
/// nonce not seen. The caller remembers the nonce and records the removal.
fn decide_unregistration(
    state: &ServiceState,
    vault: &str,
    machine_id: &str,
    body: &UnregisterBody,
    signature: &[u8],
    now: DateTime<Utc>,
) -> Result<UnregisterDecision, ApiError> {
    check_clock(body.timestamp, now)?;
    let key = machine_key_in(state, vault, machine_id, &body.thumbprint)?;
    verify_machine_signature(&key.certificate, &body.message(vault, machine_id), signature)?;
    let v = state.vaults.get(vault).ok_or_else(|| ApiError::vault_not_found(vault))?;
    if v.nonce_seen(&body.nonce) {
        return Err(nonce_replayed());
    }
    if key.removed {
        // Removed machines from logs that did not record when: the time is unknown, now will do.
        return Ok(UnregisterDecision::AlreadyRemoved(v.removed_at.get(machine_id).copied().unwrap_or(now)));
    }
    Ok(UnregisterDecision::Remove)
}

/// A machine unregisters: signed by the key it registered with, idempotent (a machine removed
/// already is answered with its removal), recorded as `MachineRemoved` before the answer.
async fn unregister_machine(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UnregisterBody>,
) -> Result<axum::Json<Unregistered>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    valid_request_id(&body.request_id)?;
    let signature = signed_fields(&body.thumbprint, &body.nonce, &body.signature)?;
    let now = Utc::now();
    // With the admin's changes: a removal by the admin and the machine's own are written in turn.
    let _serial = app.admin_changes.lock().await;
    let decision = {
        let mut state = app.lock_state();
        let decision = decide_unregistration(&state, &vault, &machine_id, &body, &signature, now)?;
        let v = state.vaults.get_mut(&vault).ok_or_else(|| ApiError::vault_not_found(&vault))?;
        if !v.remember_nonce(&body.nonce, now, now) {
            return Err(nonce_replayed());
        }
        decision
    };
    let answer =
        |removed_at| axum::Json(Unregistered { machine_id: machine_id.clone(), vault: vault.clone(), removed_at });
    match decision {
        UnregisterDecision::AlreadyRemoved(at) => Ok(answer(at)),
        UnregisterDecision::Remove => {
            let event = VaultEvent::MachineRemoved(MachineRemoved {
                machine_id: machine_id.clone(),
                removed_at: now,
                unregistration: Some(UnregistrationRecord {
                    request_id: body.request_id.clone(),
                    nonce: body.nonce.clone(),
                    peer: peer.ip().to_string(),
                }),
            });
            let actor = Actor { user: format!("machine:{machine_id}"), host: peer.ip().to_string() };
            app.append(&vault, ExpectedVersion::Any, actor, vec![(event.clone(), None)])
                .await
                .map_err(ApiError::store)?;
            app.apply(&vault, &[event])?;
            tracing::info!(vault = %vault, machine_id = %machine_id, "machine unregistered itself");
            Ok(answer(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_eight_digits() {
        for _ in 0..200 {
            let pin = new_pin().unwrap();
            assert_eq!(pin.len(), 8);
            assert!(pin.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn derived_ids_depend_on_vault_and_request() {
        let a = derived_id("machine-id", "v", 1, "r1");
        assert_eq!(a, derived_id("machine-id", "v", 1, "r1"));
        assert_ne!(a, derived_id("machine-id", "v", 1, "r2"));
        assert_ne!(a, derived_id("machine-id", "w", 1, "r1"));
        assert_ne!(a, derived_id("machine-id", "v", 2, "r1"));
        assert_ne!(a, derived_id("machine-registered-event", "v", 1, "r1"));
        // The separators keep fields apart.
        assert_ne!(derived_id("p", "ab", 1, "c"), derived_id("p", "a", 1, "bc"));
    }

    /// A vault `v` with machine `m-1` registered with `signer`'s certificate; `other`: a second
    /// download of the same vault, which does not speak for `m-1`.
    fn unregistration_fixture()
    -> (ServiceState, regent_credentials::VaultCredentials, regent_credentials::VaultCredentials) {
        let identity = VaultIdentity {
            resource_name: "v".into(),
            subscription_id: "s".into(),
            resource_group: "g".into(),
            location: "l".into(),
            resource_id: 7,
            resource_type: "Vaults".into(),
            provider_namespace: "p".into(),
        };
        let mut state = ServiceState::default();
        let now = Utc::now();
        state
            .apply("v", &VaultEvent::VaultCreated(VaultCreated { identity: identity.clone(), created_at: now }))
            .unwrap();
        let mut downloads = Vec::new();
        for _ in 0..2 {
            let issued = regent_credentials::issue(&IssueRequest {
                identity: identity.clone(),
                aad_authority: String::new(),
                aad_tenant_id: String::new(),
                service_principal_client_id: String::new(),
                endpoint: "http://127.0.0.1:9".into(),
                agent_links: Vec::new(),
                not_before: now - Duration::minutes(10),
                not_after: now + Duration::hours(1),
            })
            .unwrap();
            let parsed = regent_credentials::parse(&issued.file_name, issued.xml.as_bytes()).unwrap();
            let event = VaultEvent::CredentialsIssued(CredentialsIssued {
                thumbprint: parsed.certificate.thumbprint.clone(),
                certificate: STANDARD.encode(&parsed.certificate_der),
                not_before: parsed.certificate.not_before,
                not_after: parsed.certificate.not_after,
                file_name: issued.file_name.clone(),
                issued_at: now,
            });
            state.apply("v", &event).unwrap();
            downloads.push(parsed);
        }
        let registered = MachineRegistered {
            machine_id: "m-1".into(),
            machine_name: "srv".into(),
            thumbprint: downloads[0].certificate.thumbprint.clone(),
            request_id: "r-1".into(),
            nonce: "registration-nonce-0".into(),
            registered_at: now,
            peer: String::new(),
        };
        state.apply("v", &VaultEvent::MachineRegistered(registered)).unwrap();
        let other = downloads.pop().unwrap();
        (state, downloads.pop().unwrap(), other)
    }

    fn unregistration(
        signer: &regent_credentials::VaultCredentials,
        thumbprint: &str,
        nonce: &str,
    ) -> (UnregisterBody, Vec<u8>) {
        let timestamp = Utc::now().timestamp();
        let message = protocol::unregistration_message("v", "m-1", thumbprint, "u-1", timestamp, nonce);
        let signature = signer.private_key.sign(&message).unwrap();
        let body = UnregisterBody {
            request_id: "u-1".into(),
            thumbprint: thumbprint.into(),
            timestamp,
            nonce: nonce.into(),
            signature: STANDARD.encode(&signature),
        };
        (body, signature)
    }

    #[test]
    fn an_unregistration_is_decided_by_the_machines_own_key_once_per_nonce_and_again_after_removal() {
        let (mut state, machine, other) = unregistration_fixture();
        let thumbprint = machine.certificate.thumbprint.clone();
        let now = Utc::now();
        let decide = |state: &ServiceState, body: &UnregisterBody, signature: &[u8]| {
            decide_unregistration(state, "v", "m-1", body, signature, now).map_err(|e| e.code)
        };

        // Signed by another key of the same vault, or claiming another certificate: refused.
        let (body, signature) = unregistration(&other, &thumbprint, "nonce-wrong-key-0001");
        assert_eq!(decide(&state, &body, &signature), Err(ErrorCode::CredentialsInvalid));
        let (body, signature) = unregistration(&other, &other.certificate.thumbprint, "nonce-other-cert-001");
        assert_eq!(decide(&state, &body, &signature), Err(ErrorCode::CredentialsInvalid));
        // Unknown machine.
        let (body, signature) = unregistration(&machine, &thumbprint, "nonce-unknown-000001");
        let unknown = decide_unregistration(&state, "v", "m-2", &body, &signature, now).map_err(|e| e.code);
        assert_eq!(unknown, Err(ErrorCode::MachineNotFound));

        // The machine's own: removed.
        let (body, signature) = unregistration(&machine, &thumbprint, "nonce-first-00000001");
        assert_eq!(decide(&state, &body, &signature), Ok(UnregisterDecision::Remove));
        // Out of the clock window: refused.
        let late = decide_unregistration(&state, "v", "m-1", &body, &signature, now + Duration::hours(1));
        assert_eq!(late.map_err(|e| e.code), Err(ErrorCode::ClockSkew));

        // Once its nonce is seen, the same request is a replay.
        assert!(state.vaults.get_mut("v").unwrap().remember_nonce(&body.nonce, now, now));
        assert_eq!(decide(&state, &body, &signature), Err(ErrorCode::NonceReplayed));

        // Recorded: a retry (signed afresh) gets the first answer, the time of the removal.
        let removed_at = now - Duration::seconds(5);
        let removal = MachineRemoved {
            machine_id: "m-1".into(),
            removed_at,
            unregistration: Some(UnregistrationRecord {
                request_id: "u-1".into(),
                nonce: body.nonce.clone(),
                peer: String::new(),
            }),
        };
        state.apply("v", &VaultEvent::MachineRemoved(removal)).unwrap();
        let (retry, retry_signature) = unregistration(&machine, &thumbprint, "nonce-retry-00000001");
        assert_eq!(decide(&state, &retry, &retry_signature), Ok(UnregisterDecision::AlreadyRemoved(removed_at)));
        // Folded from the log, the first nonce stays refused.
        assert_eq!(decide(&state, &body, &signature), Err(ErrorCode::NonceReplayed));
        // The removed machine's key still does not let another key speak for it.
        let (body, signature) = unregistration(&other, &thumbprint, "nonce-wrong-key-0002");
        assert_eq!(decide(&state, &body, &signature), Err(ErrorCode::CredentialsInvalid));
    }
}
