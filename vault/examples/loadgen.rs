//! Registrations per second against the vault service on loopback, with N concurrent clients.
//!
//! Each client is a thread with its own `HttpVaultClient` (the agent's real client: it signs every
//! request with the credentials' key) registering machines back to back, each with a new request id.
//! A registration is answered only after the service's log is flushed to disk, so every counted
//! registration was durable before its answer. At the end the machines the service lists are
//! compared with the count, and the log is reopened and verified.
//!
//! ```sh
//! cargo run --release -p regent-vault --example loadgen -- --clients 32 --seconds 10
//! ```
//!
//! Options: `--clients N` (32), `--seconds S` (10), `--warmup S` (2), `--data-dir DIR` (a fresh temp
//! dir; the log lives on that filesystem), `--store-only` (skip HTTP: N threads appending
//! registration-sized events straight to a `regent-store`, to see what the store's shared flush gives),
//! `--no-group-commit` (the service appends and flushes each registration on its own, for comparison),
//! `--postgres` (the service on a PostgreSQL cluster this run starts from Debian's package, in a temp
//! dir, as the tests do), `--processes N` (with `--postgres`: N services on the one database, the
//! clients spread over them), `--inserts` (with `--postgres`: no service, N clients committing plain
//! one-row INSERT transactions, the reference for what this PostgreSQL can commit), `--heads` (each
//! client is a registered machine with a log of its own, and reports its head after every 8 new
//! records, as `regent` does: the anchor read, then the report with the records; only the report is
//! timed, not the growing of the client's own log; `--no-keep`: the vault keeps none of the records,
//! to measure what keeping them costs; `--no-tree`: the heads are anchored but not logged in the
//! transparency log, no leaf and no proof, to measure what the tree costs), `--startup N` (with `--postgres`: N machines and
//! N log records put in the database, then the real `regent vault serve` binary, `REGENT_BIN` or
//! `target/release/regent`, started on it: the time until it listens and its resident memory then),
//! `--fleet N` (with `--postgres`: one machine reports a real agent's log, `replay-fixtures/
//! change-properties.jsonl`, so the vault keeps it and folds its fleet state; N machines are then
//! put in the database with that state, and pages of 100 of `GET /v1/vaults/bench/fleet` are timed).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use regent_engine::model::VaultAnswer;
use regent_engine::ports::{RegisterRequest, VaultClient};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, NewEvent, StoreOptions};
use regent_vault::{AdminClient, BackgroundServer, ClientOptions, HttpVaultClient, ServeConfig};
use zeroize::Zeroizing;

struct Options {
    clients: usize,
    seconds: u64,
    warmup: u64,
    data_dir: Option<PathBuf>,
    store_only: bool,
    group_commit: bool,
    postgres: bool,
    processes: usize,
    inserts: bool,
    heads: bool,
    startup: Option<u64>,
    fleet: Option<u64>,
    keep_records: bool,
    log_heads: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        clients: 32,
        seconds: 10,
        warmup: 2,
        data_dir: None,
        store_only: false,
        group_commit: true,
        postgres: false,
        processes: 1,
        inserts: false,
        heads: false,
        startup: None,
        fleet: None,
        keep_records: true,
        log_heads: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--clients" => options.clients = value("--clients")?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => options.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => options.warmup = value("--warmup")?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--data-dir" => options.data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--store-only" => options.store_only = true,
            "--no-group-commit" => options.group_commit = false,
            "--postgres" => options.postgres = true,
            "--inserts" => options.inserts = true,
            "--heads" => options.heads = true,
            "--no-keep" => options.keep_records = false,
            "--no-tree" => options.log_heads = false,
            "--startup" => options.startup = Some(value("--startup")?.parse().map_err(|e| format!("--startup: {e}"))?),
            "--fleet" => options.fleet = Some(value("--fleet")?.parse().map_err(|e| format!("--fleet: {e}"))?),
            "--processes" => {
                options.processes = value("--processes")?.parse().map_err(|e| format!("--processes: {e}"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.clients == 0 || options.seconds == 0 {
        return Err("--clients and --seconds must be at least 1".into());
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let temp = tempfile::tempdir_in(std::env::temp_dir()).unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let dir = options.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let cluster = options.postgres.then(regent_testkit::postgres::Cluster::start);
    let database = cluster.as_ref().map(|cluster| cluster.database());
    if let Some(machines) = options.startup {
        match (&cluster, &database) {
            (Some(cluster), Some(database)) => startup(cluster, database, machines, &dir),
            _ => fail("--startup needs --postgres"),
        }
    } else if let Some(machines) = options.fleet {
        match (&cluster, &database) {
            (Some(cluster), Some(database)) => fleet(cluster, database, machines, &dir),
            _ => fail("--fleet needs --postgres"),
        }
    } else if options.store_only {
        store_only(&options, &dir);
    } else if options.inserts {
        match &database {
            Some(database) => plain_inserts(&options, &database.url()),
            None => fail("--inserts needs --postgres"),
        }
    } else {
        over_http(&options, &dir, database.as_ref().map(|d| d.url()));
    }
}

/// The vault as the agent's registration names it, from the credentials the vault issued.
fn identity_of(credentials: &regent_credentials::VaultCredentials) -> regent_engine::model::VaultIdentity {
    regent_engine::model::VaultIdentity {
        name: credentials.identity.resource_name.clone(),
        subscription_id: credentials.identity.subscription_id.clone(),
        resource_group: credentials.identity.resource_group.clone(),
        location: credentials.identity.location.clone(),
        resource_id: credentials.identity.resource_id,
    }
}

fn fail(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(1)
}

/// Runs `work` on `clients` threads for warmup + measured seconds; returns the latencies of the
/// measured window and its length.
fn drive(
    clients: usize,
    warmup: u64,
    seconds: u64,
    work: impl Fn(usize, u64) -> Option<Duration> + Send + Sync + 'static,
) -> (Vec<Duration>, Duration) {
    let work = Arc::new(work);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(warmup);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (work, stop) = (work.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    // The work times itself when only part of it counts.
                    let timed = work(client, n);
                    n += 1;
                    if began >= measure_from {
                        latencies.push(timed.unwrap_or_else(|| began.elapsed()));
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(warmup + seconds));
    stop.store(true, Ordering::Relaxed);
    let window = measure_from.elapsed();
    let mut all = Vec::new();
    for thread in threads {
        all.extend(thread.join().unwrap_or_default());
    }
    (all, window)
}

fn report(what: &str, clients: usize, mut latencies: Vec<Duration>, window: Duration) {
    latencies.sort();
    let pick =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    let ms =
        |d: Option<Duration>| d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into());
    println!(
        "{what}: {clients} clients, {} completed in {:.1} s: {:.0}/s; latency p50 {}, p99 {}, max {}",
        latencies.len(),
        window.as_secs_f64(),
        latencies.len() as f64 / window.as_secs_f64(),
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(latencies.last().copied()),
    );
}

fn over_http(options: &Options, dir: &std::path::Path, database_url: Option<String>) {
    let mut config = ServeConfig {
        group_commit: options.group_commit,
        keep_records: options.keep_records,
        log_heads: options.log_heads,
        ..ServeConfig::new(dir, ([127, 0, 0, 1], 0).into())
    };
    if let Some(url) = &database_url {
        config = config.with_database_url(url.clone());
    }
    let servers: Vec<BackgroundServer> = (0..options.processes.max(1))
        .map(|_| BackgroundServer::start(config.clone()).unwrap_or_else(|e| fail(&e.to_string())))
        .collect();
    let server = &servers[0];
    let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), None)
        .unwrap_or_else(|e| fail(&e.to_string()));
    admin.create_vault("bench").unwrap_or_else(|e| fail(&e.to_string()));
    let file = admin.download_credentials("bench", None).unwrap_or_else(|e| fail(&e.to_string()));
    let credentials =
        regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap_or_else(|e| fail(&e.to_string()));
    let identity = identity_of(&credentials);
    let clients: Vec<_> = (0..options.clients)
        .map(|_| {
            HttpVaultClient::new(ClientOptions { attempts: 1, ..ClientOptions::default() })
                .unwrap_or_else(|e| fail(&e.to_string()))
        })
        .collect();
    let endpoints: Vec<String> = servers.iter().map(|s| s.url().to_string()).collect();
    let thumbprint = credentials.certificate.thumbprint.clone();
    let key = credentials.private_key.pkcs8_der().to_vec();
    if options.heads {
        let what = format!(
            "log-head reports of 8 records ({}, {} process{}, records {}, tree {})",
            if database_url.is_some() { "PostgreSQL" } else { "sled" },
            servers.len(),
            if servers.len() == 1 { "" } else { "es" },
            if options.keep_records { "kept" } else { "not kept" },
            if options.log_heads { "on" } else { "off" }
        );
        heads(options, &what, &clients, &endpoints, &identity, &thumbprint, &key);
        for server in servers {
            server.shutdown().unwrap_or_else(|e| fail(&e.to_string()));
        }
        return;
    }
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = refused.clone();
    let (latencies, window) = drive(options.clients, options.warmup, options.seconds, move |client, n| {
        let request = RegisterRequest {
            endpoint: endpoints[client % endpoints.len()].clone(),
            vault: identity.clone(),
            thumbprint: thumbprint.clone(),
            machine_name: format!("bench-{client}-{n}"),
            private_key: Zeroizing::new(key.clone()),
            proxy: None,
            request_id: uuid::Uuid::now_v7().to_string(),
        };
        if let VaultAnswer::Refused { reason, detail } = clients[client].register(&request)
            && counted.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("loadgen: a registration was refused: {reason}: {detail}");
        }
        None
    });
    let what = format!(
        "registrations over HTTP ({}, {} process{}{})",
        if database_url.is_some() { "PostgreSQL" } else { "sled" },
        servers.len(),
        if servers.len() == 1 { "" } else { "es" },
        if options.group_commit { "" } else { ", no group commit" }
    );
    report(&what, options.clients, latencies, window);
    let machines = admin.machines("bench").unwrap_or_else(|e| fail(&e.to_string())).len();
    println!("machines listed by the service: {machines}; refused: {}", refused.load(Ordering::Relaxed));
    for server in servers {
        server.shutdown().unwrap_or_else(|e| fail(&e.to_string()));
    }
    if database_url.is_some() {
        return;
    }
    let store = EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap_or_else(|e| fail(&e.to_string()));
    let verified = store.verify(None).unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "log reopened: {} records, chain {}",
        verified.records,
        if verified.is_ok() { "verified" } else { "BROKEN" }
    );
}

fn store_only(options: &Options, dir: &std::path::Path) {
    let store =
        Arc::new(EventStore::open(dir.join("log"), &StoreOptions::default()).unwrap_or_else(|e| fail(&e.to_string())));
    let payload = serde_json::json!({
        "machine_id": uuid::Uuid::now_v7().to_string(),
        "machine_name": "bench-00-000000",
        "thumbprint": "0".repeat(64),
        "request_id": uuid::Uuid::now_v7().to_string(),
        "nonce": "0".repeat(32),
        "registered_at": chrono::Utc::now(),
    });
    let appender = store.clone();
    let (latencies, window) = drive(options.clients, options.warmup, options.seconds, move |_, _| {
        let meta = BatchMeta {
            recorded_at: chrono::Utc::now(),
            actor: Actor { user: "bench".into(), host: "127.0.0.1".into() },
            correlation_id: uuid::Uuid::now_v7(),
        };
        let event = NewEvent::new("MachineRegistered", 1, &payload).unwrap_or_else(|e| fail(&e.to_string()));
        appender.append("vault/bench", ExpectedVersion::Any, &meta, &[event]).unwrap_or_else(|e| fail(&e.to_string()));
        None
    });
    report("durable appends straight to the store", options.clients, latencies, window);
}

/// N clients, each committing one-row INSERT transactions back to back on its own connection,
/// with the same durability as the vault (`synchronous_commit = on`, the cluster's default).
fn plain_inserts(options: &Options, url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let pool = runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(options.clients as u32)
            .connect(url)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        sqlx::query("CREATE TABLE inserts (id UUID PRIMARY KEY, body TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        pool
    });
    let handle = runtime.handle().clone();
    let body = "x".repeat(400);
    let (latencies, window) = drive(options.clients, options.warmup, options.seconds, move |_, _| {
        handle.block_on(async {
            sqlx::query("INSERT INTO inserts (id, body) VALUES ($1, $2)")
                .bind(uuid::Uuid::now_v7())
                .bind(&body)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
        });
        None
    });
    report("plain one-row INSERT transactions", options.clients, latencies, window);
}

/// One machine per client, registered, each with a log of its own that grows by 8 records before
/// each report.
fn heads(
    options: &Options,
    what: &str,
    clients: &[HttpVaultClient],
    endpoints: &[String],
    identity: &regent_engine::model::VaultIdentity,
    thumbprint: &str,
    key: &[u8],
) {
    struct Machine {
        signer: regent_vault::HeadSigner,
        log: EventStore,
        client: HttpVaultClient,
        _dir: tempfile::TempDir,
    }
    let small = StoreOptions { cache_bytes: 1024 * 1024, ..StoreOptions::default() };
    let machines: Vec<Machine> = clients
        .iter()
        .enumerate()
        .map(|(n, client)| {
            let endpoint = endpoints[n % endpoints.len()].clone();
            let request = RegisterRequest {
                endpoint: endpoint.clone(),
                vault: identity.clone(),
                thumbprint: thumbprint.to_string(),
                machine_name: format!("bench-{n}"),
                private_key: Zeroizing::new(key.to_vec()),
                proxy: None,
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            let machine_id = match client.register(&request) {
                VaultAnswer::Registered { machine_id, .. } => machine_id,
                other => fail(&format!("registering a machine: {other:?}")),
            };
            let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
            let log = EventStore::open(dir.path().join("log"), &small).unwrap_or_else(|e| fail(&e.to_string()));
            let signer = regent_vault::HeadSigner {
                endpoint,
                vault: identity.name.clone(),
                machine_id,
                thumbprint: thumbprint.to_string(),
                private_key: Zeroizing::new(key.to_vec()),
                proxy: None,
            };
            let client = HttpVaultClient::new(ClientOptions { attempts: 1, ..ClientOptions::default() })
                .unwrap_or_else(|e| fail(&e.to_string()));
            Machine { signer, log, client, _dir: dir }
        })
        .collect();
    let payload = serde_json::json!({"step": "bench", "pad": "p".repeat(120)});
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = failures.clone();
    let (latencies, window) = drive(options.clients, options.warmup, options.seconds, move |client, _| {
        let machine = &machines[client];
        let meta = BatchMeta {
            recorded_at: chrono::Utc::now(),
            actor: Actor { user: "bench".into(), host: "127.0.0.1".into() },
            correlation_id: uuid::Uuid::now_v7(),
        };
        let events: Vec<NewEvent> =
            (0..8).map(|_| NewEvent::new("Stepped", 1, &payload).unwrap_or_else(|e| fail(&e.to_string()))).collect();
        let appended =
            machine.log.append("agent", ExpectedVersion::Any, &meta, &events).unwrap_or_else(|e| fail(&e.to_string()));
        let began = Instant::now();
        if let Err(e) = machine.client.report_log_head(&machine.signer, &machine.log, appended.head, None, None)
            && counted.fetch_add(1, Ordering::Relaxed) == 0
        {
            eprintln!("loadgen: a report failed: {e}");
        }
        Some(began.elapsed())
    });
    report(what, options.clients, latencies, window);
    println!("failed reports: {}", failures.load(Ordering::Relaxed));
}

/// Start-up of the real binary on a database holding `machines` machines (and as many log records),
/// three times: the time until it listens, and its resident memory then.
fn startup(
    cluster: &regent_testkit::postgres::Cluster,
    database: &regent_testkit::postgres::Database<'_>,
    machines: u64,
    dir: &std::path::Path,
) {
    let binary =
        std::env::var_os("REGENT_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/release/regent"));
    if !binary.is_file() {
        fail(&format!("{} is not built: cargo build --release -p regent-cli", binary.display()));
    }
    let serve = || {
        let began = Instant::now();
        let mut child = std::process::Command::new(&binary)
            .args(["vault", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("REGENT_VAULT_DATABASE_URL", database.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&e.to_string()));
        let stdout = child.stdout.take().unwrap_or_else(|| fail("no stdout"));
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let listening = lines.next().and_then(Result::ok).unwrap_or_default();
        let took = began.elapsed();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_string();
        let _ = child.kill();
        let _ = child.wait();
        (listening, took, rss)
    };
    // The first start creates the schema; the machines go in after it.
    let (listening, _, _) = serve();
    if !listening.starts_with("listening on") {
        fail(&format!("the service did not start: {listening:?}"));
    }
    let filled = Instant::now();
    cluster.psql(
        database.name(),
        &format!(
            "INSERT INTO regent_vault.vaults (name, identity, created_at) VALUES ('fleet', '{{}}', now()); \
             INSERT INTO regent_vault.machines (vault, machine_id, machine_name, thumbprint, registered_at) \
             SELECT 'fleet', 'm-' || i, 'srv-' || i, repeat('a', 64), now() FROM generate_series(1, {machines}) i; \
             INSERT INTO regent_vault.registrations (vault, request_id, machine_id, thumbprint, machine_name, registered_at) \
             SELECT 'fleet', 'r-' || i, 'm-' || i, repeat('a', 64), 'srv-' || i, now() FROM generate_series(1, {machines}) i; \
             INSERT INTO regent_vault.log (position, event_id, stream, version, record) \
             SELECT i, gen_random_uuid(), 'vault/fleet', i, convert_to(repeat('x', 300), 'UTF8') FROM generate_series(1, {machines}) i; \
             UPDATE regent_vault.log_head SET position = {machines};"
        ),
    );
    cluster.psql(database.name(), "ANALYZE");
    println!("{machines} machines and log records put in the database in {:.1} s", filled.elapsed().as_secs_f64());
    for _ in 0..3 {
        let (listening, took, rss) = serve();
        println!(
            "start-up with {machines} machines: {:.0} ms until it listened ({listening}); {rss}",
            took.as_secs_f64() * 1000.0
        );
    }
}

/// Pages of the fleet over `machines` machines on PostgreSQL, each with a real agent's fleet state.
fn fleet(
    cluster: &regent_testkit::postgres::Cluster,
    database: &regent_testkit::postgres::Database<'_>,
    machines: u64,
    dir: &std::path::Path,
) {
    let config = ServeConfig::new(dir, ([127, 0, 0, 1], 0).into()).with_database_url(database.url());
    let server = BackgroundServer::start(config).unwrap_or_else(|e| fail(&e.to_string()));
    let admin = AdminClient::from_token_file(server.url(), server.admin_token_path(), None)
        .unwrap_or_else(|e| fail(&e.to_string()));
    admin.create_vault("bench").unwrap_or_else(|e| fail(&e.to_string()));
    let file = admin.download_credentials("bench", None).unwrap_or_else(|e| fail(&e.to_string()));
    let credentials =
        regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap_or_else(|e| fail(&e.to_string()));
    let identity = identity_of(&credentials);
    let client = HttpVaultClient::new(ClientOptions { attempts: 1, ..ClientOptions::default() })
        .unwrap_or_else(|e| fail(&e.to_string()));
    let key = credentials.private_key.pkcs8_der().to_vec();
    let request = RegisterRequest {
        endpoint: server.url().to_string(),
        vault: identity.clone(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        machine_name: "real".into(),
        private_key: Zeroizing::new(key.clone()),
        proxy: None,
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let machine_id = match client.register(&request) {
        VaultAnswer::Registered { machine_id, .. } => machine_id,
        other => fail(&format!("registering a machine: {other:?}")),
    };
    // A real agent's log: folders, proxy, credentials, passphrase, registration, changed properties.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../replay-fixtures/change-properties.jsonl");
    let log_dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let log =
        EventStore::open(log_dir.path().join("log"), &StoreOptions::default()).unwrap_or_else(|e| fail(&e.to_string()));
    let input = std::fs::File::open(fixture).unwrap_or_else(|e| fail(&format!("{fixture}: {e}")));
    log.import(std::io::BufReader::new(input)).unwrap_or_else(|e| fail(&e.to_string()));
    let signer = regent_vault::HeadSigner {
        endpoint: server.url().to_string(),
        vault: identity.name.clone(),
        machine_id: machine_id.clone(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: Zeroizing::new(key),
        proxy: None,
    };
    client.report_log_head(&signer, &log, log.head(), None, None).unwrap_or_else(|e| fail(&e.to_string()));
    let filled = Instant::now();
    cluster.psql(
        database.name(),
        &format!(
            "INSERT INTO regent_vault.machines (vault, machine_id, machine_name, thumbprint, registered_at, \
             anchor_position, anchor_hash, anchored_at, mirrored_position, mirrored_hash) \
             SELECT 'bench', 'm-' || i, 'srv-' || i, m.thumbprint, now() - make_interval(secs => i), \
             m.anchor_position, m.anchor_hash, m.anchored_at, m.mirrored_position, m.mirrored_hash \
             FROM generate_series(1, {machines}) i, regent_vault.machines m WHERE m.machine_id = '{machine_id}'; \
             INSERT INTO regent_vault.fleet_states (vault, machine_id, position, state) \
             SELECT 'bench', 'm-' || i, f.position, f.state FROM generate_series(1, {machines}) i, \
             regent_vault.fleet_states f WHERE f.machine_id = '{machine_id}'; ANALYZE;"
        ),
    );
    let state_bytes = cluster.psql(
        database.name(),
        &format!("SELECT length(state) FROM regent_vault.fleet_states WHERE machine_id = '{machine_id}'"),
    );
    println!(
        "{machines} machines put in the database in {:.1} s, each with a fleet state of {} bytes",
        filled.elapsed().as_secs_f64(),
        state_bytes.trim()
    );
    let time_page = |after: Option<&str>| {
        let mut took: Vec<Duration> = (0..21)
            .map(|_| {
                let began = Instant::now();
                let page = admin.fleet("bench", Some(100), after).unwrap_or_else(|e| fail(&e.to_string()));
                let took = began.elapsed();
                if page.machines.len() != 100 {
                    fail(&format!("a page of {} machines", page.machines.len()));
                }
                took
            })
            .collect();
        took.sort();
        (took[10], took[18], took[20])
    };
    let (median, p90, max) = time_page(None);
    println!(
        "first page of 100: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (21 requests)",
        median.as_secs_f64() * 1000.0,
        p90.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    // A page in the middle of the fleet, after the cursor an earlier page would give.
    let mut after = None;
    for _ in 0..(machines / 200).min(50) {
        after = admin.fleet("bench", Some(100), after.as_deref()).unwrap_or_else(|e| fail(&e.to_string())).next;
    }
    let (median, p90, max) = time_page(after.as_deref());
    println!(
        "a later page of 100: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (21 requests)",
        median.as_secs_f64() * 1000.0,
        p90.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    server.shutdown().unwrap_or_else(|e| fail(&e.to_string()));
}
