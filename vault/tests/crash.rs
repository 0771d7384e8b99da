//! `kill -9` of the service between two registrations: an acknowledged registration is on disk, and
//! retrying the interrupted one makes exactly one machine. And 100 agents registering at once while
//! the service is killed again and again: one machine per agent.
//!
//! The service runs in a child process: this test binary started again with only the
//! `child_vault_service` test selected and `REGENT_VAULT_CHILD_DIR` set.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::*;
use regent_engine::Reason;
use regent_engine::model::VaultAnswer;
use regent_engine::ports::VaultClient;
use regent_vault::{AdminClient, ClientOptions, HttpVaultClient, ServeConfig};

const CHILD_ENV: &str = "REGENT_VAULT_CHILD_DIR";

/// The tests that kill services one at a time: their timing (a kill before or after an answer)
/// must not depend on another one loading the machine meanwhile.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The child's entry point (what `regent vault serve` runs); does nothing in a normal test run.
#[test]
fn child_vault_service() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    regent_vault::run_until_signal(ServeConfig::new(dir, loopback()), |info| {
        println!("LISTENING {}", info.url);
    })
    .unwrap();
    println!("STOPPED");
}

/// Kills the child when dropped, so a failing test leaves no service behind.
struct ChildService {
    child: Child,
    url: String,
}

impl ChildService {
    fn start(dir: &std::path::Path) -> ChildService {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_vault_service", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = wait_for_line(&mut child, "LISTENING");
        ChildService { child, url }
    }

    /// SIGKILL: no shutdown, no flush beyond what was acknowledged.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_acknowledged_registration_survives_sigkill_and_a_retry_makes_one_machine() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let one_try = Arc::new(
        HttpVaultClient::new(ClientOptions {
            attempts: 1,
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        })
        .unwrap(),
    );
    let mut service = ChildService::start(dir.path());
    let token_file = dir.path().join(regent_vault::ADMIN_TOKEN_FILE);
    let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
    admin.create_vault("crash").unwrap();
    let file = admin.download_credentials("crash", None).unwrap();
    let credentials = Arc::new(regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap());

    // Each round: one registration acknowledged, then a second one in flight when the service is
    // killed (at a different moment each round), then a restart and a retry of the second.
    let mut expected = Vec::new();
    let mut acknowledged = 0;
    // Delays from "before the request is sent" to "long after it was answered" (a debug build
    // answers in a few milliseconds).
    for (round, delay_ms) in [0u64, 2, 5, 10, 25, 150].into_iter().enumerate() {
        let first = one_try.register(&register_request(
            &credentials,
            Some(&service.url),
            "first",
            &format!("first-{round}"),
            None,
        ));
        let first_id = machine_id(&first);
        expected.push(first_id.clone());

        let (client, creds, url) = (one_try.clone(), credentials.clone(), service.url.clone());
        let second_id = format!("second-{round}");
        let request_id = second_id.clone();
        let in_flight = std::thread::spawn(move || {
            client.register(&register_request(&creds, Some(&url), "second", &request_id, None))
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        service.kill_9();
        let interrupted = in_flight.join().unwrap();
        acknowledged += usize::from(matches!(interrupted, VaultAnswer::Registered { .. }));
        match &interrupted {
            VaultAnswer::Registered { .. } => {}
            VaultAnswer::Refused { reason, detail } => assert_eq!(*reason, Reason::VaultUnreachable, "{detail}"),
        }

        service = ChildService::start(dir.path());
        let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
        let machines = admin.machines("crash").unwrap();
        assert!(
            machines.iter().any(|m| m.machine_id == first_id),
            "round {round}: the acknowledged registration is there"
        );

        let retried = one_try.register(&register_request(&credentials, Some(&service.url), "second", &second_id, None));
        let retried_id = machine_id(&retried);
        if let VaultAnswer::Registered { machine_id, .. } = &interrupted {
            assert_eq!(&retried_id, machine_id, "round {round}: the retry gets the first answer");
        }
        let again = one_try.register(&register_request(&credentials, Some(&service.url), "second", &second_id, None));
        assert_eq!(machine_id(&again), retried_id);
        expected.push(retried_id);

        let machines = admin.machines("crash").unwrap();
        let mut ids: Vec<_> = machines.iter().map(|m| m.machine_id.clone()).collect();
        ids.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(ids, want, "round {round}: exactly one machine per registration");
    }
    service.kill_9();
    assert!(acknowledged > 0, "at least one round killed the service after it answered the second registration");
}

#[test]
fn sigterm_stops_the_service_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let service = ChildService::start(dir.path());
    let token_file = dir.path().join(regent_vault::ADMIN_TOKEN_FILE);
    let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
    admin.create_vault("term").unwrap();
    let status = Command::new("kill").arg("-TERM").arg(service.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let mut service = service;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = service.child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the service did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "a clean stop: {exit}");
    // The log was closed: a new start opens it at once and has the vault.
    let service = ChildService::start(dir.path());
    let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
    assert_eq!(admin.vault("term").unwrap().name, "term");
}

/// A small deterministic generator, seeded at random and printed, so a failing run can be told apart.
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Xorshift {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        let seed = u64::from_le_bytes(seed) | 1;
        println!("kill schedule seed: {seed}");
        Xorshift(seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn a_hundred_agents_registering_through_repeated_sigkills_make_one_machine_each() {
    let _alone = one_at_a_time();
    const AGENTS: usize = 100;
    const KILLS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join(regent_vault::ADMIN_TOKEN_FILE);
    let mut service = ChildService::start(dir.path());
    let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
    admin.create_vault("fleet").unwrap();
    let file = admin.download_credentials("fleet", None).unwrap();
    let credentials = Arc::new(regent_credentials::parse(&file.file_name, file.xml.as_bytes()).unwrap());
    let url = Arc::new(RwLock::new(service.url.clone()));
    let mut random = Xorshift::seeded();
    // Liveness, not speed: once the kills are over, every agent is answered within a bound
    // generous enough for a loaded machine (a service restart under load takes seconds).
    let kills_over: Arc<RwLock<Option<Instant>>> = Arc::new(RwLock::new(None));
    let calls = Arc::new(AtomicUsize::new(0));

    // Each agent starts at its own moment within the kill period, then calls until it is answered,
    // always with its own request id and name (a lost answer, a refused connection, a service
    // that is starting: the same request again, at whatever address the service has now).
    let agents: Vec<_> = (0..AGENTS)
        .map(|n| {
            let (credentials, url, calls, kills_over) =
                (credentials.clone(), url.clone(), calls.clone(), kills_over.clone());
            let start_after = Duration::from_millis(random.below(3000));
            std::thread::spawn(move || {
                let client = HttpVaultClient::new(ClientOptions {
                    connect_timeout: Duration::from_secs(1),
                    request_timeout: Duration::from_secs(3),
                    total_timeout: Duration::from_secs(4),
                    attempts: 2,
                    backoff: Duration::from_millis(20),
                    ..ClientOptions::default()
                })
                .unwrap();
                let (name, request_id) = (format!("agent-{n:03}"), format!("fleet-request-{n:03}"));
                std::thread::sleep(start_after);
                let mut own_calls = 0;
                loop {
                    let over = *kills_over.read().unwrap();
                    assert!(over.is_none_or(|at| at.elapsed() < Duration::from_secs(120)), "{name} was never answered");
                    let endpoint = url.read().unwrap().clone();
                    own_calls += 1;
                    match client.register(&register_request(&credentials, Some(&endpoint), &name, &request_id, None)) {
                        VaultAnswer::Registered { machine_id, .. } => {
                            calls.fetch_add(own_calls, Ordering::SeqCst);
                            return (name, machine_id, own_calls);
                        }
                        VaultAnswer::Refused { reason: Reason::VaultUnreachable | Reason::VaultError, .. } => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        VaultAnswer::Refused { reason, detail } => panic!("{name}: refused {reason}: {detail}"),
                    }
                }
            })
        })
        .collect();

    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(50 + random.below(250)));
        service.kill_9();
        service = ChildService::start(dir.path());
        *url.write().unwrap() = service.url.clone();
    }
    *kills_over.write().unwrap() = Some(Instant::now());
    let answers: Vec<(String, String, usize)> = agents.into_iter().map(|agent| agent.join().unwrap()).collect();

    let admin = AdminClient::from_token_file(&service.url, &token_file, None).unwrap();
    let machines = admin.machines("fleet").unwrap();
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for machine in &machines {
        by_name.entry(machine.machine_name.as_str()).or_default().push(machine.machine_id.as_str());
    }
    assert_eq!(machines.len(), AGENTS, "one machine per agent, no more");
    for (name, machine_id, _) in &answers {
        assert_eq!(by_name.get(name.as_str()), Some(&vec![machine_id.as_str()]), "{name}: exactly its machine");
    }
    let retried = answers.iter().filter(|(_, _, calls)| *calls > 1).count();
    println!("{retried} of {AGENTS} agents called more than once; {} calls in all", calls.load(Ordering::SeqCst));
    assert!(retried >= 10, "the kills hit registrations in flight ({retried} agents had to call again)");

    // The log the kills left behind verifies.
    service.kill_9();
    let store = regent_store::EventStore::open(dir.path().join("log"), &regent_store::StoreOptions::default()).unwrap();
    assert!(store.verify(None).unwrap().failure.is_none());
}
