//! The vault's log leaving the service and moving (issue 15): `GET /v1/log` exports it in the
//! store's format, on either storage; the PostgreSQL tables are rebuilt from the log, identical to
//! the live ones; a sled vault moves into PostgreSQL (resuming an interrupted move, refusing a
//! database that holds another log), and its agents work on against the moved vault.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_engine::model::{PinAnswer, RemovalAnswer};
use regent_engine::ports::{UnregisterRequest, VaultClient};
use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, Head, NewEvent, StoreOptions};
use regent_vault::protocol::MAX_PIN_FAILURES;
use regent_vault::{BackgroundServer, MigrateOptions, MoveError, ServeConfig};
use tempfile::TempDir;

/// An agent's log: a real store, whose heads a machine reports.
struct AgentLog {
    store: EventStore,
    _dir: TempDir,
}

impl AgentLog {
    fn new() -> AgentLog {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path().join("store"), &StoreOptions::default()).unwrap();
        AgentLog { store, _dir: dir }
    }

    fn grow(&self, count: usize) -> Head {
        let meta = BatchMeta {
            recorded_at: Utc::now(),
            actor: Actor { user: "test".into(), host: "test".into() },
            correlation_id: uuid::Uuid::now_v7(),
        };
        let events: Vec<NewEvent> =
            (0..count).map(|n| NewEvent::new("Tested", 1, &serde_json::json!({ "n": n })).unwrap()).collect();
        self.store.append("test", ExpectedVersion::Any, &meta, &events).unwrap();
        self.store.head()
    }

    fn head_at(&self, position: u64) -> Head {
        let (_, bytes) = self.store.raw_records(position).next().unwrap().unwrap();
        Head { position, hash: regent_store::decode_record(&bytes).unwrap().hash }
    }
}

/// What a flow leaves behind to check against after it.
struct Flow {
    /// The first download; `kept` registered with it, used a PIN and anchored its log.
    first: VaultCredentials,
    kept: String,
    log: AgentLog,
    /// Every PIN issued (none may be in an export).
    pins: Vec<String>,
    /// Issued and never used: good after the flow.
    outstanding: String,
}

const KINDS: [&str; 9] = [
    "VaultCreated",
    "CredentialsIssued",
    "PinIssued",
    "PinUsed",
    "PinCheckFailed",
    "MachineRegistered",
    "MachineRemoved",
    "LogHeadAnchored",
    "LogHeadRefused",
];

/// Every kind of event the service writes today (all of [`KINDS`]; `PinsRevoked` only older
/// builds wrote): a vault and two downloads, registrations, a PIN used, wrong PINs up to a lock, a
/// removal by the admin and an unregistration, anchors and a refused head, a PIN left outstanding,
/// a second vault. `between` runs half way.
fn flow(vault: &Vault, between: impl FnOnce()) -> Flow {
    let client = quick_client(None);
    let url = vault.url();
    let first = vault.vault_with_credentials("moving");
    let kept = machine_id(&client.register(&register_request(&first, None, "kept", "reg-kept", None)));
    let used = vault.admin.issue_pin("moving").unwrap();
    assert_eq!(
        client.check_pin(&pin_check(&url, &first, &kept, &used.pin, "check-used")),
        PinAnswer::Valid { issued_at: used.issued_at }
    );
    let log = AgentLog::new();
    let me = head_signer(&url, "moving", &kept, &first);
    client.report_log_head(&me, &log.store, log.grow(3), None, None).unwrap();

    between();

    let newest = vault.download("moving", None);
    let guesser = machine_id(&client.register(&register_request(&newest, None, "guesser", "reg-guesser", None)));
    let wrong = if used.pin == "00000000" { "11111111" } else { "00000000" };
    for n in 0..MAX_PIN_FAILURES {
        let answer = client.check_pin(&pin_check(&url, &newest, &guesser, wrong, &format!("wrong-{n}")));
        assert!(matches!(answer, PinAnswer::Refused { .. }), "{answer:?}");
    }
    let removed = machine_id(&client.register(&register_request(&newest, None, "removed", "reg-removed", None)));
    vault.admin.remove_machine("moving", &removed).unwrap();
    let leaving = machine_id(&client.register(&register_request(&newest, None, "leaving", "reg-leaving", None)));
    let told = client.unregister(&UnregisterRequest {
        signer: head_signer(&url, "moving", &leaving, &newest),
        request_id: "unreg-leaving".into(),
    });
    assert!(matches!(told, RemovalAnswer::Removed { .. }), "{told:?}");
    client.report_log_head(&me, &log.store, log.grow(2), None, None).unwrap();
    let refused = client.report_log_head(&me, &log.store, log.head_at(4), None, None).unwrap_err();
    assert_eq!(refused.code(), "log_head_regressed");
    let outstanding = vault.admin.issue_pin("moving").unwrap();
    vault.admin.create_vault("second").unwrap();
    Flow { first, kept, log, pins: vec![used.pin, outstanding.pin.clone()], outstanding: outstanding.pin }
}

/// The kinds of the records a log's lines hold.
fn kinds_of(lines: &[Vec<u8>]) -> BTreeSet<String> {
    lines.iter().map(|line| regent_store::decode_record(line).unwrap().kind).collect()
}

/// What the admin API says of the vaults of a flow: both vaults, the machines of `moving` (their
/// anchors included).
fn listed(admin: &regent_vault::AdminClient) -> (Vec<regent_vault::VaultInfo>, Vec<regent_vault::MachineInfo>) {
    (vec![admin.vault("moving").unwrap(), admin.vault("second").unwrap()], admin.machines("moving").unwrap())
}

both!(the_exported_log_verifies_to_the_services_head_holds_the_stored_bytes_and_no_secret);
fn the_exported_log_verifies_to_the_services_head_holds_the_stored_bytes_and_no_secret() {
    let vault = Vault::start();
    let flow = flow(&vault, || {});
    let mut export = Vec::new();
    std::io::copy(&mut vault.admin.export_log().unwrap(), &mut export).unwrap();
    let head = vault.server.log_head().unwrap();
    assert!(head.position >= 20, "the flow wrote its records: {head}");

    let (header, report) = regent_store::verify_export(std::io::Cursor::new(export.clone()), None).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((header.format.as_str(), header.head), ("regent-log", head), "the header names the service's head");
    assert_eq!((report.records, report.verified_head), (head.position, head));

    // Line for line the bytes the service stored, every kind of event among them.
    let lines: Vec<Vec<u8>> =
        export.split(|b| *b == b'\n').skip(1).filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let (vault, stored) = stored_lines(vault);
    assert_eq!(lines, stored, "the export's records are the stored bytes, in order");
    assert_eq!(kinds_of(&lines), KINDS.iter().map(|k| k.to_string()).collect());

    let token = vault.token();
    for secret in flow.pins.iter().chain([&token]) {
        assert!(!leaks(&export, secret), "a secret in the export");
    }
    // Taken again after a change, it reaches the new head.
    vault.admin.create_vault("later").unwrap();
    let mut again = Vec::new();
    std::io::copy(&mut vault.admin.export_log().unwrap(), &mut again).unwrap();
    let (header, report) = regent_store::verify_export(std::io::Cursor::new(again), None).unwrap();
    assert!(report.is_ok());
    assert_eq!(header.head, vault.server.log_head().unwrap());
    assert_eq!(header.head.position, head.position + 1);
}

/// The service's stored records, as bytes: from the database, or (stopping and restarting the
/// service) from the sled store.
fn stored_lines(vault: Vault) -> (Vault, Vec<Vec<u8>>) {
    if vault.database.is_some() {
        let text = vault.sql("SELECT convert_from(record, 'UTF8') FROM regent_vault.log ORDER BY position");
        return (vault, text.lines().map(|l| l.as_bytes().to_vec()).collect());
    }
    let config = vault.config();
    let Vault { server, dir, database, .. } = vault;
    server.shutdown().unwrap();
    let lines = sled_lines(dir.path());
    let server = BackgroundServer::start(config).unwrap();
    let admin = regent_vault::AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
    (Vault { server, dir, admin, database }, lines)
}

fn sled_lines(data_dir: &Path) -> Vec<Vec<u8>> {
    let store = EventStore::open(data_dir.join("log"), &StoreOptions::default()).unwrap();
    store.raw_records(1).map(|r| r.unwrap().1.to_vec()).collect()
}

/// Whether `secret` is in `haystack` as it is, in hex or in base64.
fn leaks(haystack: &[u8], secret: &str) -> bool {
    use base64::Engine as _;
    let forms = [
        secret.as_bytes().to_vec(),
        hex::encode(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(secret).into_bytes(),
    ];
    forms.iter().any(|form| haystack.windows(form.len()).any(|w| w == form.as_slice()))
}

const PROJECTIONS: [(&str, &str); 7] = [
    ("vaults", "name"),
    ("certificates", "thumbprint"),
    ("pins", "pin_id"),
    ("machines", "vault, machine_id"),
    ("registrations", "vault, request_id"),
    ("pin_checks", "vault, request_id"),
    ("nonces", "vault, nonce"),
];

/// Every row of every projection table, as JSON, in a fixed order.
fn projections(vault: &Vault) -> Vec<(String, Vec<String>)> {
    PROJECTIONS
        .iter()
        .map(|(table, order)| {
            let rows = vault.sql(&format!("SELECT row_to_json(t)::text FROM regent_vault.{table} t ORDER BY {order}"));
            (table.to_string(), rows.lines().map(str::to_string).collect())
        })
        .collect()
}

/// Table by table, so that a difference names its table.
fn assert_same_tables(found: &[(String, Vec<String>)], expected: &[(String, Vec<String>)], what: &str) {
    assert_eq!(found.len(), expected.len());
    for ((table, rows), (_, expected_rows)) in found.iter().zip(expected) {
        assert_eq!(rows, expected_rows, "{what}: table {table}");
    }
}

fn database_url(vault: &Vault) -> String {
    vault.database.as_ref().unwrap().url()
}

#[test]
fn rebuilt_projections_equal_the_live_ones_mend_a_damaged_row_and_a_broken_chain_changes_nothing() {
    on(Backend::Postgres, || {
        let vault = Vault::start();
        // Nonces from before the cut are older than the pruning window as of `at`; the later ones not.
        let mut cut = None;
        flow(&vault, || {
            cut = Some(regent_vault_now());
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        let cut = cut.unwrap();
        let at = cut + chrono::Duration::seconds(2 * regent_vault::protocol::MAX_CLOCK_SKEW_SECS + 60);
        let kinds = vault.sql(
            "SELECT DISTINCT convert_from(record, 'UTF8')::json->'record'->>'kind' FROM regent_vault.log ORDER BY 1",
        );
        let mut expected: Vec<&str> = KINDS.to_vec();
        expected.sort();
        assert_eq!(kinds.lines().collect::<Vec<_>>(), expected, "the flow wrote every kind of event");
        let nonces_before: usize = vault.sql("SELECT count(*) FROM regent_vault.nonces").parse().unwrap();
        // The service's own pruning, as it runs at `at`.
        vault.sql(&format!("DELETE FROM regent_vault.nonces WHERE seen_at < '{}'", cut.to_rfc3339()));
        let nonces_after: usize = vault.sql("SELECT count(*) FROM regent_vault.nonces").parse().unwrap();
        assert!(0 < nonces_after && nonces_after < nonces_before, "{nonces_before} -> {nonces_after}: some were old");
        let live = projections(&vault);
        for (table, rows) in &live {
            assert!(!rows.is_empty(), "the flow left rows in {table}");
        }
        let request_nonces = vault.sql("SELECT row_to_json(t)::text FROM regent_vault.request_nonces t ORDER BY nonce");
        let head = vault.server.log_head().unwrap();

        let summary = regent_vault::rebuild_projections_at(&database_url(&vault), at).unwrap();
        assert_eq!((summary.records, summary.head, summary.vaults, summary.machines), (head.position, head, 2, 2));
        assert_same_tables(&projections(&vault), &live, "the rebuilt tables are the live ones, row for row");
        assert_eq!(
            vault.sql("SELECT row_to_json(t)::text FROM regent_vault.request_nonces t ORDER BY nonce"),
            request_nonces,
            "the nonces of requests that recorded nothing are not the log's: left as they were"
        );

        // A damaged row is made again from the log.
        vault.sql("UPDATE regent_vault.machines SET machine_name = 'x'");
        assert_ne!(projections(&vault), live);
        regent_vault::rebuild_projections_at(&database_url(&vault), at).unwrap();
        assert_same_tables(&projections(&vault), &live, "the rebuild restored the damaged rows");

        // A log altered in the database: the rebuild refuses, and changes nothing (the damaged row stays).
        vault.sql("UPDATE regent_vault.machines SET machine_name = 'x'");
        let damaged = projections(&vault);
        let tamper = |from: &str, to: &str| {
            vault.sql(&format!(
                "UPDATE regent_vault.log SET record = convert_to(replace(convert_from(record, 'UTF8'), '{from}', '{to}'), \
                 'UTF8') WHERE position = 3"
            ))
        };
        tamper("\"payload\":{", "\"payload\": {");
        let refused = regent_vault::rebuild_projections_at(&database_url(&vault), at).unwrap_err();
        assert!(matches!(&refused, MoveError::ChainBroken { failure, .. } if failure.position == 3), "{refused:?}");
        let said = refused.to_string();
        assert!(said.contains("record 3") && said.contains("nothing was changed") && !said.contains('\n'), "{said}");
        assert!(!said.contains(&database_url(&vault)) && !said.contains("postgres://"), "no URL in it: {said}");
        assert_same_tables(&projections(&vault), &damaged, "a refused rebuild changed nothing");

        // The record as it was: the rebuild goes through again, and the service serves on.
        tamper("\"payload\": {", "\"payload\":{");
        regent_vault::rebuild_projections_at(&database_url(&vault), at).unwrap();
        assert_same_tables(&projections(&vault), &live, "rebuilt again");
        assert_eq!(vault.admin.machines("moving").unwrap().len(), 2);
    });
}

#[test]
fn rebuilds_while_the_service_changes_things_lose_nothing_and_refuse_nothing() {
    on(Backend::Postgres, || {
        let vault = Vault::start();
        let credentials = vault.vault_with_credentials("busy");
        let url = database_url(&vault);
        let rebuilding = std::thread::spawn(move || {
            (0..5).map(|_| regent_vault::rebuild_projections(&url).map(|summary| summary.records)).collect::<Vec<_>>()
        });
        let client = quick_client(None);
        for n in 0..10 {
            machine_id(&client.register(&register_request(
                &credentials,
                None,
                &format!("m{n}"),
                &format!("r{n}"),
                None,
            )));
            vault.admin.create_vault(&format!("busy-{n}")).unwrap();
        }
        for rebuilt in rebuilding.join().unwrap() {
            rebuilt.unwrap();
        }
        assert_eq!(vault.admin.machines("busy").unwrap().len(), 10);
        let live = projections(&vault);
        regent_vault::rebuild_projections(&database_url(&vault)).unwrap();
        assert_same_tables(&projections(&vault), &live, "no change made during the rebuilds was lost");
    });
}

/// Now, to the microsecond, as the service takes its times.
fn regent_vault_now() -> chrono::DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// A sled vault after a flow, stopped (its directory free to move).
struct Stopped {
    dir: TempDir,
    flow: Flow,
    listed: (Vec<regent_vault::VaultInfo>, Vec<regent_vault::MachineInfo>),
    anchor: regent_vault::Anchor,
    head: Head,
    /// The transparency log's checkpoint, as the sled vault signed it.
    checkpoint: String,
}

fn sled_vault_after_a_flow() -> Stopped {
    let vault = Vault::start();
    assert!(vault.database.is_none());
    let flow = flow(&vault, || {});
    let listed = listed(&vault.admin);
    let anchor = quick_client(None)
        .fetch_log_head(&head_signer(&vault.url(), "moving", &flow.kept, &flow.first))
        .unwrap()
        .unwrap();
    let head = vault.server.log_head().unwrap();
    let checkpoint = regent_vault::AdminClient::without_token(&vault.url(), None).unwrap().checkpoint().unwrap();
    let Vault { server, dir, .. } = vault;
    server.shutdown().unwrap();
    Stopped { dir, flow, listed, anchor, head, checkpoint }
}

/// A service on PostgreSQL for `dir`'s admin.token.
fn serve_on(
    dir: &Path,
    database: &regent_testkit::postgres::Database<'_>,
) -> (BackgroundServer, regent_vault::AdminClient) {
    let server = BackgroundServer::start(ServeConfig::new(dir, loopback()).with_database_url(database.url())).unwrap();
    let admin = regent_vault::AdminClient::from_token_file(server.url(), server.admin_token_path(), None).unwrap();
    (server, admin)
}

fn database_lines(database: &regent_testkit::postgres::Database<'_>) -> Vec<Vec<u8>> {
    let text = regent_testkit::postgres::shared()
        .psql(database.name(), "SELECT convert_from(record, 'UTF8') FROM regent_vault.log ORDER BY position");
    text.lines().filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect()
}

#[test]
fn a_sled_vault_moves_to_postgresql_whole_and_its_agents_work_on_against_it() {
    let Stopped { dir, flow, listed: before, anchor, head, checkpoint } = sled_vault_after_a_flow();
    let database = regent_testkit::postgres::shared().database();

    let summary = regent_vault::migrate_to_postgres(dir.path(), &database.url(), &MigrateOptions::default()).unwrap();
    assert_eq!(
        (summary.records, summary.copied, summary.resumed_from, summary.head, summary.complete),
        (head.position, head.position, 0, head, true)
    );
    assert_eq!((summary.vaults, summary.machines), (2, 2));
    assert_eq!(database_lines(&database), sled_lines(dir.path()), "the records moved byte for byte");

    let (server, admin) = serve_on(dir.path(), &database);
    assert_eq!(listed(&admin), before, "the same vaults, credentials, machines and anchors");
    let url = server.url().to_string();
    let moved = regent_vault::AdminClient::without_token(&url, None).unwrap().checkpoint().unwrap();
    assert_eq!(moved, checkpoint, "the same tree, signed by the same key: the same checkpoint, byte for byte");
    let client = quick_client(None);
    let me = head_signer(&url, "moving", &flow.kept, &flow.first);
    assert_eq!(client.fetch_log_head(&me).unwrap(), Some(anchor.clone()), "the anchor reads back as it was");
    // The records the sled vault kept of the machine's log moved too, byte for byte.
    let agent_lines: Vec<String> = flow
        .log
        .store
        .raw_records(1)
        .map(|r| String::from_utf8(r.unwrap().1.to_vec()).unwrap())
        .take(anchor.position as usize)
        .collect();
    assert_eq!(kept_records(&admin, "moving", &flow.kept).1, agent_lines);
    assert_eq!(summary.kept, anchor.position, "one machine anchored its log");
    // A PIN issued before the move is good after it: the PIN key is the same admin token's.
    let answer = client.check_pin(&pin_check(&url, &flow.first, &flow.kept, &flow.outstanding, "after-move"));
    assert!(matches!(answer, PinAnswer::Valid { .. }), "{answer:?}");
    // A machine registered before the move reports its log's head, past the anchor.
    let later = client.report_log_head(&me, &flow.log.store, flow.log.grow(2), None, None).unwrap();
    assert_eq!((later.position, later.refusals), (anchor.position + 2, anchor.refusals));
    // The moved log goes on from the sled head: one chain, which the export verifies.
    let mut export = Vec::new();
    std::io::copy(&mut admin.export_log().unwrap(), &mut export).unwrap();
    let (header, report) = regent_store::verify_export(std::io::Cursor::new(export), None).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(header.head.position > head.position);
    server.shutdown().unwrap();

    // The service on PostgreSQL wrote on: the database's log is no longer a prefix of the sled one.
    let lines = database_lines(&database);
    let refused =
        regent_vault::migrate_to_postgres(dir.path(), &database.url(), &MigrateOptions::default()).unwrap_err();
    assert!(matches!(refused, MoveError::OtherLog { .. }), "{refused:?}");
    assert!(refused.to_string().contains("nothing was written"), "{refused}");
    assert_eq!(database_lines(&database), lines, "nothing was written");
}

#[test]
fn an_interrupted_move_resumes_where_it_stopped_and_another_log_is_refused() {
    let Stopped { dir, listed: before, head, .. } = sled_vault_after_a_flow();
    let database = regent_testkit::postgres::shared().database();
    let url = database.url();

    // Stopped after two batches of three: six records moved, each batch whole.
    let options = MigrateOptions { batch: 3, stop_after_batches: Some(2) };
    let partial = regent_vault::migrate_to_postgres(dir.path(), &url, &options).unwrap();
    assert_eq!((partial.records, partial.copied, partial.complete), (6, 6, false));
    assert_eq!(database_lines(&database), sled_lines(dir.path())[..6].to_vec());

    // Run again: it resumes from record 6 and ends with the whole log, as one run would.
    let resumed = regent_vault::migrate_to_postgres(dir.path(), &url, &MigrateOptions::default()).unwrap();
    assert_eq!(
        (resumed.resumed_from, resumed.copied, resumed.records, resumed.head, resumed.complete),
        (6, head.position - 6, head.position, head, true)
    );
    assert_eq!(database_lines(&database), sled_lines(dir.path()));
    // And again: nothing to do.
    let again = regent_vault::migrate_to_postgres(dir.path(), &url, &MigrateOptions::default()).unwrap();
    assert_eq!((again.copied, again.head), (0, head));

    // The tables are those a move in one run makes (and those the log rebuilds).
    let whole = regent_testkit::postgres::shared().database();
    regent_vault::migrate_to_postgres(dir.path(), &whole.url(), &MigrateOptions::default()).unwrap();
    let tables = |database: &regent_testkit::postgres::Database<'_>| -> Vec<String> {
        PROJECTIONS
            .iter()
            .map(|(table, order)| {
                regent_testkit::postgres::shared().psql(
                    database.name(),
                    &format!("SELECT row_to_json(t)::text FROM regent_vault.{table} t ORDER BY {order}"),
                )
            })
            .collect()
    };
    assert_eq!(tables(&database), tables(&whole));
    let (server, admin) = serve_on(dir.path(), &database);
    assert_eq!(listed(&admin), before);
    server.shutdown().unwrap();

    // Another vault's log, shorter than this database's: refused, nothing written.
    let other = Vault::start();
    other.admin.create_vault("elsewhere").unwrap();
    let Vault { server, dir: other_dir, .. } = other;
    server.shutdown().unwrap();
    let lines = database_lines(&database);
    let refused = regent_vault::migrate_to_postgres(other_dir.path(), &url, &MigrateOptions::default()).unwrap_err();
    let said = refused.to_string();
    assert!(matches!(refused, MoveError::OtherLog { .. }), "{refused:?}");
    assert!(said.contains("another log") && !said.contains('\n') && !said.contains("postgres://"), "{said}");
    assert_eq!(database_lines(&database), lines, "nothing was written");
    // A database holding that other, shorter log: this vault's record 1 is not its record 1.
    let holding_other = regent_testkit::postgres::shared().database();
    regent_vault::migrate_to_postgres(other_dir.path(), &holding_other.url(), &MigrateOptions::default()).unwrap();
    let lines = database_lines(&holding_other);
    assert_eq!(lines.len(), 1);
    let refused =
        regent_vault::migrate_to_postgres(dir.path(), &holding_other.url(), &MigrateOptions::default()).unwrap_err();
    assert!(matches!(refused, MoveError::OtherLog { .. }), "{refused:?}");
    assert!(refused.to_string().contains("record 1 differs"), "{refused}");
    assert_eq!(database_lines(&holding_other), lines, "nothing was written");

    // A sled vault that a service holds is refused with its own line, before the database is asked.
    let running = Vault::start();
    let refused = regent_vault::migrate_to_postgres(running.dir.path(), &url, &MigrateOptions::default()).unwrap_err();
    assert!(matches!(refused, MoveError::Store { .. }), "{refused:?}");
    assert!(refused.to_string().contains("regent vault serve"), "{refused}");
    // And a directory that is no vault's.
    let empty = tempfile::tempdir().unwrap();
    let refused = regent_vault::migrate_to_postgres(empty.path(), &url, &MigrateOptions::default()).unwrap_err();
    assert!(matches!(refused, MoveError::NotAVaultDir { .. }), "{refused:?}");
}
