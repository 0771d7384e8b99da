//! The HTTP layer: the router, built from [`protocol::ROUTES`] alone, and one handler per route.
//! A handler checks the request's shape, authenticates it (admin routes: the token, before the
//! body is read; every other route but health: the request's signed fields, verified against a
//! certificate the vault issued, and nothing is remembered or written for a request before that),
//! then hands the decision ([`crate::rules`]) to the storage ([`crate::storage`]), and maps what
//! comes back to an answer. Every change is durable before it is answered, on either storage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use regent_credentials::{IssueRequest, VaultIdentity};
use regent_store::{Digest32, Head};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::api::{
    self, ApiError, ApiJson, ApiPath, ApiQuery, known_vault, signed_fields, valid_machine_id, valid_request_id,
};
use crate::events::{CredentialsIssued, PinIssued};
use crate::protocol::{
    self, Anchor, CreateVault, CredentialsFile, DownloadCredentials, ErrorCode, HeadReport, Health, IssuedPin,
    MachineInfo, Machines, PinCheckBody, PinValid, Reason, RegisterBody, Registered, RouteId, SERVICE_HEADER,
    SIGNATURE_HEADERS, UnregisterBody, Unregistered, VaultInfo, valid_vault_name,
};
use crate::rules::{self, Scope};
use crate::storage::{Backend, Storage};
use crate::token::AdminKey;
use crate::transparency::Notary;
use crate::{audit, fleet};

pub(crate) struct App {
    pub storage: Backend,
    admin: AdminKey,
    /// What credentials name as `IdMgmtRestEndpoint` when set; otherwise the address the admin
    /// reached the service at.
    public_url: Option<String>,
    /// `http` or `https`.
    scheme: &'static str,
    /// The address bound, as a URL: the last resort for `IdMgmtRestEndpoint`.
    bound_url: Mutex<String>,
    /// Who an export of the log says wrote it (`ServeConfig::writer`).
    pub(crate) writer: String,
    /// `ServeConfig::keep_records`: off only to measure what keeping records costs.
    pub(crate) keep_records: bool,
    /// `ServeConfig::log_heads`: off only to measure what the transparency log costs.
    pub(crate) log_heads: bool,
    /// Signs the transparency log's checkpoints.
    pub(crate) notary: Notary,
}

impl App {
    pub(crate) fn new(
        storage: Backend,
        admin: AdminKey,
        notary: Notary,
        public_url: Option<String>,
        tls: bool,
        writer: String,
    ) -> App {
        App {
            notary,
            storage,
            admin,
            public_url,
            scheme: if tls { "https" } else { "http" },
            bound_url: Mutex::new(String::new()),
            writer,
            keep_records: true,
            log_heads: true,
        }
    }

    pub(crate) fn set_bound(&self, addr: SocketAddr) {
        let host = reachable(addr);
        *self.bound_url.lock().unwrap_or_else(|p| p.into_inner()) = format!("{}://{host}", self.scheme);
    }

    /// Whether the service can serve (`GET /readyz`): what its storage says.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.storage.ready().await
    }

    /// What an outstanding PIN is recorded as: an HMAC under the PIN key of its id and the PIN.
    fn pin_digest(&self, pin_id: &Uuid, pin: &str) -> [u8; 32] {
        let mut digest = [0u8; 32];
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.admin.pin_key()) {
            mac.update(pin_id.as_bytes());
            mac.update(pin.as_bytes());
            digest.copy_from_slice(&mac.finalize().into_bytes());
        }
        digest
    }

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
            RouteId::ExportLog => on(filter, crate::export::export_log),
            RouteId::ExportMachineLog => on(filter, crate::export::export_machine_log),
            RouteId::ListFleet => on(filter, list_fleet),
            RouteId::FleetAudit => on(filter, fleet_audit),
            RouteId::Checkpoint => on(filter, checkpoint),
            RouteId::MachineProof => on(filter, machine_proof),
            RouteId::CheckpointConsistency => on(filter, checkpoint_consistency),
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

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("the system random source failed"))?;
    Ok(bytes)
}

/// The time of a request, to the microsecond: what PostgreSQL keeps of a time, so that a time
/// read back from either storage is the time answered first.
fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

fn peer_ip(peer: SocketAddr) -> String {
    peer.ip().to_string()
}

// ---------------------------------------------------------------------------------------------
// Handlers: anyone

async fn health(State(app): State<Arc<App>>) -> axum::Json<Health> {
    axum::Json(Health {
        service: "regent-vault".into(),
        protocol: protocol::PROTOCOL_VERSION,
        checkpoint_key: Some(app.notary.verifier().to_string()),
    })
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
    let subscription = uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid();
    // A positive, non-zero 63-bit id, as the real portal's ResourceId.
    let resource_id = (i64::from_be_bytes(random_bytes::<8>()?) & i64::MAX).max(1);
    let identity = VaultIdentity {
        resource_name: body.name.clone(),
        subscription_id: subscription.to_string(),
        resource_group: "regent-vaults".into(),
        location: "local".into(),
        resource_id,
        resource_type: "Vaults".into(),
        provider_namespace: "Microsoft.RecoveryServices".into(),
    };
    let now = now_micros();
    let actor = rules::admin_actor(&peer_ip(peer));
    let info = app
        .storage
        .transact(
            Scope::vault(&body.name),
            now,
            Box::new(move |facts| rules::create_vault(facts, &identity, now, actor.clone())),
        )
        .await?;
    tracing::info!(vault = %body.name, "vault created");
    Ok((StatusCode::CREATED, axum::Json(info)))
}

async fn get_vault(
    State(app): State<Arc<App>>,
    ApiPath(vault): ApiPath<String>,
) -> Result<axum::Json<VaultInfo>, ApiError> {
    known_vault(&vault)?;
    let info = app.storage.vault_info(&vault).await?.ok_or_else(|| ApiError::vault_not_found(&vault))?;
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
    let identity = app
        .storage
        .read(&Scope::vault(&vault))
        .await?
        .vault
        .map(|v| v.identity)
        .ok_or_else(|| ApiError::vault_not_found(&vault))?;
    let now = now_micros();
    let request = IssueRequest {
        identity,
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: app.endpoint_for(&headers),
        agent_links: Vec::new(),
        // The agent trusts this key, from the file the administrator downloaded, not the TLS
        // connection it registers over.
        transparency_log_key: Some(app.notary.verifier().to_string()),
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
    let event = CredentialsIssued {
        thumbprint: facts.thumbprint.clone(),
        certificate: STANDARD.encode(&certificate_der),
        not_before: facts.not_before,
        not_after: facts.not_after,
        file_name: issued.file_name.clone(),
        issued_at: now,
    };
    let actor = rules::admin_actor(&peer_ip(peer));
    let name = vault.clone();
    app.storage
        .transact(
            Scope::vault(&vault),
            now,
            Box::new(move |f| rules::issue_credentials(f, &name, &event, actor.clone())),
        )
        .await?;
    tracing::info!(vault = %vault, thumbprint = %facts.thumbprint, not_after = %facts.not_after, "credentials issued");
    Ok(axum::Json(CredentialsFile {
        file_name: issued.file_name,
        xml: issued.xml.as_str().to_string(),
        thumbprint: facts.thumbprint,
        not_before: facts.not_before,
        not_after: facts.not_after,
    }))
}

async fn issue_pin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<IssuedPin>), ApiError> {
    known_vault(&vault)?;
    let pin = Zeroizing::new(new_pin()?);
    let pin_id = Uuid::now_v7();
    let issued_at = now_micros();
    let expires_at = issued_at + Duration::seconds(protocol::PIN_VALIDITY_SECS);
    let event = PinIssued { pin_id, digest: hex::encode(app.pin_digest(&pin_id, &pin)), issued_at, expires_at };
    let actor = rules::admin_actor(&peer_ip(peer));
    let name = vault.clone();
    app.storage
        .transact(Scope::vault(&vault), issued_at, Box::new(move |f| rules::issue_pin(f, &name, &event, actor.clone())))
        .await?;
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
    known_vault(&vault)?;
    let machines = app.storage.machines(&vault).await?.ok_or_else(|| ApiError::vault_not_found(&vault))?;
    Ok(axum::Json(Machines { vault, machines }))
}

/// `?limit=N&after=CURSOR` of a fleet page.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetQuery {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_fleet(
    State(app): State<Arc<App>>,
    ApiPath(vault): ApiPath<String>,
    ApiQuery(query): ApiQuery<FleetQuery>,
) -> Result<axum::Json<protocol::Fleet>, ApiError> {
    known_vault(&vault)?;
    let limit = query.limit.unwrap_or(protocol::DEFAULT_FLEET_PAGE);
    if !(1..=protocol::MAX_FLEET_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to {}", protocol::MAX_FLEET_PAGE)));
    }
    let after = match &query.after {
        Some(text) => Some(fleet::Cursor::parse(text).ok_or_else(|| {
            ApiError::bad_request("after must be the `next` of an earlier page (<RFC 3339 time>/<machine id>)")
        })?),
        None => None,
    };
    let entries =
        app.storage.fleet(&vault, after, limit + 1).await?.ok_or_else(|| ApiError::vault_not_found(&vault))?;
    let now = now_micros();
    let mut machines: Vec<protocol::FleetMachine> =
        entries.iter().map(|e| fleet::row(&e.info, &e.anchor, e.fleet.as_ref(), now)).collect();
    // One more than asked for says whether a next page exists.
    let next = (machines.len() > limit).then(|| {
        machines.truncate(limit);
        machines.last().map(|m| fleet::Cursor::after(m).to_text())
    });
    Ok(axum::Json(protocol::Fleet { vault, machines, next: next.flatten() }))
}

/// The filters and page of a fleet audit (see [`protocol::FleetAudit`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    machine: Option<String>,
    since: Option<String>,
    until: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    outcome: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Kept records read per round while filling a page: memory stays at about this many records,
/// however few match.
const AUDIT_SCAN: usize = 512;

async fn fleet_audit(
    State(app): State<Arc<App>>,
    ApiPath(vault): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<axum::Json<protocol::FleetAudit>, ApiError> {
    known_vault(&vault)?;
    let limit = query.limit.unwrap_or(protocol::DEFAULT_AUDIT_PAGE);
    if !(1..=protocol::MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to {}", protocol::MAX_AUDIT_PAGE)));
    }
    if let Some(machine) = &query.machine {
        valid_machine_id(machine)?;
    }
    let time = |name: &str, text: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        text.as_deref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| ApiError::bad_request(format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    };
    let (since, until) = (time("since", &query.since)?, time("until", &query.until)?);
    let word = |text: &str| {
        !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if query.kind.as_deref().is_some_and(|kind| !word(kind)) {
        return Err(ApiError::bad_request(
            "kind must be a step, an outcome or an event kind (letters, digits, _ and -)",
        ));
    }
    if query.outcome.as_deref().is_some_and(|outcome| !["accepted", "refused"].contains(&outcome)) {
        return Err(ApiError::bad_request("outcome must be accepted or refused"));
    }
    if query
        .actor
        .as_deref()
        .is_some_and(|actor| actor.is_empty() || actor.len() > 512 || actor.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("actor must be 1 to 512 characters, as the audit shows it (user@host)"));
    }
    let mut after = match &query.after {
        Some(text) => Some(audit::AuditCursor::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "after must be the `next` of an earlier page (<RFC 3339 time>/<machine id>/<position>)",
            )
        })?),
        None => None,
    };
    let filter = audit::EntryFilter {
        engine: regent_engine::projections::AuditFilter {
            since,
            before: until,
            kind: query.kind.clone(),
            ..Default::default()
        },
        actor: query.actor.clone(),
        outcome: query.outcome.clone(),
    };
    let mut entries: Vec<(audit::AuditCursor, protocol::FleetAuditEntry)> = Vec::new();
    'scan: loop {
        let scan =
            audit::AuditScan { machine: query.machine.clone(), since, until, after: after.clone(), limit: AUDIT_SCAN };
        let kept = app.storage.kept_records(&vault, &scan).await?.ok_or_else(|| ApiError::vault_not_found(&vault))?;
        for record in &kept {
            after = Some(record.cursor());
            if let Some(entry) = audit::entry(record, &filter)? {
                entries.push((record.cursor(), entry));
                // One more than asked for says whether a next page exists.
                if entries.len() > limit {
                    break 'scan;
                }
            }
        }
        if kept.len() < AUDIT_SCAN {
            break;
        }
    }
    let next = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        entries.last().map(|(cursor, _)| cursor.to_text())
    });
    Ok(axum::Json(protocol::FleetAudit {
        vault,
        entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        next: next.flatten(),
    }))
}

async fn remove_machine(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<MachineInfo>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    let now = now_micros();
    let actor = rules::admin_actor(&peer_ip(peer));
    let scope = Scope { machine: Some(machine_id.clone()), ..Scope::vault(&vault) };
    let (name, id) = (vault.clone(), machine_id.clone());
    let machine = app
        .storage
        .transact(scope, now, Box::new(move |f| rules::remove_machine(f, &name, &id, now, actor.clone())))
        .await?;
    tracing::info!(vault = %vault, machine_id = %machine_id, "machine removed");
    Ok(axum::Json(machine))
}

// ---------------------------------------------------------------------------------------------
// Handlers: the agent

fn verify_machine_signature(certificate: &[u8], message: &[u8], signature: &[u8]) -> Result<(), ApiError> {
    regent_credentials::verify_signature(certificate, message, signature).map_err(|_| {
        ApiError::refused(
            ErrorCode::CredentialsInvalid,
            "the request's signature does not verify: it was not signed with the key this machine registered with",
        )
    })
}

/// The facts a machine's signed request is authenticated against: the machine and the certificate
/// the request names.
async fn machine_facts(app: &App, vault: &str, machine_id: &str, thumbprint: &str) -> Result<rules::Facts, ApiError> {
    let scope = Scope {
        machine: Some(machine_id.to_string()),
        thumbprint: Some(thumbprint.to_string()),
        ..Scope::vault(vault)
    };
    app.storage.read(&scope).await
}

async fn register(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(vault): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<axum::Json<Registered>, ApiError> {
    known_vault(&vault).map_err(|e| e.with_reason(Reason::CredentialsInvalid))?;
    let signature = api::validate_registration(&body)?;
    let now = now_micros();
    api::check_clock(body.timestamp, now)?;
    // The certificate this vault issued under the thumbprint (immutable once issued).
    let scope = Scope { thumbprint: Some(body.thumbprint.clone()), ..Scope::vault(&vault) };
    let facts = app.storage.read(&scope).await?;
    let certificate = rules::registration_certificate(&facts, &vault, body.resource_id)?;
    if regent_credentials::verify_signature(&certificate, &body.message(&vault), &signature).is_err() {
        return Err(ApiError::refused(
            ErrorCode::CredentialsInvalid,
            "the request's signature does not verify against the certificate: it was not signed with the credentials' private key",
        ));
    }
    let registration = rules::Registration {
        vault: vault.clone(),
        resource_id: body.resource_id,
        machine_name: body.machine_name.clone(),
        thumbprint: body.thumbprint.clone(),
        request_id: body.request_id.clone(),
        nonce: body.nonce.clone(),
        peer: peer_ip(peer),
    };
    let scope = Scope { registration: Some(body.request_id.clone()), nonce: Some(body.nonce.clone()), ..scope };
    let answer = app.storage.transact(scope, now, Box::new(move |f| rules::register(f, &registration, now))).await?;
    if answer.registered_at == now {
        tracing::info!(vault = %vault, machine_id = %answer.machine_id, machine_name = %body.machine_name, "machine registered");
    }
    Ok(axum::Json(answer))
}

/// A PIN check: signed by the machine with the key it registered with (so only the machine's own
/// guesses count against it), idempotent by request id, and counted per machine (see
/// [`rules::check_pin`]).
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
    let now = now_micros();
    api::check_clock(body.timestamp, now)?;
    let facts = machine_facts(&app, &vault, &body.machine_id, &body.thumbprint).await?;
    let key = rules::machine_key(&facts, &vault, &body.machine_id, &body.thumbprint).map_err(pin_reason)?;
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
    if key.removed {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::MachineRemoved,
            format!("machine {} was removed from vault {vault}; register this server again", body.machine_id),
        )
        .with_reason(Reason::MachineRemoved));
    }
    let check = rules::PinCheck {
        vault: vault.clone(),
        machine_id: body.machine_id.clone(),
        request_id: body.request_id.clone(),
        nonce: body.nonce.clone(),
        peer: peer_ip(peer),
        check_digest: app.pin_check_digest(&body.request_id, &pin),
    };
    // The candidates' digests are computed here, where the PIN and the key are; the rules see
    // only whether one matched.
    let app_for_match = app.clone();
    let matches =
        move |pin_id: &Uuid, digest: &[u8; 32]| bool::from(app_for_match.pin_digest(pin_id, &pin).ct_eq(digest));
    let scope = Scope {
        machine: Some(body.machine_id.clone()),
        pin_check: Some(body.request_id.clone()),
        nonce: Some(body.nonce.clone()),
        pins: true,
        ..Scope::vault(&vault)
    };
    let valid = app.storage.transact(scope, now, Box::new(move |f| rules::check_pin(f, &check, &matches, now))).await;
    match &valid {
        Ok(_) => tracing::info!(vault = %vault, machine_id = %body.machine_id, "security PIN used"),
        Err(e) if e.code == ErrorCode::PinChecksLocked => {
            tracing::warn!(vault = %vault, machine_id = %body.machine_id, "a wrong security PIN: the machine's PIN checks are locked")
        }
        Err(e) if e.code == ErrorCode::SecurityPinInvalid => {
            tracing::info!(vault = %vault, machine_id = %body.machine_id, "a wrong security PIN")
        }
        Err(_) => {}
    }
    valid.map(axum::Json).map_err(pin_reason)
}

// ---------------------------------------------------------------------------------------------
// Handlers: the agent's log head

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
        .filter(|_| api::is_lower_hex64(&body.hash))
        .ok_or_else(|| ApiError::bad_request("hash must be 64 lowercase hex digits"))?;
    let reported = Head { position: body.position, hash: reported_hash };
    api::check_proof_shape(&body.records)?;
    let now = now_micros();
    api::check_clock(body.timestamp, now)?;
    let facts = machine_facts(&app, &vault, &machine_id, &body.thumbprint).await?;
    let certificate = rules::live_machine_certificate(&facts, &vault, &machine_id, &body.thumbprint)?;
    verify_machine_signature(&certificate, &body.message(&vault, &machine_id), &signature)?;
    let records_sha256 = (!body.records.is_empty()).then(|| protocol::records_digest(&body.records));
    let report = rules::HeadReport {
        vault: vault.clone(),
        machine_id: machine_id.clone(),
        reported,
        hash: body.hash.clone(),
        records: body.records,
        records_sha256,
        nonce: body.nonce.clone(),
        peer: peer_ip(peer),
    };
    let scope = Scope { machine: Some(machine_id.clone()), nonce: Some(body.nonce.clone()), ..Scope::vault(&vault) };
    let (keep, log) = (app.keep_records, app.log_heads);
    let decide = move |f: &rules::Facts| {
        rules::report_head(f, &report, now).map(|mut decision| {
            if !keep {
                decision.mirror = None;
            }
            if !log {
                for planned in &mut decision.events {
                    if let crate::events::VaultEvent::LogHeadAnchored(anchored) = &mut planned.event {
                        (anchored.logged, anchored.previous_leaf) = (false, None);
                    }
                }
            }
            decision
        })
    };
    let tree_size = body.tree_size;
    let anchored = app.storage.transact(scope.clone(), now, Box::new(decide)).await;
    let anchored = match anchored {
        Ok(anchor) => with_log(&app, &scope, anchor, tree_size).await,
        refused => refused,
    };
    match &anchored {
        Ok(anchor) if anchor.anchored_at == now => {
            tracing::info!(vault = %vault, machine_id = %machine_id, position = body.position, "log head anchored")
        }
        Err(e)
            if matches!(
                e.code,
                ErrorCode::LogHeadConflict | ErrorCode::LogHeadRegressed | ErrorCode::LogHeadProofInvalid
            ) =>
        {
            tracing::warn!(vault = %vault, machine_id = %machine_id, position = body.position, code = e.code.code(), "log head refused")
        }
        _ => {}
    }
    anchored.map(axum::Json)
}

/// `?proof=true[&from=N]` of a read of a machine's head: the transparency log's proof of it too,
/// consistent with the tree of N leaves (a report's own read, which only finds where to resume,
/// does without).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default)]
    proof: bool,
    from: Option<u64>,
}

async fn read_log_head(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ReadQuery>,
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
    let now = now_micros();
    api::check_clock(timestamp, now)?;
    let facts = machine_facts(&app, &vault, &machine_id, thumbprint).await?;
    let certificate = rules::live_machine_certificate(&facts, &vault, &machine_id, thumbprint)?;
    let message = protocol::log_head_read_message(&vault, &machine_id, thumbprint, timestamp, nonce);
    verify_machine_signature(&certificate, &message, &signature)?;
    let scope = Scope { machine: Some(machine_id.clone()), nonce: Some(nonce.to_string()), ..Scope::vault(&vault) };
    let peer = peer_ip(peer);
    let anchor = app
        .storage
        .transact(scope.clone(), now, Box::new(move |f| rules::read_head(f, &vault, &machine_id, &peer)))
        .await?;
    if !query.proof {
        return Ok(axum::Json(anchor));
    }
    Ok(axum::Json(with_log(&app, &scope, anchor, query.from).await?))
}

/// The anchor with the machine's latest leaf proved under the latest checkpoint, when its head is
/// logged (read after the change committed: the leaf's index is the storage's to give).
async fn with_log(app: &App, scope: &Scope, mut anchor: Anchor, from: Option<u64>) -> Result<Anchor, ApiError> {
    let facts = app.storage.read(scope).await?;
    if let Some(index) = facts.machine.and_then(|m| m.anchor.leaf) {
        anchor.log = Some(crate::transparency::logged_head(&app.storage, &app.notary, index, from).await?);
    }
    Ok(anchor)
}

// ---------------------------------------------------------------------------------------------
// Handlers: the transparency log

/// The latest checkpoint, as a C2SP signed note.
async fn checkpoint(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let (_, _, note) = crate::transparency::checkpoint(&app.storage, &app.notary).await?;
    Ok(([(header::CONTENT_TYPE, protocol::CHECKPOINT_CONTENT_TYPE)], note).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofQuery {
    from: Option<u64>,
}

/// A machine's latest logged head, proved under the latest checkpoint (the admin's and, later, the
/// auditors'): the bundle an auditor checks an export against, fetched from the vault rather than
/// from the machine under audit.
async fn machine_proof(
    State(app): State<Arc<App>>,
    ApiPath((vault, machine_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<axum::Json<protocol::LoggedHead>, ApiError> {
    known_vault(&vault)?;
    valid_machine_id(&machine_id)?;
    let scope = Scope { machine: Some(machine_id.clone()), ..Scope::vault(&vault) };
    let facts = app.storage.read(&scope).await?;
    if facts.vault.is_none() {
        return Err(ApiError::vault_not_found(&vault));
    }
    let machine = facts.machine.ok_or_else(|| api::machine_not_found(&vault, &machine_id))?;
    let index = machine.anchor.leaf.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::LogHeadNotFound,
            format!("machine {machine_id}'s head is not in the vault's transparency log yet: it is logged at its next report"),
        )
    })?;
    Ok(axum::Json(crate::transparency::logged_head(&app.storage, &app.notary, index, query.from).await?))
}

/// `?from=A&to=B` of a consistency proof, as text: so that a refusal says which size is missing or
/// malformed, in its own words.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The proof that an earlier checkpoint's tree is a prefix of a later one's, for anyone (an auditor
/// holding two checkpoints): hashes only, naming no machine.
async fn checkpoint_consistency(
    State(app): State<Arc<App>>,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> Result<axum::Json<protocol::ConsistencyProof>, ApiError> {
    let from = tree_size_param("from", query.from.as_deref())?;
    let to = tree_size_param("to", query.to.as_deref())?;
    Ok(axum::Json(crate::transparency::consistency(&app.storage, from, to).await?))
}

/// A tree size in a query: decimal digits only (`u64`'s parser would take a `+` too).
fn tree_size_param(name: &str, text: Option<&str>) -> Result<u64, ApiError> {
    let text = text.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} is missing: ask GET /v1/checkpoint/consistency?from=A&to=B with the sizes of the two checkpoints"
        ))
    })?;
    let size = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) { text.parse().ok() } else { None };
    size.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be a tree size: a whole number from 0 to {}, in decimal digits",
            u64::MAX
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers: a machine unregisters itself

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
    let now = now_micros();
    api::check_clock(body.timestamp, now)?;
    let facts = machine_facts(&app, &vault, &machine_id, &body.thumbprint).await?;
    let key = rules::machine_key(&facts, &vault, &machine_id, &body.thumbprint)?;
    verify_machine_signature(&key.certificate, &body.message(&vault, &machine_id), &signature)?;
    let request = rules::Unregistration {
        vault: vault.clone(),
        machine_id: machine_id.clone(),
        request_id: body.request_id.clone(),
        nonce: body.nonce.clone(),
        peer: peer_ip(peer),
    };
    let scope = Scope { machine: Some(machine_id.clone()), nonce: Some(body.nonce.clone()), ..Scope::vault(&vault) };
    let answer = app.storage.transact(scope, now, Box::new(move |f| rules::unregister(f, &request, now))).await?;
    if answer.removed_at == now {
        tracing::info!(vault = %vault, machine_id = %machine_id, "machine unregistered itself");
    }
    Ok(axum::Json(answer))
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
}
