//! Helpers shared by the vault's integration tests: a service in a temp dir, credentials, requests,
//! raw HTTP for malformed input, and a real tinyproxy.
#![allow(dead_code, reason = "each test binary uses a different part of these helpers")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use regent_credentials::VaultCredentials;
use regent_engine::model::{VaultAnswer, VaultIdentity};
use regent_engine::ports::{PinCheck, ProxyConfig, RegisterRequest};
use regent_store::{Actor, BatchMeta, Digest32, EventStore, ExpectedVersion, Head, NewEvent, StoreOptions};
use regent_vault::protocol::{PinCheckBody, RegisterBody, pin_check_message, registration_message};
use regent_vault::{AdminClient, BackgroundServer, ClientOptions, HttpVaultClient, ServeConfig};
use secrecy::SecretString;
use tempfile::TempDir;
use zeroize::Zeroizing;

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Which storage a test's services run on: the suite runs each test of [`both!`] on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Sled) };
}

/// Runs `test` with [`Vault::start`] on `backend` (on this thread).
pub fn on(backend: Backend, test: fn()) {
    BACKEND.with(|b| b.set(backend));
    test()
}

pub fn backend() -> Backend {
    BACKEND.with(|b| b.get())
}

/// `both!(name)` after `fn name()`: the test `name::sled` and the test `name::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sled() {
                $crate::common::on($crate::common::Backend::Sled, super::$name)
            }
            #[test]
            fn postgres() {
                $crate::common::on($crate::common::Backend::Postgres, super::$name)
            }
        }
    };
}

/// A service on 127.0.0.1, port 0, in a fresh temp dir, with an admin client; on PostgreSQL (a
/// database of its own in the test binary's cluster) when the test runs on it.
pub struct Vault {
    pub server: BackgroundServer,
    pub dir: TempDir,
    pub admin: AdminClient,
    pub database: Option<regent_testkit::postgres::Database<'static>>,
}

impl Vault {
    pub fn start() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let database = match backend() {
            Backend::Sled => None,
            Backend::Postgres => Some(regent_testkit::postgres::shared().database()),
        };
        Vault::serve(dir, database)
    }

    /// A service on PostgreSQL, whichever backend the test runs on: for what only a database
    /// shared by processes has.
    pub fn on_postgres() -> Vault {
        Vault::serve(tempfile::tempdir().unwrap(), Some(regent_testkit::postgres::shared().database()))
    }

    fn serve(dir: TempDir, database: Option<regent_testkit::postgres::Database<'static>>) -> Vault {
        let server = BackgroundServer::start(Vault::config_for(dir.path(), database.as_ref())).unwrap();
        let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
        Vault { server, dir, admin, database }
    }

    fn config_for(dir: &Path, database: Option<&regent_testkit::postgres::Database<'static>>) -> ServeConfig {
        let config = ServeConfig::new(dir, loopback());
        match database {
            Some(database) => config.with_database_url(database.url()),
            None => config,
        }
    }

    /// How this vault's service is configured: another process on the same storage starts with it.
    pub fn config(&self) -> ServeConfig {
        Vault::config_for(self.dir.path(), self.database.as_ref())
    }

    pub fn url(&self) -> String {
        self.server.url().to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.server.admin_token_path()).unwrap().trim().to_string()
    }

    /// Creates `name` and downloads credentials for it.
    pub fn vault_with_credentials(&self, name: &str) -> VaultCredentials {
        self.admin.create_vault(name).unwrap();
        self.download(name, None)
    }

    /// Stops the service (its log closed) and starts it again on the same data (on another port).
    pub fn restart(self) -> Vault {
        let Vault { server, dir, database, .. } = self;
        server.shutdown().unwrap();
        Vault::serve(dir, database)
    }

    /// SQL as the database's superuser (PostgreSQL only), one line per row.
    pub fn sql(&self, sql: &str) -> String {
        let database = self.database.as_ref().expect("only a vault on PostgreSQL has SQL");
        regent_testkit::postgres::shared().psql(database.name(), sql)
    }

    /// Another process on this vault's storage (PostgreSQL): its own service on the same database
    /// and admin token, with its own admin client.
    pub fn another_process(&self) -> Process {
        assert!(self.database.is_some(), "only a vault on PostgreSQL is shared by processes");
        Process::start(self.config())
    }

    /// The position of the last record of the service's log.
    pub fn log_position(&self) -> u64 {
        match &self.database {
            None => self.server.log_head().expect("the service is running").position,
            Some(_) => self.sql("SELECT position FROM regent_vault.log_head").trim().parse().unwrap(),
        }
    }

    /// The records of the service's log after `position`, in order. On sled, stops the service to
    /// read its log, and starts it again.
    pub fn records_after(self, position: u64) -> (Vault, Vec<regent_store::Record>) {
        if let Some(database) = &self.database {
            let records = log_records(regent_testkit::postgres::shared(), database.name(), position);
            return (self, records);
        }
        let Vault { server, dir, database, .. } = self;
        server.shutdown().unwrap();
        let records = {
            let store =
                regent_store::EventStore::open(dir.path().join("log"), &regent_store::StoreOptions::default()).unwrap();
            store.read_all(position + 1).map(|record| record.unwrap()).collect()
        };
        (Vault::serve(dir, database), records)
    }

    /// Everything the service's storage holds, as bytes to search, and the tables it holds it in
    /// (none on sled). On PostgreSQL: every row of every table of the schema `regent_vault` as JSON
    /// (`BYTEA` as `\x` hex), then each log record's stored bytes. On sled: each record's stored
    /// bytes, then every file of the data dir but `admin.token`; the service is stopped to read them,
    /// and started again.
    pub fn stored(self) -> (Vault, Vec<u8>, Vec<String>) {
        if self.database.is_some() {
            let tables: Vec<String> = self
                .sql("SELECT tablename FROM pg_tables WHERE schemaname = 'regent_vault' ORDER BY tablename")
                .lines()
                .map(String::from)
                .collect();
            let mut bytes = Vec::new();
            for table in &tables {
                let rows = self.sql(&format!("SELECT row_to_json(t)::text FROM regent_vault.\"{table}\" t"));
                bytes.extend_from_slice(format!("-- {table}\n{rows}\n").as_bytes());
            }
            let records = self.sql("SELECT convert_from(record, 'UTF8') FROM regent_vault.log ORDER BY position");
            bytes.extend_from_slice(records.as_bytes());
            return (self, bytes, tables);
        }
        let Vault { server, dir, database, .. } = self;
        server.shutdown().unwrap();
        let mut bytes = Vec::new();
        {
            let store =
                regent_store::EventStore::open(dir.path().join("log"), &regent_store::StoreOptions::default()).unwrap();
            for record in store.raw_records(0) {
                bytes.extend_from_slice(&record.unwrap().1);
                bytes.push(b'\n');
            }
        }
        let mut pending = vec![dir.path().to_path_buf()];
        while let Some(at) = pending.pop() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.file_name().is_some_and(|name| name != regent_vault::ADMIN_TOKEN_FILE) {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
        }
        (Vault::serve(dir, database), bytes, Vec::new())
    }

    /// The kinds of the records of the service's log after `position`, in order.
    pub fn kinds_after(self, position: u64) -> (Vault, Vec<String>) {
        let (vault, records) = self.records_after(position);
        (vault, records.into_iter().map(|record| record.kind).collect())
    }

    pub fn download(&self, vault: &str, validity: Option<Duration>) -> VaultCredentials {
        download(&self.admin, vault, validity)
    }
}

/// Downloads credentials for `vault` through `admin`, parsed as the agent reads them.
pub fn download(admin: &AdminClient, vault: &str, validity: Option<Duration>) -> VaultCredentials {
    let file = admin.download_credentials(vault, validity).unwrap();
    regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap()
}

/// A service process of its own on a storage another already serves (from [`Vault::config`]),
/// with an admin client.
pub struct Process {
    pub server: BackgroundServer,
    pub admin: AdminClient,
}

impl Process {
    pub fn start(config: ServeConfig) -> Process {
        let server = BackgroundServer::start(config).unwrap();
        let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
        Process { server, admin }
    }

    pub fn url(&self) -> String {
        self.server.url().to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// The records of the vault's log in `database` of `cluster` after `position`, in order.
pub fn log_records(
    cluster: &regent_testkit::postgres::Cluster,
    database: &str,
    position: u64,
) -> Vec<regent_store::Record> {
    let lines = cluster.psql(
        database,
        &format!(
            "SELECT convert_from(record, 'UTF8') FROM regent_vault.log WHERE position > {position} ORDER BY position"
        ),
    );
    lines.lines().map(|line| regent_store::decode_record(line.as_bytes()).unwrap()).collect()
}

/// A client that gives up quickly, so failure tests stay fast.
pub fn quick_client(ca_file: Option<&Path>) -> HttpVaultClient {
    HttpVaultClient::new(ClientOptions { ca_file: ca_file.map(PathBuf::from), ..quick_options() }).unwrap()
}

fn quick_options() -> ClientOptions {
    ClientOptions {
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(10),
        attempts: 3,
        backoff: Duration::from_millis(20),
    }
}

/// A client that never asks twice: each answer it returns is the service's own first answer (a
/// 503 is not hidden by a retry).
pub fn one_attempt_client() -> HttpVaultClient {
    HttpVaultClient::new(ClientOptions { attempts: 1, ..quick_options() }).unwrap()
}

pub fn identity(credentials: &VaultCredentials) -> VaultIdentity {
    let id = &credentials.identity;
    VaultIdentity {
        name: id.resource_name.clone(),
        subscription_id: id.subscription_id.clone(),
        resource_group: id.resource_group.clone(),
        location: id.location.clone(),
        resource_id: id.resource_id,
    }
}

/// A registration with these credentials, at `endpoint` (their own endpoint when `None`).
pub fn register_request(
    credentials: &VaultCredentials,
    endpoint: Option<&str>,
    machine_name: &str,
    request_id: &str,
    proxy: Option<ProxyConfig>,
) -> RegisterRequest {
    RegisterRequest {
        endpoint: endpoint.unwrap_or(&credentials.endpoint).to_string(),
        vault: identity(credentials),
        thumbprint: credentials.certificate.thumbprint.clone(),
        machine_name: machine_name.to_string(),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy,
        request_id: request_id.to_string(),
    }
}

/// A PIN check by the machine registered with `credentials`, signed with their key, as the agent
/// sends it.
pub fn pin_check(
    endpoint: &str,
    credentials: &VaultCredentials,
    machine_id: &str,
    pin: &str,
    request_id: &str,
) -> PinCheck {
    PinCheck {
        endpoint: endpoint.to_string(),
        vault: credentials.identity.resource_name.clone(),
        machine_id: machine_id.to_string(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        pin: SecretString::from(pin.to_string()),
        proxy: None,
        request_id: request_id.to_string(),
    }
}

/// A PIN check body signed by hand with `signer`'s key under `credentials`' thumbprint, for what
/// the real client never sends.
pub fn signed_pin_check(
    credentials: &VaultCredentials,
    signer: &VaultCredentials,
    machine_id: &str,
    pin: &str,
    request_id: &str,
    nonce: &str,
) -> PinCheckBody {
    use base64::Engine as _;
    let timestamp = chrono::Utc::now().timestamp();
    let vault = &credentials.identity.resource_name;
    let thumbprint = &credentials.certificate.thumbprint;
    let message = pin_check_message(vault, machine_id, thumbprint, request_id, pin, timestamp, nonce);
    PinCheckBody {
        request_id: request_id.into(),
        machine_id: machine_id.into(),
        thumbprint: thumbprint.clone(),
        pin: pin.into(),
        timestamp,
        nonce: nonce.into(),
        signature: base64::engine::general_purpose::STANDARD.encode(signer.private_key.sign(&message).unwrap()),
    }
}

/// A registration body signed by hand, as the agent's client signs one, for a raw request.
pub fn signed_registration(
    credentials: &VaultCredentials,
    machine_name: &str,
    timestamp: i64,
    nonce: &str,
    request_id: &str,
) -> RegisterBody {
    use base64::Engine as _;
    let message = registration_message(
        &credentials.identity.resource_name,
        credentials.identity.resource_id,
        machine_name,
        &credentials.certificate.thumbprint,
        timestamp,
        nonce,
        request_id,
    );
    RegisterBody {
        request_id: request_id.into(),
        machine_name: machine_name.into(),
        resource_id: credentials.identity.resource_id,
        thumbprint: credentials.certificate.thumbprint.clone(),
        timestamp,
        nonce: nonce.into(),
        signature: base64::engine::general_purpose::STANDARD.encode(credentials.private_key.sign(&message).unwrap()),
    }
}

/// POSTs `body` as JSON to `path`, raw.
pub fn post_json(addr: SocketAddr, path: &str, body: &impl serde::Serialize) -> RawAnswer {
    raw(addr, "POST", path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
}

pub fn machine_id(answer: &VaultAnswer) -> String {
    match answer {
        VaultAnswer::Registered { machine_id, .. } => machine_id.clone(),
        VaultAnswer::Refused { reason, detail } => panic!("expected a registration, got {reason}: {detail}"),
    }
}

pub fn refusal(answer: &VaultAnswer) -> (regent_engine::Reason, String) {
    match answer {
        VaultAnswer::Refused { reason, detail } => (reason.clone(), detail.clone()),
        VaultAnswer::Registered { machine_id, .. } => panic!("expected a refusal, got machine {machine_id}"),
    }
}

/// An agent's log: a real store in a temp dir.
pub struct AgentLog {
    pub store: EventStore,
    _dir: TempDir,
}

impl AgentLog {
    pub fn new() -> AgentLog {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path().join("store"), &StoreOptions::default()).unwrap();
        AgentLog { store, _dir: dir }
    }

    /// Appends `count` records in one batch, each with `padding` bytes of payload; `tag` makes two
    /// logs grown alike differ.
    pub fn grow_padded(&self, count: usize, tag: &str, padding: usize) -> Head {
        let meta = BatchMeta {
            recorded_at: chrono::Utc::now(),
            actor: Actor { user: "test".into(), host: "test".into() },
            correlation_id: uuid::Uuid::now_v7(),
        };
        let pad = "p".repeat(padding);
        let events: Vec<NewEvent> = (0..count)
            .map(|n| NewEvent::new("Tested", 1, &serde_json::json!({"tag": tag, "n": n, "pad": pad})).unwrap())
            .collect();
        self.store.append("test", ExpectedVersion::Any, &meta, &events).unwrap();
        self.head()
    }

    pub fn grow(&self, count: usize, tag: &str) -> Head {
        self.grow_padded(count, tag, 0)
    }

    pub fn head(&self) -> Head {
        self.store.head()
    }

    /// Another log holding this one's records so far (an export imported), to grow apart.
    pub fn copy(&self) -> AgentLog {
        let mut export = Vec::new();
        self.store.export(&mut export, "test").unwrap();
        let copy = AgentLog::new();
        copy.store.import(std::io::BufReader::new(export.as_slice())).unwrap();
        copy
    }

    /// The head at `position`: the record there and its stored hash.
    pub fn head_at(&self, position: u64) -> Head {
        Head { position, hash: stored_hash(&self.lines(position, position)[0]) }
    }

    /// The stored lines of records `from..=to`, as a report carries them.
    pub fn lines(&self, from: u64, to: u64) -> Vec<String> {
        self.store
            .raw_records(from)
            .map(|r| r.unwrap())
            .take_while(|(position, _)| *position <= to)
            .map(|(_, bytes)| String::from_utf8(bytes.to_vec()).unwrap())
            .collect()
    }
}

/// Speaks for `machine_id` at the service at `url` with the key of `credentials` (the
/// registration's, or another one to forge).
pub fn head_signer(
    url: &str,
    vault: &str,
    machine_id: &str,
    credentials: &VaultCredentials,
) -> regent_vault::HeadSigner {
    regent_vault::HeadSigner {
        endpoint: url.to_string(),
        vault: vault.to_string(),
        machine_id: machine_id.to_string(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: zeroize::Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy: None,
    }
}

/// What the vault keeps of a machine's log, as the admin exports it: verified as an agent's own
/// export is, its head and its lines.
pub fn kept_records(admin: &AdminClient, vault: &str, machine_id: &str) -> (Head, Vec<String>) {
    let mut export = String::new();
    std::io::Read::read_to_string(&mut admin.export_machine_log(vault, machine_id).unwrap(), &mut export).unwrap();
    let (header, report) =
        regent_store::verify_export(std::io::Cursor::new(export.clone().into_bytes()), None).unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.verified_head, header.head);
    (header.head, export.lines().skip(1).map(str::to_string).collect())
}

/// The hash a stored line holds (not checked).
pub fn stored_hash(line: &str) -> Digest32 {
    regent_store::record::decode(line.as_bytes()).unwrap().hash
}

/// One raw HTTP/1.1 exchange, for requests no well-behaved client would send.
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }

    pub fn is_from_service(&self) -> bool {
        self.head.to_ascii_lowercase().contains("\r\nx-regent-vault: 1")
    }
}

pub fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    // The service may answer (413) before reading a large body; a reset on our side is fine then.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    RawAnswer { status, head: head.to_string(), body: body.to_string() }
}

/// A port free at the moment: bind port 0, read it, release it.
// Each test file uses a different part of this module.
#[allow(unused_imports)]
pub use regent_testkit::{Tinyproxy, free_port};

/// The agent's proxy settings for a test's tinyproxy, with or without the user and password.
pub trait ProxyConfigFor {
    fn config(&self, credentials: Option<(&str, &str)>) -> ProxyConfig;
}

impl ProxyConfigFor for Tinyproxy {
    fn config(&self, credentials: Option<(&str, &str)>) -> ProxyConfig {
        ProxyConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            credentials: credentials.map(|(u, p)| (u.to_string(), SecretString::from(p.to_string()))),
        }
    }
}

/// Reads a child's stdout until a line holds `prefix`; returns what follows it on that line.
pub fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the child ended before printing {prefix}");
        }
        // The test harness may have printed "test name ... " on the same line first.
        if let Some(at) = line.find(prefix) {
            let rest = line[at + prefix.len()..].trim().to_string();
            // Keep draining its output so that it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return rest;
        }
    }
}
