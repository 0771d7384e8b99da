//! Every route of the service (`protocol::ROUTES`, the table the router is built from) against
//! every attack that applies to who may call it: no authentication, wrong authentication (a wrong
//! admin token, a signature by a key that is not the machine's), another machine's signature, a
//! replayed request, empty fields and oversized fields. Each must be refused with its status and
//! code and write nothing to the vault's log. The only records a case may cause are those the
//! protocol keeps by design, and only in a case's setup (the first of a replayed pair: a counted
//! wrong PIN, an anchored head, a registration).
//!
//! A route without cases does not compile (the match below is exhaustive), and a route whose cases
//! miss an attack that applies to its access fails the test.

mod common;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_engine::ports::VaultClient;
use regent_vault::protocol::{
    self, Access, HeadReport, MAX_BODY_BYTES, MAX_LOG_HEAD_BODY_BYTES, ROUTES, RegisterBody, RouteId,
    SIGNATURE_HEADERS, UnregisterBody, log_head_message, log_head_read_message, registration_message,
    unregistration_message,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Attack {
    NoAuth,
    WrongAuth,
    OtherMachine,
    Replay,
    EmptyFields,
    OversizedFields,
}

const ATTACKS: [Attack; 6] = [
    Attack::NoAuth,
    Attack::WrongAuth,
    Attack::OtherMachine,
    Attack::Replay,
    Attack::EmptyFields,
    Attack::OversizedFields,
];

/// Whether an attack means anything for this route (by who may call it); where it does not, why.
fn applies(route: &protocol::Route, attack: Attack) -> Result<(), &'static str> {
    match (route.access, attack) {
        (Access::Admin, Attack::EmptyFields | Attack::OversizedFields) if route.id == RouteId::ExportLog => {
            Err("it takes no path segment, query or body: there is no field to leave empty or make too long")
        }
        (Access::Anyone, Attack::NoAuth | Attack::WrongAuth) => Ok(()),
        // Its query's sizes are fields to leave empty or make too large.
        (Access::Anyone, Attack::EmptyFields | Attack::OversizedFields)
            if route.id == RouteId::CheckpointConsistency =>
        {
            Ok(())
        }
        (Access::Anyone, _) => Err("anyone may call it, it takes no fields, and it changes nothing"),
        (Access::Admin, Attack::OtherMachine) => Err("an admin call carries no machine's signature"),
        (Access::Admin, Attack::Replay) => Err(
            "an admin call carries a bearer token, not a nonce: TLS keeps the token, and the same call again is the admin's",
        ),
        (Access::Admin, _) | (Access::Credentials, _) | (Access::Machine, _) => Ok(()),
    }
}

struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn new(method: &'static str, path: impl Into<String>) -> Request {
        Request { method, path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn json(mut self, body: &impl serde::Serialize) -> Request {
        self.body = serde_json::to_vec(body).unwrap();
        self.header("Content-Type", "application/json")
    }

    fn raw_body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self.header("Content-Type", "application/json")
    }

    fn send(&self, vault: &Vault) -> RawAnswer {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        raw(vault.addr(), self.method, &self.path, &headers, &self.body)
    }
}

struct Case {
    attack: Attack,
    what: &'static str,
    /// Sent first (a replay's original): its status, and the records it may write.
    setup: Option<(Request, u16, u64)>,
    request: Request,
    status: u16,
    /// The protocol code of the refusal; empty for a route that answers anyone.
    code: &'static str,
}

fn case(attack: Attack, what: &'static str, request: Request, status: u16, code: &'static str) -> Case {
    Case { attack, what, setup: None, request, status, code }
}

fn replay(what: &'static str, request: Request, first_status: u16, first_writes: u64) -> Case {
    let again = Request {
        method: request.method,
        path: request.path.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    };
    Case {
        attack: Attack::Replay,
        what,
        setup: Some((request, first_status, first_writes)),
        request: again,
        status: 403,
        code: "nonce_replayed",
    }
}

/// The vault `routes` with machine `one` (registered with the first download) and machine `two`
/// (with the second, the newest), the vault `other` with its own credentials, and the admin token.
struct Fixture {
    first: VaultCredentials,
    newest: VaultCredentials,
    foreign: VaultCredentials,
    one: String,
    two: String,
    /// Registered with the newest download too; the unregistration's replay removes it.
    three: String,
    token: String,
}

fn nonce(tag: &str) -> String {
    format!("nonce-{tag:-<16}").replace(' ', "-")
}

impl Fixture {
    fn registration(
        &self,
        signer: &VaultCredentials,
        as_: &VaultCredentials,
        request_id: &str,
        tag: &str,
    ) -> RegisterBody {
        let timestamp = Utc::now().timestamp();
        let name = format!("machine-{request_id}");
        let message = registration_message(
            "routes",
            as_.identity.resource_id,
            &name,
            &as_.certificate.thumbprint,
            timestamp,
            &nonce(tag),
            request_id,
        );
        RegisterBody {
            request_id: request_id.into(),
            machine_name: name,
            resource_id: as_.identity.resource_id,
            thumbprint: as_.certificate.thumbprint.clone(),
            timestamp,
            nonce: nonce(tag),
            signature: STANDARD.encode(signer.private_key.sign(&message).unwrap()),
        }
    }

    /// A first report: a one-record log's head, with that record.
    fn report(&self, signer: &VaultCredentials, as_: &VaultCredentials, machine: &str, tag: &str) -> HeadReport {
        let timestamp = Utc::now().timestamp();
        let log = AgentLog::new();
        let hash = log.grow(1, tag).hash.to_hex();
        let records = log.lines(1, 1);
        let message = log_head_message(
            "routes",
            machine,
            &as_.certificate.thumbprint,
            1,
            &hash,
            &records,
            timestamp,
            &nonce(tag),
        );
        HeadReport {
            thumbprint: as_.certificate.thumbprint.clone(),
            position: 1,
            hash,
            records,
            timestamp,
            nonce: nonce(tag),
            signature: STANDARD.encode(signer.private_key.sign(&message).unwrap()),
            tree_size: None,
        }
    }

    fn read(&self, signer: &VaultCredentials, as_: &VaultCredentials, machine: &str, tag: &str) -> Request {
        let timestamp = Utc::now().timestamp();
        let thumbprint = &as_.certificate.thumbprint;
        let message = log_head_read_message("routes", machine, thumbprint, timestamp, &nonce(tag));
        let signature = STANDARD.encode(signer.private_key.sign(&message).unwrap());
        let values = [thumbprint.clone(), timestamp.to_string(), nonce(tag), signature];
        let mut request = Request::new("GET", format!("/v1/vaults/routes/machines/{machine}/log-head"));
        for (name, value) in SIGNATURE_HEADERS.into_iter().zip(values) {
            request = request.header(name, &value);
        }
        request
    }

    fn unregistration(
        &self,
        signer: &VaultCredentials,
        as_: &VaultCredentials,
        machine: &str,
        tag: &str,
    ) -> UnregisterBody {
        let timestamp = Utc::now().timestamp();
        let thumbprint = &as_.certificate.thumbprint;
        let message =
            unregistration_message("routes", machine, thumbprint, &format!("unreg-{tag}"), timestamp, &nonce(tag));
        UnregisterBody {
            request_id: format!("unreg-{tag}"),
            thumbprint: thumbprint.clone(),
            timestamp,
            nonce: nonce(tag),
            signature: STANDARD.encode(signer.private_key.sign(&message).unwrap()),
        }
    }

    fn admin(&self, method: &'static str, path: &str) -> Request {
        Request::new(method, path).header("Authorization", &format!("Bearer {}", self.token))
    }
}

fn json_with(value: &impl serde::Serialize, field: &str, replacement: serde_json::Value) -> serde_json::Value {
    let mut json = serde_json::to_value(value).unwrap();
    json[field] = replacement;
    json
}

fn without(value: &impl serde::Serialize, field: &str) -> serde_json::Value {
    let mut json = serde_json::to_value(value).unwrap();
    json.as_object_mut().unwrap().remove(field);
    json
}

fn cases(route: RouteId, fx: &Fixture) -> Vec<Case> {
    use Attack::*;
    let wrong_token = || Request::new("GET", "").header("Authorization", "Bearer not-the-admin-token");
    let too_big = |limit: usize| {
        let mut body = b"{\"name\":\"".to_vec();
        body.resize(limit + 16, b'x');
        body.extend_from_slice(b"\"}");
        body
    };
    let long = "x".repeat(200);
    let anyone = |path: &str| {
        let mut wrong = wrong_token();
        wrong.path = path.into();
        vec![
            case(NoAuth, "no token", Request::new("GET", path), 200, ""),
            case(WrongAuth, "a wrong token is ignored", wrong, 200, ""),
        ]
    };
    match route {
        RouteId::Healthz => anyone("/healthz"),
        RouteId::Readyz => anyone("/readyz"),
        RouteId::Metrics => anyone("/metrics"),
        RouteId::Health => vec![
            case(NoAuth, "no token", Request::new("GET", "/v1/health"), 200, ""),
            case(
                WrongAuth,
                "a wrong token is ignored",
                {
                    let mut r = wrong_token();
                    r.path = "/v1/health".into();
                    r
                },
                200,
                "",
            ),
        ],
        RouteId::CreateVault => vec![
            case(
                NoAuth,
                "no token",
                Request::new("POST", "/v1/vaults").json(&serde_json::json!({"name": "new"})),
                401,
                "unauthorized",
            ),
            case(
                WrongAuth,
                "a wrong token",
                Request::new("POST", "/v1/vaults")
                    .header("Authorization", "Bearer wrong")
                    .json(&serde_json::json!({"name": "new"})),
                401,
                "unauthorized",
            ),
            case(
                WrongAuth,
                "basic instead of bearer",
                Request::new("POST", "/v1/vaults")
                    .header("Authorization", "Basic eDp4")
                    .json(&serde_json::json!({"name": "new"})),
                401,
                "unauthorized",
            ),
            case(
                EmptyFields,
                "an empty name",
                fx.admin("POST", "/v1/vaults").json(&serde_json::json!({"name": ""})),
                400,
                "invalid_vault_name",
            ),
            case(EmptyFields, "no body", fx.admin("POST", "/v1/vaults").raw_body(Vec::new()), 400, "bad_request"),
            case(
                OversizedFields,
                "a 65-character name",
                fx.admin("POST", "/v1/vaults").json(&serde_json::json!({"name": "v".repeat(65)})),
                400,
                "invalid_vault_name",
            ),
            case(
                OversizedFields,
                "a body over the limit",
                fx.admin("POST", "/v1/vaults").raw_body(too_big(MAX_BODY_BYTES)),
                413,
                "payload_too_large",
            ),
        ],
        RouteId::GetVault => vec![
            case(NoAuth, "no token", Request::new("GET", "/v1/vaults/routes"), 401, "unauthorized"),
            case(
                WrongAuth,
                "a wrong token",
                {
                    let mut r = wrong_token();
                    r.path = "/v1/vaults/routes".into();
                    r
                },
                401,
                "unauthorized",
            ),
            case(EmptyFields, "an empty name", fx.admin("GET", "/v1/vaults/"), 404, "not_found"),
            case(
                OversizedFields,
                "a 200-character name",
                fx.admin("GET", &format!("/v1/vaults/{long}")),
                404,
                "vault_not_found",
            ),
        ],
        RouteId::DownloadCredentials => {
            let path = "/v1/vaults/routes/credentials";
            vec![
                case(NoAuth, "no token", Request::new("POST", path).json(&serde_json::json!({})), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("POST", path).header("Authorization", "Bearer wrong").json(&serde_json::json!({})),
                    401,
                    "unauthorized",
                ),
                case(
                    EmptyFields,
                    "a zero validity",
                    fx.admin("POST", path).json(&serde_json::json!({"validity_seconds": 0})),
                    400,
                    "bad_request",
                ),
                case(EmptyFields, "no body", fx.admin("POST", path).raw_body(Vec::new()), 400, "bad_request"),
                case(
                    OversizedFields,
                    "a validity past 30 days",
                    fx.admin("POST", path).json(&serde_json::json!({"validity_seconds": u64::MAX})),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character vault name",
                    fx.admin("POST", &format!("/v1/vaults/{long}/credentials")).json(&serde_json::json!({})),
                    404,
                    "vault_not_found",
                ),
                case(
                    OversizedFields,
                    "a body over the limit",
                    fx.admin("POST", path).raw_body(too_big(MAX_BODY_BYTES)),
                    413,
                    "payload_too_large",
                ),
            ]
        }
        RouteId::IssuePin => vec![
            case(NoAuth, "no token", Request::new("POST", "/v1/vaults/routes/pins"), 401, "unauthorized"),
            case(
                WrongAuth,
                "a wrong token",
                Request::new("POST", "/v1/vaults/routes/pins").header("Authorization", "Bearer wrong"),
                401,
                "unauthorized",
            ),
            case(EmptyFields, "an empty vault name", fx.admin("POST", "/v1/vaults//pins"), 404, "vault_not_found"),
            case(
                OversizedFields,
                "a 200-character vault name",
                fx.admin("POST", &format!("/v1/vaults/{long}/pins")),
                404,
                "vault_not_found",
            ),
        ],
        RouteId::ListMachines => vec![
            case(NoAuth, "no token", Request::new("GET", "/v1/vaults/routes/machines"), 401, "unauthorized"),
            case(
                WrongAuth,
                "a wrong token",
                {
                    let mut r = wrong_token();
                    r.path = "/v1/vaults/routes/machines".into();
                    r
                },
                401,
                "unauthorized",
            ),
            case(EmptyFields, "an empty vault name", fx.admin("GET", "/v1/vaults//machines"), 404, "vault_not_found"),
            case(
                OversizedFields,
                "a 200-character vault name",
                fx.admin("GET", &format!("/v1/vaults/{long}/machines")),
                404,
                "vault_not_found",
            ),
        ],
        RouteId::RemoveMachine => {
            let path = format!("/v1/vaults/routes/machines/{}", fx.one);
            vec![
                case(NoAuth, "no token", Request::new("DELETE", &path), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("DELETE", &path).header("Authorization", "Bearer wrong"),
                    401,
                    "unauthorized",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    fx.admin("DELETE", "/v1/vaults/routes/machines/"),
                    404,
                    "not_found",
                ),
                case(
                    EmptyFields,
                    "an empty vault name",
                    fx.admin("DELETE", &format!("/v1/vaults//machines/{}", fx.one)),
                    404,
                    "vault_not_found",
                ),
                case(
                    OversizedFields,
                    "a 200-character machine id",
                    fx.admin("DELETE", &format!("/v1/vaults/routes/machines/{long}")),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::Register => {
            let path = "/v1/vaults/routes/registrations";
            let good = |id: &str, tag: &str| fx.registration(&fx.newest, &fx.newest, id, tag);
            vec![
                case(
                    NoAuth,
                    "no signature",
                    Request::new("POST", path).json(&without(&good("r-none", "reg-none"), "signature")),
                    400,
                    "bad_request",
                ),
                case(
                    WrongAuth,
                    "signed by another key than the certificate's",
                    Request::new("POST", path).json(&fx.registration(&fx.foreign, &fx.newest, "r-wrong", "reg-wrong")),
                    403,
                    "credentials_invalid",
                ),
                case(
                    OtherMachine,
                    "another vault's credentials",
                    Request::new("POST", path).json(&fx.registration(
                        &fx.foreign,
                        &fx.foreign,
                        "r-foreign",
                        "reg-foreign",
                    )),
                    403,
                    "credentials_wrong_vault",
                ),
                case(
                    OtherMachine,
                    "an older download of this vault",
                    Request::new("POST", path).json(&fx.registration(&fx.first, &fx.first, "r-old", "reg-old")),
                    403,
                    "credentials_superseded",
                ),
                replay(
                    "the same registration twice",
                    Request::new("POST", path).json(&good("r-replay", "reg-replay")),
                    200,
                    1,
                ),
                case(
                    EmptyFields,
                    "an empty request id",
                    Request::new("POST", path).json(&json_with(&good("r-e1", "reg-e1"), "request_id", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty machine name",
                    Request::new("POST", path).json(&json_with(&good("r-e2", "reg-e2"), "machine_name", " ".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty thumbprint",
                    Request::new("POST", path).json(&json_with(&good("r-e3", "reg-e3"), "thumbprint", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty nonce",
                    Request::new("POST", path).json(&json_with(&good("r-e4", "reg-e4"), "nonce", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty signature",
                    Request::new("POST", path).json(&json_with(&good("r-e5", "reg-e5"), "signature", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 256-byte machine name",
                    Request::new("POST", path).json(&json_with(
                        &good("r-o1", "reg-o1"),
                        "machine_name",
                        "m".repeat(256).into(),
                    )),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 129-character request id",
                    Request::new("POST", path).json(&json_with(
                        &good("r-o2", "reg-o2"),
                        "request_id",
                        "r".repeat(129).into(),
                    )),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 129-character nonce",
                    Request::new("POST", path).json(&json_with(
                        &good("r-o3", "reg-o3"),
                        "nonce",
                        "n".repeat(129).into(),
                    )),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 5000-character signature",
                    Request::new("POST", path).json(&json_with(
                        &good("r-o4", "reg-o4"),
                        "signature",
                        "A".repeat(5000).into(),
                    )),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a timestamp at i64::MIN",
                    Request::new("POST", path).json(&json_with(&good("r-o5", "reg-o5"), "timestamp", i64::MIN.into())),
                    403,
                    "clock_skew",
                ),
                case(
                    OversizedFields,
                    "a body over the limit",
                    Request::new("POST", path).raw_body(too_big(MAX_BODY_BYTES)),
                    413,
                    "payload_too_large",
                ),
            ]
        }
        RouteId::CheckPin => {
            let path = "/v1/vaults/routes/pin-checks";
            let signed =
                |signer: &VaultCredentials, as_: &VaultCredentials, machine: &str, pin: &str, id: &str, tag: &str| {
                    signed_pin_check(as_, signer, machine, pin, id, &nonce(tag))
                };
            let good = |id: &str, tag: &str| signed(&fx.first, &fx.first, &fx.one, "00000000", id, tag);
            vec![
                case(
                    NoAuth,
                    "unsigned, as before",
                    Request::new("POST", path).json(&serde_json::json!({"machine_id": fx.one, "pin": "00000000"})),
                    400,
                    "bad_request",
                ),
                case(
                    NoAuth,
                    "no signature",
                    Request::new("POST", path).json(&without(&good("p-none", "pin-none"), "signature")),
                    400,
                    "bad_request",
                ),
                case(
                    WrongAuth,
                    "signed by a key that is not the machine's",
                    Request::new("POST", path).json(&signed(
                        &fx.foreign,
                        &fx.first,
                        &fx.one,
                        "00000000",
                        "p-wrong",
                        "pin-wrong",
                    )),
                    403,
                    "credentials_invalid",
                ),
                case(
                    OtherMachine,
                    "another machine's signature",
                    Request::new("POST", path).json(&json_with(
                        &signed(&fx.newest, &fx.newest, &fx.two, "00000000", "p-other", "pin-other"),
                        "machine_id",
                        fx.one.clone().into(),
                    )),
                    403,
                    "credentials_invalid",
                ),
                // The original is a wrong PIN of machine one: counted (one record), by design.
                replay(
                    "the same check twice",
                    Request::new("POST", path).json(&good("p-replay", "pin-replay")),
                    403,
                    1,
                ),
                case(
                    EmptyFields,
                    "an empty PIN",
                    Request::new("POST", path).json(&signed(&fx.first, &fx.first, &fx.one, "", "p-e1", "pin-e1")),
                    403,
                    "security_pin_invalid",
                ),
                case(
                    EmptyFields,
                    "an empty request id",
                    Request::new("POST", path).json(&json_with(&good("p-e2", "pin-e2"), "request_id", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    Request::new("POST", path).json(&json_with(&good("p-e3", "pin-e3"), "machine_id", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty thumbprint",
                    Request::new("POST", path).json(&json_with(&good("p-e4", "pin-e4"), "thumbprint", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a nine-digit PIN",
                    Request::new("POST", path).json(&signed(
                        &fx.first,
                        &fx.first,
                        &fx.one,
                        "000000000",
                        "p-o1",
                        "pin-o1",
                    )),
                    403,
                    "security_pin_invalid",
                ),
                case(
                    OversizedFields,
                    "a PIN with a line break",
                    Request::new("POST", path).json(&json_with(&good("p-o2", "pin-o2"), "pin", "0000\n000".into())),
                    403,
                    "security_pin_invalid",
                ),
                case(
                    OversizedFields,
                    "a 129-character machine id",
                    Request::new("POST", path).json(&json_with(
                        &good("p-o3", "pin-o3"),
                        "machine_id",
                        "m".repeat(129).into(),
                    )),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a body over the limit",
                    Request::new("POST", path).raw_body(too_big(MAX_BODY_BYTES)),
                    413,
                    "payload_too_large",
                ),
            ]
        }
        RouteId::ReportLogHead => {
            let one = format!("/v1/vaults/routes/machines/{}/log-head", fx.one);
            let two = format!("/v1/vaults/routes/machines/{}/log-head", fx.two);
            let good = |tag: &str| fx.report(&fx.first, &fx.first, &fx.one, tag);
            vec![
                case(
                    NoAuth,
                    "no signature",
                    Request::new("POST", &one).json(&without(&good("head-none"), "signature")),
                    400,
                    "bad_request",
                ),
                case(
                    WrongAuth,
                    "signed by a key that is not the machine's",
                    Request::new("POST", &one).json(&fx.report(&fx.foreign, &fx.first, &fx.one, "head-wrong")),
                    403,
                    "credentials_invalid",
                ),
                case(
                    OtherMachine,
                    "another machine's signature",
                    Request::new("POST", &one).json(&fx.report(&fx.newest, &fx.newest, &fx.one, "head-other")),
                    403,
                    "credentials_invalid",
                ),
                // The original anchors machine two's first head (one record), by design.
                replay(
                    "the same report twice",
                    Request::new("POST", &two).json(&fx.report(&fx.newest, &fx.newest, &fx.two, "head-replay")),
                    200,
                    1,
                ),
                case(
                    EmptyFields,
                    "an empty hash",
                    Request::new("POST", &one).json(&json_with(&good("head-e1"), "hash", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty record",
                    Request::new("POST", &one).json(&json_with(&good("head-e2"), "records", serde_json::json!([""]))),
                    400,
                    "log_head_proof_malformed",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    Request::new("POST", "/v1/vaults/routes/machines//log-head").json(&good("head-e3")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "more records than a report holds",
                    Request::new("POST", &one).json(&json_with(
                        &good("head-o1"),
                        "records",
                        serde_json::json!(vec!["{}"; protocol::MAX_PROOF_RECORDS + 1]),
                    )),
                    400,
                    "log_head_proof_too_large",
                ),
                case(
                    OversizedFields,
                    "a 200-character machine id",
                    Request::new("POST", format!("/v1/vaults/routes/machines/{long}/log-head")).json(&good("head-o2")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a body over the limit",
                    Request::new("POST", &one).raw_body(too_big(MAX_LOG_HEAD_BODY_BYTES)),
                    413,
                    "payload_too_large",
                ),
            ]
        }
        RouteId::Unregister => {
            let path = |machine: &str| format!("/v1/vaults/routes/machines/{machine}/unregistrations");
            let one = path(&fx.one);
            let good = |tag: &str| fx.unregistration(&fx.first, &fx.first, &fx.one, tag);
            vec![
                case(
                    NoAuth,
                    "no signature",
                    Request::new("POST", &one).json(&without(&good("unreg-none"), "signature")),
                    400,
                    "bad_request",
                ),
                case(
                    WrongAuth,
                    "signed by a key that is not the machine's",
                    Request::new("POST", &one).json(&fx.unregistration(&fx.foreign, &fx.first, &fx.one, "unreg-wrong")),
                    403,
                    "credentials_invalid",
                ),
                case(
                    OtherMachine,
                    "another machine's signature",
                    Request::new("POST", &one).json(&fx.unregistration(&fx.newest, &fx.newest, &fx.one, "unreg-other")),
                    403,
                    "credentials_invalid",
                ),
                // The original removes machine three (one record), by design.
                replay(
                    "the same unregistration twice",
                    Request::new("POST", path(&fx.three)).json(&fx.unregistration(
                        &fx.newest,
                        &fx.newest,
                        &fx.three,
                        "unreg-replay",
                    )),
                    200,
                    1,
                ),
                case(
                    EmptyFields,
                    "an empty request id",
                    Request::new("POST", &one).json(&json_with(&good("unreg-e1"), "request_id", "".into())),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    Request::new("POST", "/v1/vaults/routes/machines//unregistrations").json(&good("unreg-e2")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character request id",
                    Request::new("POST", &one).json(&json_with(&good("unreg-o1"), "request_id", long.clone().into())),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a body over the limit",
                    Request::new("POST", &one).raw_body(too_big(MAX_BODY_BYTES)),
                    413,
                    "payload_too_large",
                ),
            ]
        }
        RouteId::ExportLog => vec![
            case(NoAuth, "no token", Request::new("GET", "/v1/log"), 401, "unauthorized"),
            case(
                WrongAuth,
                "a wrong token",
                Request::new("GET", "/v1/log").header("Authorization", "Bearer not-the-admin-token"),
                401,
                "unauthorized",
            ),
            case(
                WrongAuth,
                "the token as a query parameter, not a header",
                Request::new("GET", format!("/v1/log?token={}", fx.token)),
                401,
                "unauthorized",
            ),
        ],
        RouteId::FleetAudit => {
            let path = "/v1/vaults/routes/audit";
            vec![
                case(NoAuth, "no token", Request::new("GET", path), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("GET", path).header("Authorization", "Bearer wrong"),
                    401,
                    "unauthorized",
                ),
                case(EmptyFields, "an empty vault name", fx.admin("GET", "/v1/vaults//audit"), 404, "vault_not_found"),
                case(
                    EmptyFields,
                    "an empty kind",
                    fx.admin("GET", "/v1/vaults/routes/audit?kind="),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character machine id",
                    fx.admin("GET", &format!("/v1/vaults/routes/audit?machine={long}")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a page over the limit",
                    fx.admin("GET", "/v1/vaults/routes/audit?limit=1001"),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::Checkpoint => anyone("/v1/checkpoint"),
        RouteId::MachineProof => {
            let path = format!("/v1/vaults/routes/machines/{}/proof", fx.one);
            vec![
                case(NoAuth, "no token", Request::new("GET", &path), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("GET", &path).header("Authorization", "Bearer wrong"),
                    401,
                    "unauthorized",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    fx.admin("GET", "/v1/vaults/routes/machines//proof"),
                    400,
                    "bad_request",
                ),
                case(EmptyFields, "an empty size", fx.admin("GET", &format!("{path}?from=")), 400, "bad_request"),
                case(
                    OversizedFields,
                    "a size past any number",
                    fx.admin("GET", &format!("{path}?from=99999999999999999999999")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character machine id",
                    fx.admin("GET", &format!("/v1/vaults/routes/machines/{long}/proof")),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::CheckpointConsistency => {
            // The fixture logged machine three's head: the tree holds a leaf at least.
            let path = |query: &str| format!("/v1/checkpoint/consistency?{query}");
            let mut wrong = wrong_token();
            wrong.path = path("from=1&to=1");
            vec![
                case(NoAuth, "no token", Request::new("GET", path("from=1&to=1")), 200, ""),
                case(WrongAuth, "a wrong token is ignored", wrong, 200, ""),
                case(EmptyFields, "an empty from", Request::new("GET", path("from=&to=1")), 400, "bad_request"),
                case(EmptyFields, "no to", Request::new("GET", path("from=1")), 400, "bad_request"),
                case(EmptyFields, "no query", Request::new("GET", "/v1/checkpoint/consistency"), 400, "bad_request"),
                case(
                    OversizedFields,
                    "a size past any number",
                    Request::new("GET", path("from=1&to=99999999999999999999999")),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a size past the tree",
                    Request::new("GET", path(&format!("from=1&to={}", u64::MAX))),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::ListFleet => {
            let path = "/v1/vaults/routes/fleet";
            vec![
                case(NoAuth, "no token", Request::new("GET", path), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("GET", path).header("Authorization", "Bearer wrong"),
                    401,
                    "unauthorized",
                ),
                case(EmptyFields, "an empty vault name", fx.admin("GET", "/v1/vaults//fleet"), 404, "vault_not_found"),
                case(
                    EmptyFields,
                    "an empty cursor",
                    fx.admin("GET", "/v1/vaults/routes/fleet?after="),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a page over the limit",
                    fx.admin("GET", "/v1/vaults/routes/fleet?limit=1001"),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a limit past any number",
                    fx.admin("GET", "/v1/vaults/routes/fleet?limit=99999999999999999999999"),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::ExportMachineLog => {
            let path = format!("/v1/vaults/routes/machines/{}/log", fx.one);
            vec![
                case(NoAuth, "no token", Request::new("GET", &path), 401, "unauthorized"),
                case(
                    WrongAuth,
                    "a wrong token",
                    Request::new("GET", &path).header("Authorization", "Bearer wrong"),
                    401,
                    "unauthorized",
                ),
                case(
                    EmptyFields,
                    "an empty vault name",
                    fx.admin("GET", &format!("/v1/vaults//machines/{}/log", fx.one)),
                    404,
                    "vault_not_found",
                ),
                case(
                    EmptyFields,
                    "an empty machine id",
                    fx.admin("GET", "/v1/vaults/routes/machines//log"),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character machine id",
                    fx.admin("GET", &format!("/v1/vaults/routes/machines/{long}/log")),
                    400,
                    "bad_request",
                ),
            ]
        }
        RouteId::ReadLogHead => {
            let one = format!("/v1/vaults/routes/machines/{}/log-head", fx.one);
            let mut no_signature = fx.read(&fx.first, &fx.first, &fx.one, "read-none");
            no_signature.headers.retain(|(name, _)| name != "x-regent-signature");
            let with_header = |tag: &str, name: &str, value: &str| {
                let mut request = fx.read(&fx.first, &fx.first, &fx.one, tag);
                for header in &mut request.headers {
                    if header.0 == name {
                        header.1 = value.to_string();
                    }
                }
                request
            };
            vec![
                case(NoAuth, "no headers", Request::new("GET", &one), 400, "bad_request"),
                case(NoAuth, "no signature", no_signature, 400, "bad_request"),
                case(
                    WrongAuth,
                    "signed by a key that is not the machine's",
                    fx.read(&fx.foreign, &fx.first, &fx.one, "read-wrong"),
                    403,
                    "credentials_invalid",
                ),
                case(
                    OtherMachine,
                    "another machine's signature",
                    {
                        let mut request = fx.read(&fx.newest, &fx.newest, &fx.one, "read-other");
                        request.path = one.clone();
                        request
                    },
                    403,
                    "credentials_invalid",
                ),
                // The original finds nothing anchored for machine one: a 404, nothing written.
                replay("the same read twice", fx.read(&fx.first, &fx.first, &fx.one, "read-replay"), 404, 0),
                case(
                    EmptyFields,
                    "an empty thumbprint",
                    with_header("read-e1", "x-regent-thumbprint", ""),
                    400,
                    "bad_request",
                ),
                case(
                    EmptyFields,
                    "an empty timestamp",
                    with_header("read-e2", "x-regent-timestamp", ""),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a 200-character nonce",
                    with_header("read-o1", "x-regent-nonce", &"n".repeat(200)),
                    400,
                    "bad_request",
                ),
                case(
                    OversizedFields,
                    "a timestamp past i64",
                    with_header("read-o2", "x-regent-timestamp", "99999999999999999999"),
                    400,
                    "bad_request",
                ),
            ]
        }
    }
}

both!(every_route_refuses_every_attack_and_writes_nothing);
fn every_route_refuses_every_attack_and_writes_nothing() {
    let vault = Vault::start();
    let first = vault.vault_with_credentials("routes");
    let client = quick_client(None);
    let one = machine_id(&client.register(&register_request(&first, None, "one", "reg-one", None)));
    let newest = vault.download("routes", None);
    let two = machine_id(&client.register(&register_request(&newest, None, "two", "reg-two", None)));
    let three = machine_id(&client.register(&register_request(&newest, None, "three", "reg-three", None)));
    // A leaf in the transparency log, whatever order the routes are attacked in: the consistency
    // route's cases ask for size 1. Machine three is unregistered later; its head changes nothing else.
    let log = AgentLog::new();
    let head = log.grow(1, "three");
    client
        .report_log_head(&head_signer(&vault.url(), "routes", &three, &newest), &log.store, head, None, None)
        .unwrap();
    let foreign = vault.vault_with_credentials("other");
    let fx = Fixture { first, newest, foreign, one, two, three, token: vault.token() };

    let mut covered: HashMap<RouteId, Vec<Attack>> = HashMap::new();
    for route in ROUTES {
        for case in cases(route.id, &fx) {
            let label =
                format!("{} {} ({:?}, {:?}): {}", route.method.as_str(), route.path, route.id, case.attack, case.what);
            assert!(applies(&route, case.attack).is_ok(), "{label}: the attack does not apply to this route");
            if let Some((setup, status, writes)) = &case.setup {
                let before = vault.log_position();
                let answer = setup.send(&vault);
                assert_eq!(answer.status, *status, "{label}, the original: {}", answer.body);
                assert_eq!(vault.log_position(), before + writes, "{label}: the original writes {writes}");
            }
            let before = vault.log_position();
            let answer = case.request.send(&vault);
            assert_eq!(answer.status, case.status, "{label}: {}", answer.body);
            assert!(answer.is_from_service(), "{label}: the answer carries the service header");
            if !case.code.is_empty() {
                assert_eq!(answer.error_code(), case.code, "{label}: {}", answer.body);
                assert!(!answer.json()["message"].as_str().unwrap_or_default().is_empty(), "{label}: a message");
            }
            assert_eq!(vault.log_position(), before, "{label}: a refused request wrote to the log");
            covered.entry(route.id).or_default().push(case.attack);
        }
    }
    for route in ROUTES {
        let attacks = covered.get(&route.id).cloned().unwrap_or_default();
        assert!(!attacks.is_empty(), "{:?} has no case", route.id);
        for attack in ATTACKS {
            match applies(&route, attack) {
                Ok(()) => {
                    assert!(attacks.contains(&attack), "{:?} ({:?}) has no {attack:?} case", route.id, route.access)
                }
                Err(_why) => assert!(!attacks.contains(&attack)),
            }
        }
    }
    // Nothing was taken over: both machines are still there, no vault was made.
    assert_eq!(
        vault.admin.machines("routes").unwrap().len(),
        3,
        "one, two, and the replayed registration's machine (three unregistered itself)"
    );
    assert!(vault.admin.vault("new").is_err());
}

both!(the_router_serves_exactly_the_table);
fn the_router_serves_exactly_the_table() {
    let vault = Vault::start();
    for route in ROUTES {
        let path = route.path.replace("{vault}", "nowhere").replace("{machine_id}", "m-1");
        // The route is matched (a fallback would answer 404 not_found or 405).
        let answer = raw(vault.addr(), route.method.as_str(), &path, &[], b"");
        assert!(answer.is_from_service(), "{route:?}");
        assert!(
            answer.status == 200 || !["not_found", "method_not_allowed"].contains(&answer.error_code().as_str()),
            "{route:?}: {}",
            answer.body
        );
        // A method the table does not list for the path is refused.
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
            if ROUTES.iter().any(|r| r.path == route.path && r.method.as_str() == method) {
                continue;
            }
            let answer = raw(vault.addr(), method, &path, &[], b"");
            assert_eq!((answer.status, answer.error_code().as_str()), (405, "method_not_allowed"), "{method} {path}");
        }
    }
    let answer = raw(vault.addr(), "GET", "/v1/vaults/x/unknown", &[], b"");
    assert_eq!((answer.status, answer.error_code().as_str()), (404, "not_found"));
}

both!(the_readme_documents_exactly_the_table);
/// The README's route table (a row whose first cell is `` `METHOD /path` ``) lists exactly the routes
/// of the table the router is built from: a route served and not documented, documented and not
/// served, or documented twice, fails.
fn the_readme_documents_exactly_the_table() {
    let readme = include_str!("../README.md");
    let mut documented: Vec<(String, String)> = Vec::new();
    for line in readme.lines() {
        let Some(cell) = line.strip_prefix("| `").and_then(|rest| rest.split('`').next()) else { continue };
        let Some((method, path)) = cell.split_once(' ') else { continue };
        if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
            let route = (method.to_string(), path.to_string());
            assert!(!documented.contains(&route), "vault/README.md lists `{method} {path}` twice");
            documented.push(route);
        }
    }
    for route in ROUTES {
        let (method, path) = (route.method.as_str(), route.path);
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{:?} (`{method} {path}`) is served but not in vault/README.md's route table",
            route.id
        );
    }
    for (method, path) in &documented {
        assert!(
            ROUTES.iter().any(|r| r.method.as_str() == method && r.path == path),
            "vault/README.md documents `{method} {path}`, which is not in ROUTES"
        );
    }
}
