//! Helpers shared by the end-to-end tests.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use chrono::{DateTime, Duration, Utc};
use regent_vault::{BackgroundServer, ServeConfig};

/// The arguments of steps many tests run, added to a `regent` command.
pub trait StepArgs {
    /// `folders --install-dir INSTALL --scratch-dir SCRATCH --backup-size SIZE`.
    fn folders(&mut self, install: impl AsRef<OsStr>, scratch: impl AsRef<OsStr>, size: &str) -> &mut Self;
}

impl StepArgs for Command {
    fn folders(&mut self, install: impl AsRef<OsStr>, scratch: impl AsRef<OsStr>, size: &str) -> &mut Self {
        self.args(["folders", "--install-dir"])
            .arg(install)
            .arg("--scratch-dir")
            .arg(scratch)
            .args(["--backup-size", size])
    }
}

/// `properties throttling set` with these work days, work hours and bandwidths.
pub const fn throttling_set<'a>(days: &'a str, hours: &'a str, work: &'a str, non_work: &'a str) -> [&'a str; 11] {
    [
        "properties",
        "throttling",
        "set",
        "--work-days",
        days,
        "--work-hours",
        hours,
        "--work-bandwidth",
        work,
        "--non-work-bandwidth",
        non_work,
    ]
}

/// Writes a credentials file for `vault`, issued as the vault service issues them, valid from
/// `from` for `hours`.
pub fn write_credentials(path: &Path, vault: &str, from: DateTime<Utc>, hours: i64) {
    write_credentials_until(path, vault, from, from + Duration::hours(hours));
}

/// The same, valid from `from` until `until`.
pub fn write_credentials_until(path: &Path, vault: &str, from: DateTime<Utc>, until: DateTime<Utc>) {
    let issued = regent_credentials::issue(&regent_credentials::IssueRequest {
        identity: regent_credentials::VaultIdentity {
            resource_name: vault.into(),
            subscription_id: "00000000-0000-0000-0000-000000000042".into(),
            resource_group: "rg-backup".into(),
            location: "westeurope".into(),
            resource_id: 4242,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: "http://127.0.0.1:9".into(),
        agent_links: vec![],
        transparency_log_key: None,
        not_before: from,
        not_after: until,
    })
    .unwrap();
    std::fs::write(path, issued.xml.as_bytes()).unwrap();
}

/// A temp dir with a real vault service on 127.0.0.1 (its data in `vault/`), and agents in
/// sibling data dirs, driven through the real binary.
pub struct Setup {
    pub dir: tempfile::TempDir,
    server: Option<BackgroundServer>,
    addr: SocketAddr,
    token: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server =
            BackgroundServer::start(ServeConfig::new(dir.path().join("vault"), "127.0.0.1:0".parse().unwrap()))
                .unwrap();
        let (addr, token) = (server.local_addr(), server.admin_token_path().to_path_buf());
        Setup { dir, server: Some(server), addr, token }
    }

    /// The vault service's URL (the same across a stop and a start).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the vault service (its log closed); agents find nothing listening.
    pub fn stop_vault(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().unwrap();
        }
    }

    /// Starts the vault service again on its data and its port. Another test may hold the port for
    /// a moment (ports are handed out by the kernel to everyone), so a busy port is tried again.
    pub fn start_vault(&mut self) {
        self.stop_vault();
        let mut last_error = None;
        for _ in 0..100 {
            let config = ServeConfig::new(self.dir.path().join("vault"), self.addr);
            match BackgroundServer::start(config) {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the vault cannot listen on {} again: {last_error:?}", self.addr);
    }

    /// Stops the vault service and leaves something at its address that closes every connection
    /// at once, until the guard is dropped: a vault down behind a proxy still listening. Each
    /// report then fails at its first attempt (a refused connection is tried again after a
    /// backoff, which makes hundreds of steps slow).
    pub fn vault_down_fast(&mut self) -> ClosedPort {
        self.stop_vault();
        let mut last_error = None;
        for _ in 0..100 {
            match std::net::TcpListener::bind(self.addr) {
                Ok(listener) => return ClosedPort::serve(listener),
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("cannot listen on {} again: {last_error:?}", self.addr);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `regent --data-dir <dir>/<agent>`, as a std command (for a pseudo-terminal).
    pub fn regent_std(&self, agent: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regent"));
        cmd.env_remove("REGENT_DATA_DIR")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .arg("--data-dir")
            .arg(self.path(agent));
        cmd
    }

    pub fn regent(&self, agent: &str) -> Command {
        Command::from_std(self.regent_std(agent))
    }

    /// `regent --json <args>` for `agent`, parsed.
    pub fn json(&self, agent: &str, args: &[&str]) -> serde_json::Value {
        let out = self.regent(agent).arg("--json").args(args).output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = self.regent("admin");
        cmd.args(["vault"]).args(args).arg("--server").arg(self.url()).arg("--token-file").arg(&self.token);
        cmd.output().unwrap()
    }

    pub fn download(&self, vault: &str, file: &str) -> PathBuf {
        let output = self.path(file);
        let out = self.admin(&["credentials", "--vault", vault, "--output", output.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        output
    }

    /// The folders step for `agent`, with folders beside its data dir and a backup of 1 GiB.
    pub fn folders(&self, agent: &str) -> Output {
        let (install, scratch) = (self.path(&format!("{agent}-i")), self.path(&format!("{agent}-s")));
        self.regent(agent).folders(install, scratch, "1GiB").output().unwrap()
    }

    /// folders, credentials, passphrase for the agent in `agent`.
    pub fn prepare(&self, agent: &str, credentials: &Path) {
        let ok = |out: Output| assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        ok(self.folders(agent));
        ok(self.regent(agent).args(["credentials", "load"]).arg(credentials).output().unwrap());
        ok(self
            .regent(agent)
            .args(["passphrase", "set", "--passphrase-stdin"])
            .write_stdin("a good long passphrase\n")
            .output()
            .unwrap());
    }

    /// Runs `regent ARGS` for `agent`: the exit code and stderr.
    pub fn step(&self, agent: &str, args: &[&str]) -> (i32, String) {
        let out = self.regent(agent).args(args).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One agent's data dir (`<temp>/data`) and the files beside it, driven through the real binary.
/// Each test file adds what its scenarios need.
pub struct Agent {
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn new() -> Agent {
        Agent { dir: tempfile::tempdir().unwrap() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `regent --data-dir <data>`, without the caller's environment leaking in.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
        cmd.env_remove("REGENT_DATA_DIR")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .arg("--data-dir")
            .arg(self.data_dir());
        cmd
    }

    /// The folders step with these folders and a backup of 1 GiB.
    pub fn folders_at(&self, install: &Path, scratch: &Path) -> Output {
        self.cmd().folders(install, scratch, "1GiB").output().unwrap()
    }

    /// The folders step with the folders `install` and `scratch` beside the data dir.
    pub fn folders(&self) -> Output {
        self.folders_at(&self.path("install"), &self.path("scratch"))
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.cmd().args(args).write_stdin(stdin).output().unwrap()
    }

    /// `regent --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.cmd().arg("--json").args(args).output().unwrap();
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&output.stdout)))
    }
}

/// A port whose every connection is closed as soon as it is accepted (see
/// [`Setup::vault_down_fast`]); dropping it frees the port.
pub struct ClosedPort {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClosedPort {
    fn serve(listener: std::net::TcpListener) -> ClosedPort {
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        });
        ClosedPort { addr, stop, thread: Some(thread) }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn refused_with(result: (i32, String), reason: &str) {
    assert_eq!(result.0, 1, "{}", result.1);
    assert!(result.1.starts_with(&format!("regent: {reason}: ")), "{}", result.1);
}

/// Every form a secret could take in bytes.
pub fn leaks(haystack: &[u8], secret: &str) -> bool {
    use base64::Engine as _;
    let forms = [
        secret.as_bytes().to_vec(),
        hex::encode(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(secret).into_bytes(),
    ];
    forms.iter().any(|form| haystack.windows(form.len()).any(|w| w == form.as_slice()))
}

/// Copies a directory tree (a data dir, say: a copy of a server's state at one moment).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The forms the private key of a credentials file could take in bytes, each with a name, derived
/// from the file as regent-credentials reads it (`parse`: the PKCS#12 in `ManagementCert`, opened
/// with the empty password, holds the PKCS#8 key):
/// - the PKCS#8 DER, whole, in base64 and in hex;
/// - its PEM body: each line of the base64 wrapped at 64 characters, as `BEGIN PRIVATE KEY` writes it;
/// - the P-256 private scalar alone (what any other encoding of the key holds), raw, in hex and base64;
/// - the PKCS#12 bundle (the key under an empty password: a copy of it is the key), as the file's
///   base64 text (one 64-character slice) and as bytes (a 32-byte window from its middle).
pub fn private_key_forms(credentials_file: &Path) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let bytes = std::fs::read(credentials_file).unwrap();
    let name = credentials_file.to_str().unwrap();
    let parsed = regent_credentials::parse(name, &bytes).unwrap();
    let der = parsed.private_key.pkcs8_der().to_vec();
    let mut forms = vec![
        ("PKCS#8 DER".to_string(), der.clone()),
        ("PKCS#8 DER in base64".to_string(), STANDARD.encode(&der).into_bytes()),
        ("PKCS#8 DER in hex".to_string(), hex::encode(&der).into_bytes()),
    ];
    let pem_body = STANDARD.encode(&der);
    let lines: Vec<&[u8]> = pem_body.as_bytes().chunks(64).collect();
    assert!(lines.len() >= 2, "a P-256 PKCS#8 key is more than one PEM line");
    for (i, line) in lines.iter().enumerate().filter(|(_, line)| line.len() >= 16) {
        forms.push((format!("PEM line {}", i + 1), line.to_vec()));
    }
    // ECPrivateKey (RFC 5915) inside the PKCS#8: version 1 (02 01 01), then the scalar (04 20 ...).
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("a P-256 key's scalar");
    let scalar = der[at + 5..at + 5 + 32].to_vec();
    forms.push(("private scalar in hex".into(), hex::encode(&scalar).into_bytes()));
    forms.push(("private scalar in base64".into(), STANDARD.encode(&scalar).into_bytes()));
    forms.push(("private scalar".into(), scalar));
    // The bundle as the file holds it.
    let text = String::from_utf8(bytes).unwrap();
    let start = text.find("<ManagementCert>").expect("a ManagementCert element") + "<ManagementCert>".len();
    let end = start + text[start..].find("</ManagementCert>").unwrap();
    let bundle_text: String = text[start..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    assert!(bundle_text.len() > 256, "the bundle is in the file");
    let middle = bundle_text.len() / 2;
    forms.push(("PKCS#12 base64 text".into(), bundle_text.as_bytes()[middle..middle + 64].to_vec()));
    let bundle = STANDARD.decode(&bundle_text).unwrap();
    let middle = bundle.len() / 2;
    forms.push(("PKCS#12 bytes".into(), bundle[middle..middle + 32].to_vec()));
    forms
}

pub use regent_testkit::Tinyproxy;
