//! The vault service's own log through the binary (issue 15): `regent vault export` writes a file
//! `regent audit verify --file` accepts; `regent vault migrate` moves a sled vault into a real
//! PostgreSQL and `regent vault rebuild-projections` makes its tables again, each with its one-line
//! summary, `--json` and its refusals.

use std::process::Output;

use crate::support::{Setup, leaks, throttling_set};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vault_export_writes_a_file_audit_verify_accepts_and_a_tampered_copy_fails() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "exported"]).status.code(), Some(0));
    setup.download("exported", "exported.VaultCredentials");
    let pin = setup.admin(&["pin", "--vault", "exported"]);
    assert_eq!(pin.status.code(), Some(0), "{}", stderr(&pin));
    let pin = stdout(&pin).trim().to_string();
    assert_eq!(pin.len(), 8, "{pin}");

    let file = setup.path("vault-log.jsonl");
    let out = setup.admin(&["export", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.starts_with("exported 3 records of the vault service's log to "), "{said}");

    let verified = setup.regent("agent").args(["--json", "audit", "verify", "--file"]).arg(&file).output().unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}{}", stdout(&verified), stderr(&verified));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["records"], 3);
    let header: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(report["verified_head"], header["head"], "it reaches the head its header names");
    assert!(header["writer"].as_str().unwrap().starts_with("regent-vault "), "{header}");

    let bytes = std::fs::read(&file).unwrap();
    let token = std::fs::read_to_string(setup.path("vault").join("admin.token")).unwrap();
    assert!(!leaks(&bytes, token.trim()) && !leaks(&bytes, &pin), "no secret in the export");

    // A copy with one byte changed in a record fails, naming it.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let tampered = setup.path("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("\"exported\"", "\"exp0rted\"", 1)).unwrap();
    let failed = setup.regent("agent").args(["audit", "verify", "--file"]).arg(&tampered).output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    assert!(stdout(&failed).contains("FAILED at record 1"), "{}", stdout(&failed));
    assert!(stderr(&failed).starts_with("regent: verification failed"), "{}", stderr(&failed));

    // Never over a file: refused, the file as it was, no temporary file left.
    let again = setup.admin(&["export", "--output", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    // A wrong token: refused by the service, nothing written.
    let elsewhere = setup.path("elsewhere.jsonl");
    let wrong_token = setup.path("wrong.token");
    std::fs::write(&wrong_token, "not-the-token\n").unwrap();
    let mut cmd = setup.regent("admin");
    cmd.args(["--json", "vault", "export", "-o"]).arg(&elsewhere);
    let refused = cmd.arg("--server").arg(setup.url()).arg("--token-file").arg(&wrong_token).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let error: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
    assert!(!elsewhere.exists());
    let left: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // --json: the file, the records and the head; a later export reaches a later head.
    assert_eq!(setup.admin(&["create", "later"]).status.code(), Some(0));
    let later = setup.path("later.jsonl");
    let out = setup.admin(&["--json", "export", "-o", later.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((document["records"].as_u64(), document["head"]["position"].as_u64()), (Some(4), Some(4)));
    assert_eq!(document["file"], later.to_str().unwrap());
}

/// `regent --data-dir DIR ARGS` with the database URL in REGENT_VAULT_DATABASE_URL (or none).
fn with_database(setup: &Setup, dir: &str, url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = setup.regent(dir);
    cmd.env_remove("REGENT_VAULT_DATABASE_URL");
    if let Some(url) = url {
        cmd.env("REGENT_VAULT_DATABASE_URL", url);
    }
    cmd.args(args).output().unwrap()
}

#[test]
fn vault_migrate_and_rebuild_projections_say_what_they_did_and_refuse_with_one_line() {
    let mut setup = Setup::new();
    assert_eq!(setup.admin(&["create", "moving"]).status.code(), Some(0));
    setup.download("moving", "moving.VaultCredentials");
    let database = regent_testkit::postgres::shared().database();
    let url = database.url();

    // While the service holds its log, nothing moves.
    let held = with_database(&setup, "vault", Some(&url), &["vault", "migrate"]);
    assert_eq!(held.status.code(), Some(3), "{}", stderr(&held));
    assert!(stderr(&held).contains("regent vault serve") && stderr(&held).lines().count() == 1, "{}", stderr(&held));
    setup.stop_vault();

    // A password on the command line is refused, before anything is read.
    let argv = with_database(&setup, "vault", None, &["vault", "migrate", "--database-url", &url]);
    assert_eq!(argv.status.code(), Some(2), "{}", stderr(&argv));
    assert!(stderr(&argv).contains("REGENT_VAULT_DATABASE_URL") && !stderr(&argv).contains(&url), "{}", stderr(&argv));
    let none = with_database(&setup, "vault", None, &["vault", "rebuild-projections"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));

    let moved = with_database(&setup, "vault", Some(&url), &["vault", "migrate"]);
    assert_eq!(moved.status.code(), Some(0), "{}", stderr(&moved));
    assert_eq!(
        stdout(&moved).lines().collect::<Vec<_>>(),
        [format!(
            "moved 2 records into the database (2 copied now; head {}): 1 vault, 0 machines, 0 records of the \
             machines' logs",
            head_of(&database)
        )]
    );
    let again = with_database(&setup, "vault", Some(&url), &["--json", "vault", "migrate"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (&summary["records"], &summary["copied"], &summary["resumed_from"], &summary["complete"]),
        (&2.into(), &0.into(), &2.into(), &true.into())
    );

    let rebuilt = with_database(&setup, "agent", Some(&url), &["--json", "vault", "rebuild-projections"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", stderr(&rebuilt));
    let summary: serde_json::Value = serde_json::from_slice(&rebuilt.stdout).unwrap();
    assert_eq!((&summary["records"], &summary["vaults"], &summary["machines"]), (&2.into(), &1.into(), &0.into()));
    let rebuilt = with_database(&setup, "agent", Some(&url), &["vault", "rebuild-projections"]);
    assert!(stdout(&rebuilt).starts_with("rebuilt the tables from 2 records (head "), "{}", stdout(&rebuilt));

    // Another vault's log into this database: refused, exit 3, one line, nothing written.
    let mut other = Setup::new();
    assert_eq!(other.admin(&["create", "other"]).status.code(), Some(0));
    assert_eq!(other.admin(&["create", "third"]).status.code(), Some(0));
    other.stop_vault();
    let refused = with_database(&other, "vault", Some(&url), &["--json", "vault", "migrate"]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let error: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["error"]["code"], "database_holds_another_log", "{error}");
    assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));
    assert!(!stderr(&refused).contains("postgres://"), "{}", stderr(&refused));
    assert_eq!(head_of(&database).position, 2, "nothing was written");

    // A data dir that is no vault's.
    let empty = with_database(&setup, "agent-dir", Some(&url), &["--json", "vault", "migrate"]);
    assert_eq!(empty.status.code(), Some(3), "{}", stderr(&empty));
    let error: serde_json::Value = serde_json::from_slice(&empty.stdout).unwrap();
    assert_eq!(error["error"]["code"], "not_a_vault_data_dir", "{error}");
}

/// The database's log head.
fn head_of(database: &regent_testkit::postgres::Database<'_>) -> regent_store::Head {
    let row = regent_testkit::postgres::shared()
        .psql(database.name(), "SELECT position || ':' || encode(hash, 'hex') FROM regent_vault.log_head");
    row.trim().parse().unwrap()
}

#[test]
fn the_manual_has_a_page_for_each_of_the_logs_commands() {
    let setup = Setup::new();
    let dir = setup.path("man");
    std::fs::create_dir(&dir).unwrap();
    let out = setup.regent("agent").arg("man").arg("--dir").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in ["regent-vault-export.1", "regent-vault-rebuild-projections.1", "regent-vault-migrate.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains("REGENT_VAULT_DATABASE_URL") || page == "regent-vault-export.1", "{page}: {text}");
    }
}

/// The auditor's way to a machine's log (issue 16): the vault keeps every record the agent reported
/// after its steps, and `regent vault export --vault V --machine ID` writes them, a file that
/// verifies and holds the agent's own stored lines, byte for byte.
#[test]
fn a_machines_log_exported_from_the_vault_verifies_and_is_the_agents_own() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "fleet"]).status.code(), Some(0));
    let credentials = setup.download("fleet", "fleet.VaultCredentials");
    setup.prepare("agent", &credentials);
    let registered = setup.regent("agent").args(["--json", "register"]).output().unwrap();
    assert_eq!(registered.status.code(), Some(0), "{}", stderr(&registered));
    let machine_id = setup.json("agent", &["properties"])["vault"]["machine_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no machine id in the properties"));
    let throttling =
        setup.regent("agent").args(throttling_set("mon-fri", "08:00-18:00", "512Kbps", "10Mbps")).output().unwrap();
    assert_eq!(throttling.status.code(), Some(0), "{}", stderr(&throttling));

    let file = setup.path("machine-log.jsonl");
    let out = setup.admin(&["export", "--vault", "fleet", "--machine", &machine_id, "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("of machine {machine_id}'s log as vault fleet keeps it")),
        "{}",
        stdout(&out)
    );
    let verified = setup.regent("agent").args(["--json", "audit", "verify", "--file"]).arg(&file).output().unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}{}", stdout(&verified), stderr(&verified));

    let own = setup.regent("agent").args(["audit", "export"]).output().unwrap();
    assert_eq!(own.status.code(), Some(0), "{}", stderr(&own));
    let records = |text: &str| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    let kept = records(&std::fs::read_to_string(&file).unwrap());
    assert!(kept.len() >= 5, "folders, credentials, passphrase, registration, throttling: {}", kept.len());
    assert_eq!(kept, records(&stdout(&own)), "every record, as the agent stores it");

    // --vault without --machine is a usage error; an unknown machine is named.
    let alone = setup.admin(&["export", "--vault", "fleet", "-o", setup.path("x.jsonl").to_str().unwrap()]);
    assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
    let unknown = setup.admin(&[
        "export",
        "--vault",
        "fleet",
        "--machine",
        "00000000-0000-0000-0000-000000000000",
        "-o",
        setup.path("y.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("has no machine"), "{}", stderr(&unknown));
    assert!(!setup.path("y.jsonl").exists());
}
