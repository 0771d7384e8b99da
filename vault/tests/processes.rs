//! Several vault processes on one PostgreSQL database, and that database failing under them. Each
//! process here is a service of its own (its own runtime, pool and port) started with the same
//! storage: the same database and the same admin token. Every promise the vault makes to an agent
//! must hold whichever process answers: one machine per request id, a nonce good once, a PIN good
//! once and its guesses counted together, the newest credentials only, a log head that never goes
//! back. And a database that goes away is a fast 503 that the pool recovers from by itself, with
//! nothing acknowledged that was not committed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use regent_engine::Reason;
use regent_engine::model::PinAnswer;
use regent_engine::ports::VaultClient;
use regent_vault::protocol::MAX_PIN_FAILURES;
use regent_vault::{HeadSigner, ServeConfig};
use zeroize::Zeroizing;

/// The `MachineRegistered` records among `records`: request id to machine id, and how many.
fn registered(records: &[regent_store::Record]) -> (BTreeMap<String, String>, usize) {
    let mut seen = BTreeMap::new();
    let mut count = 0;
    for record in records.iter().filter(|r| r.kind == "MachineRegistered") {
        let payload: serde_json::Value = record.payload_as().unwrap();
        let request_id = payload["request_id"].as_str().unwrap().to_string();
        seen.insert(request_id, payload["machine_id"].as_str().unwrap().to_string());
        count += 1;
    }
    (seen, count)
}

fn listed(admin: &regent_vault::AdminClient, vault: &str) -> BTreeSet<String> {
    admin.machines(vault).unwrap().into_iter().map(|m| m.machine_id).collect()
}

fn refused(answer: PinAnswer) -> (Reason, String) {
    match answer {
        PinAnswer::Refused { reason, detail } => (reason, detail),
        PinAnswer::Valid { issued_at } => panic!("expected a refusal, the PIN was valid (issued at {issued_at})"),
    }
}

/// A nonce no other request of the test uses.
fn fresh_nonce() -> String {
    format!("nonce-{}", uuid::Uuid::now_v7().simple())
}

#[test]
fn concurrent_registrations_over_two_processes_make_one_machine_per_request_id() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    let credentials = Arc::new(vault.vault_with_credentials("shared"));
    let before = vault.log_position();
    let endpoints = [vault.url(), other.url()];
    // One attempt each: a conflict between the processes must be resolved by the vault, not
    // hidden by a client's retry.
    let client = Arc::new(one_attempt_client());
    // 8 request ids, each sent 4 times, alternately to each process, all 32 at the same moment.
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|n| {
            let (request, copy) = (n % 8, n / 8);
            let sent = register_request(
                &credentials,
                Some(&endpoints[copy % 2]),
                &format!("srv-{request}"),
                &format!("req-{request}"),
                None,
            );
            let (client, barrier) = (client.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (sent.request_id.clone(), machine_id(&client.register(&sent)))
            })
        })
        .collect();
    let mut answers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for thread in threads {
        let (request_id, machine) = thread.join().unwrap();
        answers.entry(request_id).or_default().insert(machine);
    }
    assert_eq!(answers.len(), 8);
    let mut expected = BTreeMap::new();
    for (request_id, machines) in &answers {
        assert_eq!(machines.len(), 1, "{request_id} was answered with several machines: {machines:?}");
        expected.insert(request_id.clone(), machines.first().unwrap().clone());
    }
    let machines: BTreeSet<String> = expected.values().cloned().collect();
    assert_eq!(machines.len(), 8, "one machine per request id: {expected:?}");
    assert_eq!(listed(&vault.admin, "shared"), machines, "as the first process lists them");
    assert_eq!(listed(&other.admin, "shared"), machines, "as the second process lists them");

    let (_vault, records) = vault.records_after(before);
    let (logged, count) = registered(&records);
    assert_eq!(count, 8, "exactly one MachineRegistered per request id");
    assert_eq!(records.len(), 8, "the answers given again recorded nothing");
    assert_eq!(logged, expected, "the log names the machines the answers named");
}

#[test]
fn a_nonce_seen_by_one_process_is_refused_by_the_other() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    let credentials = vault.vault_with_credentials("nonces");
    let path = "/v1/vaults/nonces/registrations";
    let now = Utc::now().timestamp();

    // A registration recorded by the first: the same bytes at the second are a replay.
    let body = signed_registration(&credentials, "srv-1", now, "nonce-across-0000000001", "req-1");
    let first = post_json(vault.addr(), path, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let replay = post_json(other.addr(), path, &body);
    assert_eq!((replay.status, replay.error_code().as_str()), (403, "nonce_replayed"), "{}", replay.body);
    // And the other way round.
    let body = signed_registration(&credentials, "srv-2", now, "nonce-across-0000000002", "req-2");
    let first = post_json(other.addr(), path, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let replay = post_json(vault.addr(), path, &body);
    assert_eq!((replay.status, replay.error_code().as_str()), (403, "nonce_replayed"), "{}", replay.body);

    // A retry answered again records nothing, but its nonce is remembered all the same.
    let before = vault.log_position();
    let retry = signed_registration(&credentials, "srv-1", now, "nonce-across-0000000003", "req-1");
    let answer = post_json(vault.addr(), path, &retry);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let replay = post_json(other.addr(), path, &retry);
    assert_eq!((replay.status, replay.error_code().as_str()), (403, "nonce_replayed"), "{}", replay.body);
    assert_eq!(vault.log_position(), before, "neither the retry nor the replays wrote");
    assert_eq!(listed(&other.admin, "nonces").len(), 2);
}

#[test]
fn a_pin_is_good_once_and_wrong_pins_count_across_processes() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    let (a, b) = (vault.url(), other.url());
    let first = vault.vault_with_credentials("pins");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&first, Some(&a), "srv-a", "reg-a", None)));
    let second = download(&other.admin, "pins", None);
    let neighbour = machine_id(&client.register(&register_request(&second, Some(&b), "srv-b", "reg-b", None)));
    let pin = other.admin.issue_pin("pins").unwrap();
    let valid = PinAnswer::Valid { issued_at: pin.issued_at };

    // Used at A: refused at B, and A's check retried at B gets A's answer.
    assert_eq!(client.check_pin(&pin_check(&a, &first, &machine, &pin.pin, "use-a")), valid);
    let (reason, detail) = refused(client.check_pin(&pin_check(&b, &second, &neighbour, &pin.pin, "use-b")));
    assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
    assert!(detail.contains("already used"), "{detail}");
    assert_eq!(client.check_pin(&pin_check(&b, &first, &machine, &pin.pin, "use-a")), valid);

    // Wrong PINs, alternately at A and B: counted together, the last one locks.
    let wrong = if pin.pin == "00000000" { "11111111" } else { "00000000" };
    let before = vault.log_position();
    for n in 1..=MAX_PIN_FAILURES {
        let at = if n % 2 == 1 { &a } else { &b };
        let (reason, detail) = refused(client.check_pin(&pin_check(at, &first, &machine, wrong, &format!("w{n}"))));
        assert_eq!(reason, Reason::SecurityPinInvalid, "{detail}");
        assert_eq!(
            detail.contains("locked until"),
            n == MAX_PIN_FAILURES,
            "wrong PIN {n} of {MAX_PIN_FAILURES}: {detail}"
        );
    }
    assert_eq!(vault.log_position(), before + u64::from(MAX_PIN_FAILURES), "each wrong PIN recorded once");

    // Locked at both, even for a good PIN, which is not used up by it.
    let fresh = vault.admin.issue_pin("pins").unwrap();
    for (n, process) in [vault.addr(), other.addr()].into_iter().enumerate() {
        let body = signed_pin_check(&first, &first, &machine, &fresh.pin, &format!("locked-{n}"), &fresh_nonce());
        let answer = post_json(process, "/v1/vaults/pins/pin-checks", &body);
        assert_eq!((answer.status, answer.error_code().as_str()), (429, "pin_checks_locked"), "{}", answer.body);
        assert_eq!(answer.json()["reason"], "security_pin_invalid");
    }
    // The locking check retried at the process that did not answer it: the same lock-out.
    let (_, detail) =
        refused(client.check_pin(&pin_check(&a, &first, &machine, wrong, &format!("w{MAX_PIN_FAILURES}"))));
    assert!(detail.contains("locked until"), "{detail}");
    assert_eq!(
        client.check_pin(&pin_check(&a, &second, &neighbour, &fresh.pin, "fresh-b")),
        PinAnswer::Valid { issued_at: fresh.issued_at },
        "only that machine is locked, and the locked checks used nothing up"
    );
}

#[test]
fn a_pin_raced_at_both_processes_is_used_once_and_raced_guesses_lock_at_the_limit() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    let endpoints = [vault.url(), other.url()];
    let credentials = Arc::new(vault.vault_with_credentials("race"));
    let client = Arc::new(one_attempt_client());
    let machines: Vec<String> = (0..5)
        .map(|n| machine_id(&client.register(&register_request(&credentials, None, "srv", &format!("reg-{n}"), None))))
        .collect();
    let pin = Arc::new(vault.admin.issue_pin("race").unwrap());
    let wrong = if pin.pin == "00000000" { "11111111" } else { "00000000" };
    let before = vault.log_position();

    // At the same moment: four machines present the PIN, two at each process; and the fifth
    // sends twice the limit of wrong PINs, half at each.
    let guesses = 2 * MAX_PIN_FAILURES as usize;
    let barrier = Arc::new(Barrier::new(4 + guesses));
    let mut threads = Vec::new();
    for n in 0..4 + guesses {
        let (machine, pin_sent, request_id) = match n {
            0..4 => (machines[n].clone(), pin.pin.clone(), format!("use-{n}")),
            _ => (machines[4].clone(), wrong.to_string(), format!("guess-{n}")),
        };
        let check = pin_check(&endpoints[n % 2], &credentials, &machine, &pin_sent, &request_id);
        let (client, barrier) = (client.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            (n, client.check_pin(&check))
        }));
    }
    let (mut used, mut wrong_answers, mut locked) = (0, 0, 0);
    for thread in threads {
        let (n, answer) = thread.join().unwrap();
        match answer {
            PinAnswer::Valid { issued_at } if n < 4 => {
                assert_eq!(issued_at, pin.issued_at);
                used += 1;
            }
            PinAnswer::Refused { reason: Reason::SecurityPinInvalid, detail } if detail.contains("locked until") => {
                assert!(n >= 4, "only the guessing machine is locked: {detail}");
                locked += 1;
            }
            PinAnswer::Refused { reason: Reason::SecurityPinInvalid, detail } => {
                assert!(detail.contains("wrong or was already used"), "{detail}");
                wrong_answers += 1;
            }
            other => panic!("check {n}: {other:?}"),
        }
    }
    let limit = MAX_PIN_FAILURES as usize;
    assert_eq!(used, 1, "the PIN is good once, whichever process is asked");
    // The other three machines' checks are wrong PINs for them; the guesser's first limit - 1 are
    // wrong, the limit-th locks, and the rest find it locked.
    assert_eq!((wrong_answers, locked), (3 + limit - 1, guesses - (limit - 1)));
    let (_vault, records) = vault.kinds_after(before);
    let count = |kind: &str| records.iter().filter(|k| k.as_str() == kind).count();
    assert_eq!((count("PinUsed"), count("PinCheckFailed")), (1, 3 + limit));
    assert_eq!(records.len(), 1 + 3 + limit, "the checks that found the machine locked recorded nothing");
}

#[test]
fn a_newer_download_at_one_process_supersedes_at_the_other_at_once() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    vault.admin.create_vault("creds").unwrap();
    let client = quick_client(None);
    let (a, b) = (vault.url(), other.url());

    let older = download(&other.admin, "creds", None);
    machine_id(&client.register(&register_request(&older, Some(&b), "srv-1", "r-1", None)));
    let newer = vault.download("creds", None);
    let (reason, detail) = refusal(&client.register(&register_request(&older, Some(&b), "srv-2", "r-2", None)));
    assert_eq!(reason, Reason::CredentialsSuperseded, "{detail}");
    machine_id(&client.register(&register_request(&newer, Some(&b), "srv-3", "r-3", None)));

    // And the other way round.
    let newest = download(&other.admin, "creds", None);
    let (reason, detail) = refusal(&client.register(&register_request(&newer, Some(&a), "srv-4", "r-4", None)));
    assert_eq!(reason, Reason::CredentialsSuperseded, "{detail}");
    machine_id(&client.register(&register_request(&newest, Some(&a), "srv-5", "r-5", None)));

    assert_eq!(listed(&vault.admin, "creds").len(), 3);
    assert_eq!(other.admin.vault("creds").unwrap().newest_thumbprint, Some(newest.certificate.thumbprint.clone()));
}

#[test]
fn a_log_head_anchored_at_one_process_holds_at_the_other() {
    let vault = Vault::on_postgres();
    let other = vault.another_process();
    let credentials = vault.vault_with_credentials("heads");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "req-1", None)));
    let at = |endpoint: String| HeadSigner {
        endpoint,
        vault: "heads".into(),
        machine_id: machine.clone(),
        thumbprint: credentials.certificate.thumbprint.clone(),
        private_key: Zeroizing::new(credentials.private_key.pkcs8_der().to_vec()),
        proxy: None,
    };
    let (a, b) = (at(vault.url()), at(other.url()));
    let log = AgentLog::new();

    // Registered through A, anchored through B.
    let head5 = log.grow(5, "h");
    let anchored = client.report_log_head(&b, &log.store, head5, None, None).unwrap();
    assert_eq!((anchored.position, anchored.hash.as_str()), (5, head5.hash.to_hex().as_str()));
    assert_eq!(client.fetch_log_head(&a).unwrap(), Some(anchored.clone()), "A reads what B anchored");

    // A regression reported to A: refused against B's anchor, and the refusal is B's to read.
    let regressed = client.report_log_head(&a, &log.store, log.head_at(4), None, None).unwrap_err();
    assert_eq!(regressed.code(), "log_head_regressed", "{regressed}");
    let seen = client.fetch_log_head(&b).unwrap().unwrap();
    assert_eq!(
        (seen.position, seen.hash.as_str(), seen.anchored_at, seen.refusals),
        (5, head5.hash.to_hex().as_str(), anchored.anchored_at, 1)
    );
    let last = seen.last_refusal.unwrap();
    assert_eq!((last.error.code(), last.position), ("log_head_regressed", 4));
    let listed = other.admin.machines("heads").unwrap();
    assert_eq!(listed[0].log_head.as_ref().map(|h| (h.position, h.refusals)), Some((5, 1)));

    // Growing on: A walks the records from the head B anchored.
    let head7 = log.grow(2, "h");
    assert_eq!(client.report_log_head(&a, &log.store, head7, None, None).unwrap().position, 7);
    assert_eq!(client.fetch_log_head(&b).unwrap().unwrap().position, 7);
}

#[test]
fn two_processes_migrating_a_fresh_database_at_once_both_start_and_apply_it_once() {
    let cluster = regent_testkit::postgres::shared();
    // A few rounds: the race is over in milliseconds.
    for round in 0..3 {
        let database = cluster.database();
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig::new(dir.path(), loopback()).with_database_url(database.url());
        let barrier = Arc::new(Barrier::new(2));
        let starting: Vec<_> = (0..2)
            .map(|_| {
                let (config, barrier) = (config.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    regent_vault::BackgroundServer::start(config)
                })
            })
            .collect();
        let servers: Vec<_> = starting
            .into_iter()
            .map(|thread| {
                thread.join().unwrap().unwrap_or_else(|e| panic!("round {round}: a process did not start: {e}"))
            })
            .collect();
        let applied = cluster.psql(database.name(), "SELECT count(*) FROM regent_vault._sqlx_migrations");
        // One row per migration the build embeds (one file each).
        let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count();
        assert_eq!(applied.trim(), embedded.to_string(), "round {round}: each migration once");
        // Both serve the one database, with the one token.
        let admins: Vec<_> = servers
            .iter()
            .map(|s| regent_vault::AdminClient::from_token_file(s.url(), s.admin_token_path(), None).unwrap())
            .collect();
        admins[0].create_vault("raced").unwrap();
        assert_eq!(admins[1].vault("raced").unwrap().name, "raced", "round {round}");
        for server in &servers {
            let ready = raw(server.local_addr(), "GET", "/readyz", &[], b"");
            assert_eq!(ready.status, 200, "round {round}: {}", ready.body);
        }
    }
}

/// One registration sent raw during the fault test, and what it came to.
#[derive(Debug)]
struct Sent {
    request_id: String,
    at: Instant,
    took: Duration,
    status: u16,
    error: String,
    reason: String,
    machine_id: Option<String>,
}

fn register_raw(
    addr: std::net::SocketAddr,
    credentials: &regent_credentials::VaultCredentials,
    request_id: &str,
) -> Sent {
    let body = signed_registration(credentials, request_id, Utc::now().timestamp(), &fresh_nonce(), request_id);
    let at = Instant::now();
    let answer = post_json(addr, "/v1/vaults/faults/registrations", &body);
    let took = at.elapsed();
    let json = answer.json();
    let text = |field: &str| json[field].as_str().unwrap_or_default().to_string();
    Sent {
        request_id: request_id.to_string(),
        at,
        took,
        status: answer.status,
        error: text("error"),
        reason: text("reason"),
        machine_id: (answer.status == 200).then(|| text("machine_id")),
    }
}

#[test]
fn postgresql_stopped_mid_load_is_a_fast_503_and_the_pool_recovers_without_losing_a_commit() {
    let cluster = regent_testkit::postgres::Cluster::start();
    let database = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let vault = Process::start(ServeConfig::new(dir.path(), loopback()).with_database_url(database.url()));
    vault.admin.create_vault("faults").unwrap();
    let credentials = Arc::new(download(&vault.admin, "faults", None));
    let addr = vault.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (credentials, stop, sent) = (credentials.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let answer = register_raw(addr, &credentials, &format!("t{t}-{n}"));
                    sent.lock().unwrap().push(answer);
                }
            })
        })
        .collect();
    let acknowledged =
        |after: Instant| sent.lock().unwrap().iter().filter(|s| s.status == 200 && s.at >= after).count();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: {:#?}", sent.lock().unwrap().last());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let started = Instant::now();
    wait_for("the load never got going", &|| acknowledged(started) >= 12);

    cluster.stop_immediate();
    let down = Instant::now();
    // The agent's own client, while it is down: a vault error, within its attempts.
    let client = quick_client(None);
    let answer = client.register(&register_request(&credentials, None, "srv-client", "client-1", None));
    let (reason, detail) = refusal(&answer);
    assert_eq!(reason, Reason::VaultError, "{detail}");
    assert!(detail.contains("HTTP 503, store_unavailable") && detail.contains("after 3 attempts"), "{detail}");
    assert!(down.elapsed() < Duration::from_secs(10), "the client gave up after {:?}", down.elapsed());
    // Long enough for each thread to have sent a request and been answered while it was down.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(down.elapsed()));
    let up = Instant::now();
    cluster.start_again();
    let restarted = Instant::now();
    // The same process, the same pool: requests succeed again.
    wait_for("no registration succeeded after PostgreSQL came back", &|| acknowledged(restarted) >= 8);
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }

    let sent = std::mem::take(&mut *sent.lock().unwrap());
    for s in &sent {
        assert!(s.took < Duration::from_secs(5), "answered after {:?}: {s:?}", s.took);
        match s.status {
            200 => assert!(s.machine_id.as_ref().is_some_and(|m| !m.is_empty()), "{s:?}"),
            503 => assert_eq!((s.error.as_str(), s.reason.as_str()), ("store_unavailable", "vault_error"), "{s:?}"),
            _ => panic!("neither a registration nor a 503: {s:?}"),
        }
    }
    let while_down: Vec<_> = sent.iter().filter(|s| s.at >= down && s.at + s.took <= up).collect();
    assert!(while_down.len() >= 4, "each thread was answered while PostgreSQL was down: {while_down:#?}");
    assert!(while_down.iter().all(|s| s.status == 503), "{while_down:#?}");
    let first_after = sent.iter().filter(|s| s.at >= restarted && s.status == 200).map(|s| s.at).min().unwrap();
    assert!(first_after - restarted < Duration::from_secs(5), "the pool took {:?}", first_after - restarted);

    // Each request id retried until answered: acknowledged ones keep their machine, and those
    // whose answers were lost with the database are registered once.
    let mut machines: BTreeMap<String, String> = BTreeMap::new();
    for s in sent.iter().filter(|s| s.status == 200) {
        let previous = machines.insert(s.request_id.clone(), s.machine_id.clone().unwrap());
        assert!(previous.is_none(), "{} sent once, answered twice", s.request_id);
    }
    let acknowledged_before: BTreeMap<String, String> = machines.clone();
    for s in sent.iter().filter(|s| s.status != 200) {
        let retried = register_raw(addr, &credentials, &s.request_id);
        assert_eq!(retried.status, 200, "{retried:?}");
        machines.insert(s.request_id.clone(), retried.machine_id.unwrap());
    }
    let retried = client.register(&register_request(&credentials, None, "srv-client", "client-1", None));
    machines.insert("client-1".into(), machine_id(&retried));
    let ids: BTreeSet<String> = machines.values().cloned().collect();
    assert_eq!(ids.len(), machines.len(), "one machine per request id: {machines:?}");
    assert_eq!(listed(&vault.admin, "faults"), ids, "every acknowledged registration, and nothing else");
    let (logged, count) = registered(&log_records(&cluster, database.name(), 0));
    assert_eq!(count, machines.len(), "one MachineRegistered per request id");
    assert_eq!(logged, machines);
    assert!(acknowledged_before.iter().all(|(request, machine)| logged.get(request) == Some(machine)));
    drop(vault);
}
