//! `regent vault serve` on PostgreSQL, SIGKILLed in the middle of concurrent registrations and
//! replaced by another process on the same database, round after round. Whatever a kill cut
//! (a request unread, a transaction half done, a commit whose answer never left), the clients ask
//! again under their request ids at the new process, and the database ends with exactly one
//! machine per request id: every acknowledged one, as acknowledged, and in the log once.
#![allow(clippy::disallowed_macros, reason = "a test says what it measured on stderr, for whoever runs it")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use regent_credentials::VaultCredentials;
use regent_engine::Reason;
use regent_engine::model::{VaultAnswer, VaultIdentity};
use regent_engine::ports::{RegisterRequest, VaultClient};
use regent_vault::{AdminClient, ClientOptions, HttpVaultClient};
use zeroize::Zeroizing;

/// Clients registering at once, and the registrations each sends in a round.
const CLIENTS: usize = 6;
const PER_CLIENT: usize = 8;
/// Each round kills once this many more of its registrations were answered than the round before.
const KILL_STEP: usize = 4;

/// `regent vault serve` on the database, in a child process.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    /// Starts a process on `database_url` (in the environment: a password in argv is refused),
    /// its token in `data_dir`, its stderr appended to `log`.
    fn start(data_dir: &Path, database_url: &str, log: &Path) -> Served {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
        cmd.env_remove("REGENT_DATA_DIR").env_remove("RUST_LOG").env("NO_COLOR", "1");
        for var in [
            "REGENT_VAULT_LISTEN",
            "REGENT_VAULT_TLS_CERT",
            "REGENT_VAULT_TLS_KEY",
            "REGENT_VAULT_PUBLIC_URL",
            "REGENT_VAULT_LOG_FORMAT",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("REGENT_VAULT_DATABASE_URL", database_url)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--json", "vault", "serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Drained to the end: a closed pipe would kill the service at its next line (SIGPIPE).
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(ready) => Served { child, url: ready["url"].as_str().unwrap().to_string() },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the vault did not start ({e}): {line:?}; {}", std::fs::read_to_string(log).unwrap_or_default())
            }
        }
    }

    /// SIGKILL: no drain, no unwinding; whatever was in flight is cut.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(credentials: &VaultCredentials, endpoint: &str, request_id: &str) -> RegisterRequest {
    let id = &credentials.identity;
    RegisterRequest {
        endpoint: endpoint.to_string(),
        vault: VaultIdentity {
            name: id.resource_name.clone(),
            subscription_id: id.subscription_id.clone(),
            resource_group: id.resource_group.clone(),
            location: id.location.clone(),
            resource_id: id.resource_id,
        },
        thumbprint: credentials.certificate.thumbprint.clone(),
        machine_name: format!("srv-{request_id}"),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy: None,
        request_id: request_id.to_string(),
    }
}

/// Registers under `request_id` at whichever process is current, asking again (signed afresh)
/// while none answers, until one does. Returns the machine.
fn register_until_answered(
    client: &HttpVaultClient,
    credentials: &VaultCredentials,
    current: &RwLock<String>,
    request_id: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint = current.read().unwrap().clone();
        match client.register(&request(credentials, &endpoint, request_id)) {
            VaultAnswer::Registered { machine_id, .. } => return machine_id,
            VaultAnswer::Refused { reason: Reason::VaultUnreachable | Reason::VaultError, detail } => {
                assert!(Instant::now() < deadline, "{request_id} never answered: {detail}");
                std::thread::sleep(Duration::from_millis(10));
            }
            VaultAnswer::Refused { reason, detail } => panic!("{request_id} refused: {reason}: {detail}"),
        }
    }
}

#[test]
fn a_vault_on_postgresql_sigkilled_mid_load_and_replaced_keeps_one_machine_per_acknowledged_request() {
    const ROUNDS: usize = 10;
    let cluster = regent_testkit::postgres::shared();
    let database = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, log) = (dir.path().join("vault"), dir.path().join("vault.log"));
    let sql = |sql: &str| cluster.psql(database.name(), sql).trim().to_string();

    let mut served = Served::start(&data_dir, &database.url(), &log);
    let admin = AdminClient::from_token_file(&served.url, &data_dir.join("admin.token"), None).unwrap();
    admin.create_vault("prod").unwrap();
    let file = admin.download_credentials("prod", None).unwrap();
    let credentials = Arc::new(regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap());
    // One attempt a call: the clients ask again themselves, at whichever process is current.
    let client = Arc::new(
        HttpVaultClient::new(ClientOptions {
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(5),
            attempts: 1,
            backoff: Duration::from_millis(10),
        })
        .unwrap(),
    );
    let current = Arc::new(RwLock::new(served.url.clone()));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let mut answered_at_kills = Vec::new();
    let mut rounds = Vec::new();

    for round in 0..ROUNDS {
        let started = Instant::now();
        let answered_before = acknowledged.lock().unwrap().len();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, credentials, current, acknowledged) =
                    (client.clone(), credentials.clone(), current.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    for n in 0..PER_CLIENT {
                        let request_id = format!("r{round}-c{c}-{n}");
                        let machine = register_until_answered(&client, &credentials, &current, &request_id);
                        let earlier = acknowledged.lock().unwrap().insert(request_id.clone(), machine);
                        assert!(earlier.is_none(), "{request_id} acknowledged twice");
                    }
                })
            })
            .collect();
        // Mid-load, at another point of it each round: once 0, 4, 8 ... of its registrations
        // were answered (however fast this machine is), and a few milliseconds more.
        let deadline = Instant::now() + Duration::from_secs(10);
        while acknowledged.lock().unwrap().len() - answered_before < KILL_STEP * round {
            assert!(Instant::now() < deadline, "round {round}: the registrations did not get going");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        let answered = acknowledged.lock().unwrap().len() - answered_before;
        served.kill();
        answered_at_kills.push(answered);
        assert!(
            answered < CLIENTS * PER_CLIENT,
            "round {round}: every registration was answered before the kill; kill earlier"
        );
        served = Served::start(&data_dir, &database.url(), &log);
        *current.write().unwrap() = served.url.clone();
        for client in clients {
            client.join().unwrap();
        }
        rounds.push(started.elapsed());

        // What the database holds: one machine per request id, each acknowledged as it is held.
        let acknowledged = acknowledged.lock().unwrap().clone();
        let total = acknowledged.len();
        assert_eq!(total, (round + 1) * CLIENTS * PER_CLIENT);
        assert_eq!(sql("SELECT count(*) FROM regent_vault.machines"), total.to_string(), "round {round}");
        assert_eq!(sql("SELECT count(*) FROM regent_vault.registrations"), total.to_string(), "round {round}");
        let orphans = "SELECT count(*) FROM regent_vault.machines m WHERE NOT EXISTS \
                       (SELECT 1 FROM regent_vault.registrations r WHERE r.machine_id = m.machine_id)";
        assert_eq!(sql(orphans), "0", "round {round}: a machine no request id names");
        let held: BTreeMap<String, String> = sql("SELECT request_id, machine_id FROM regent_vault.registrations")
            .lines()
            .map(|line| {
                let (request, machine) = line.split_once('|').unwrap_or_else(|| panic!("{line}"));
                (request.to_string(), machine.to_string())
            })
            .collect();
        assert_eq!(held, acknowledged, "round {round}");
        // And the log: one MachineRegistered each, positions gapless.
        let records = sql("SELECT convert_from(record, 'UTF8') FROM regent_vault.log ORDER BY position");
        let records: Vec<regent_store::Record> =
            records.lines().map(|line| regent_store::decode_record(line.as_bytes()).unwrap()).collect();
        assert!(records.iter().enumerate().all(|(i, r)| r.position == i as u64 + 1), "round {round}: a gap");
        let logged: BTreeMap<String, String> = records
            .iter()
            .filter(|r| r.kind == "MachineRegistered")
            .map(|r| {
                let payload: serde_json::Value = r.payload_as().unwrap();
                (
                    payload["request_id"].as_str().unwrap().to_string(),
                    payload["machine_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let registered = records.iter().filter(|r| r.kind == "MachineRegistered").count();
        assert_eq!((registered, &logged), (total, &acknowledged), "round {round}");
    }
    eprintln!("registrations answered before each kill (of {}): {answered_at_kills:?}", CLIENTS * PER_CLIENT);
    eprintln!("rounds took {rounds:?}");
    let listed = AdminClient::from_token_file(&served.url, &data_dir.join("admin.token"), None).unwrap();
    assert_eq!(listed.machines("prod").unwrap().len(), ROUNDS * CLIENTS * PER_CLIENT);
}
