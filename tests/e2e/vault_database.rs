//! `regent vault serve` on PostgreSQL, given a database it must not use: each refusal is one line
//! on stderr naming what is wrong and what to do, exit 3, the error object under `--json` with a
//! reason code of its own, no password and no URL in either, and nothing written: not the data
//! dir, not the database. The databases are real ones from the test kit's cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regent_testkit::postgres::{self, Cluster};
use sha2::Digest as _;

use crate::serve::{VARIABLES, started, stop};
use crate::support::{contains, leaks};

/// A temp dir for the service's data dirs (none made until a service makes it).
struct Dirs(tempfile::TempDir);

impl Dirs {
    fn new() -> Dirs {
        Dirs(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// `regent --json vault serve` on port 0 with `url` in REGENT_VAULT_DATABASE_URL, and nothing from
/// the caller's environment: no `REGENT_VAULT_*`, no `PG*` (a PGPASSWORD would mend a wrong
/// password), no `~/.pgpass`.
fn serve(data_dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    for var in VARIABLES {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("REGENT_DATA_DIR").env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd.env("PGPASSFILE", data_dir.with_extension("no-pgpass")).env("REGENT_VAULT_DATABASE_URL", url);
    cmd.arg("--data-dir").arg(data_dir).args(["--json", "vault", "serve", "--listen", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `cmd`, which must be refused with exit 3 and `code`, fast; the one line on stderr is
/// returned. Nothing of `secrets` (passwords, the URL, a token) in any form is in what it printed.
fn refused(mut cmd: Command, code: &str, secrets: &[&str]) -> String {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15), "refused in {:?}: {stderr}", started.elapsed());
    assert_eq!(out.status.code(), Some(3), "stdout {stdout}\nstderr {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let line = stderr.trim_end().to_string();
    let document: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("the error object on stdout ({e}): {stdout}"));
    let error = &document["error"];
    assert_eq!((error["code"].as_str(), error["exit"].as_u64()), (Some(code), Some(3)), "{document}");
    assert_eq!(line, format!("regent: {}", error["message"].as_str().unwrap()), "the same message in both");
    for secret in secrets {
        for (name, printed) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(!leaks(printed, secret), "{secret:?} in {name}: {}", String::from_utf8_lossy(printed));
        }
    }
    line
}

/// Everything the database's schema `regent_vault` holds: each table's name and rows (as JSON,
/// in order). Empty when there is no such schema.
fn dump(cluster: &Cluster, database: &str) -> Vec<String> {
    let schemas = cluster.psql(database, "SELECT count(*) FROM pg_namespace WHERE nspname = 'regent_vault'");
    if schemas == "0" {
        return Vec::new();
    }
    let mut lines = vec!["schema regent_vault".to_string()];
    let tables = cluster.psql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'regent_vault' ORDER BY 1");
    for table in tables.lines() {
        lines.push(format!("table {table}"));
        let rows =
            cluster.psql(database, &format!("SELECT row_to_json(t)::text FROM regent_vault.\"{table}\" t ORDER BY 1"));
        lines.extend(rows.lines().map(String::from));
    }
    lines
}

/// A service started on `url` with `data_dir`, which then stops: the database migrated and bound
/// to the data dir's token.
fn start_and_stop(data_dir: &Path, url: &str) {
    let (child, _) = started(serve(data_dir, url));
    stop(child);
}

#[test]
fn a_url_that_is_malformed_or_not_postgresql_is_refused_before_anything_is_touched() {
    let dirs = Dirs::new();
    for (url, said) in [
        ("postgres//x", "does not start with postgres://"),
        ("postgres://u:Secr3tPassw0rd@h:notaport/db", "cannot be read (invalid port number)"),
        ("mysql://u:Secr3tPassw0rd@127.0.0.1/db", "does not start with postgres://"),
        ("postgresql:Secr3tPassw0rd", "does not start with postgres://"),
        // Misspelt: sqlx would ignore it, and print its value in a warning.
        ("postgres://u@127.0.0.1/db?sslmod=Secr3tPassw0rd", "query parameter"),
    ] {
        let data_dir = dirs.path("vault");
        let line = refused(serve(&data_dir, url), "database_url_invalid", &[url, "Secr3tPassw0rd"]);
        assert!(line.contains("the database URL") && line.contains(said), "{url}: {line}");
        assert!(line.contains("postgres://USER@HOST:PORT/DATABASE"), "the form it takes: {line}");
        assert!(!data_dir.exists(), "{url}: no data dir made");
    }
}

#[test]
fn a_password_on_the_command_line_is_refused_unechoed() {
    let dirs = Dirs::new();
    let data_dir = dirs.path("vault");
    for url in ["postgres://u:Secr3tPassw0rd@127.0.0.1:1/db", "postgres://u@127.0.0.1:1/db?password=Secr3tPassw0rd"] {
        let mut cmd = serve(&data_dir, "");
        cmd.env_remove("REGENT_VAULT_DATABASE_URL").args(["--database-url", url]);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("REGENT_VAULT_DATABASE_URL") && stderr.contains("PGPASSWORD"), "{stderr}");
        let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(document["error"]["code"], "usage", "{document}");
        for printed in [&out.stdout, &out.stderr] {
            assert!(!leaks(printed, "Secr3tPassw0rd"), "{}", String::from_utf8_lossy(printed));
        }
        assert!(!data_dir.exists());
    }
}

#[test]
fn a_wrong_password_is_a_refused_login_and_says_where_the_password_goes() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let dirs = Dirs::new();
    let url = cluster.url(database.owner().name(), "Wr0ngPassw0rd", database.name());
    let line = refused(
        serve(&dirs.path("vault"), &url),
        "database_login_refused",
        &[&url, "Wr0ngPassw0rd", database.owner().password()],
    );
    assert!(line.contains("refused the login") && line.contains("password authentication failed"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{}/{}", cluster.port(), database.name())), "where: {line}");
    assert!(line.contains("PGPASSWORD") && line.contains("~/.pgpass"), "{line}");
    assert!(!dirs.path("vault").exists());
    assert!(dump(cluster, database.name()).is_empty(), "no schema made");
}

#[test]
fn a_port_where_nothing_listens_is_unreachable_at_once() {
    let dirs = Dirs::new();
    let port = regent_testkit::free_port();
    let url = format!("postgres://regent:Secr3tPassw0rd@127.0.0.1:{port}/vault");
    let started = Instant::now();
    let line = refused(serve(&dirs.path("vault"), &url), "database_unreachable", &[&url, "Secr3tPassw0rd"]);
    assert!(started.elapsed() < Duration::from_secs(5), "no retrying until a timeout: {:?}", started.elapsed());
    assert!(line.contains(&format!("127.0.0.1:{port}/vault")) && line.contains("nothing listens there"), "{line}");
    assert!(!dirs.path("vault").exists());
}

#[test]
fn a_role_that_may_not_create_the_schema_is_told_the_statement_that_lets_it() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let role = cluster.role("vault_no_create", "");
    let dirs = Dirs::new();
    let url = database.url_as(&role);
    let line = refused(serve(&dirs.path("vault"), &url), "database_permission_denied", &[&url, role.password()]);
    assert!(line.contains(&format!("the role {} may not create the schema regent_vault", role.name())), "{line}");
    assert!(line.contains(&format!("CREATE SCHEMA regent_vault AUTHORIZATION \"{}\"", role.name())), "{line}");
    assert!(dump(cluster, database.name()).is_empty(), "no schema made");
    assert!(!dirs.path("vault").exists());

    // The statement it names is the one that lets it start.
    cluster.psql(database.name(), &format!("CREATE SCHEMA regent_vault AUTHORIZATION \"{}\"", role.name()));
    start_and_stop(&dirs.path("vault"), &url);
    assert!(dump(cluster, database.name()).iter().any(|line| line == "table log"));
}

#[test]
fn another_applications_tables_in_the_schema_are_left_alone() {
    let cluster = postgres::shared();
    let database = cluster.database();
    cluster.psql(
        database.name(),
        "CREATE SCHEMA regent_vault; \
         CREATE TABLE regent_vault.vaults (id serial PRIMARY KEY, label text); \
         CREATE TABLE regent_vault.log (line text); \
         INSERT INTO regent_vault.vaults (label) VALUES ('theirs'); \
         INSERT INTO regent_vault.log VALUES ('their line')",
    );
    let before = dump(cluster, database.name());
    let dirs = Dirs::new();
    let url = database.url();
    let line =
        refused(serve(&dirs.path("vault"), &url), "database_schema_foreign", &[&url, database.owner().password()]);
    assert!(line.contains("holds tables regent did not create (log, vaults)"), "{line}");
    assert!(line.contains("a database of its own"), "{line}");
    assert_eq!(dump(cluster, database.name()), before, "their tables unchanged, no migration table added");
    assert!(!dirs.path("vault").exists());
}

#[test]
fn a_database_a_newer_build_migrated_is_left_alone() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let dirs = Dirs::new();
    let (data_dir, url) = (dirs.path("vault"), database.url());
    start_and_stop(&data_dir, &url);
    let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
    // What a build with a migration this one does not have would have left.
    cluster.psql(
        database.name(),
        "INSERT INTO regent_vault._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1000, 'from a newer build', true, '\\x00', 1); \
         CREATE TABLE regent_vault.newer (n int); INSERT INTO regent_vault.newer VALUES (1000)",
    );
    let before = dump(cluster, database.name());
    let line =
        refused(serve(&data_dir, &url), "database_schema_newer", &[&url, database.owner().password(), token.trim()]);
    assert!(line.contains("migrated by a newer regent") && line.contains("version 1000"), "{line}");
    assert_eq!(dump(cluster, database.name()), before, "the newer schema unchanged");
    assert_eq!(std::fs::read_to_string(data_dir.join("admin.token")).unwrap(), token);
}

#[test]
fn a_process_with_another_admin_token_is_refused_and_its_token_not_recorded() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let dirs = Dirs::new();
    let url = database.url();
    let first = dirs.path("first");
    start_and_stop(&first, &url);
    let token = std::fs::read_to_string(first.join("admin.token")).unwrap();
    // A second process, given a token of its own instead of a copy of the first one's.
    let second = dirs.path("second");
    std::fs::create_dir(&second).unwrap();
    let other = "another-admin-token-0123456789abcdefghijklmno";
    std::fs::write(second.join("admin.token"), format!("{other}\n")).unwrap();
    std::fs::set_permissions(second.join("admin.token"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = dump(cluster, database.name());
    let line = refused(
        serve(&second, &url),
        "database_token_mismatch",
        &[&url, database.owner().password(), token.trim(), other],
    );
    let token_file = second.join("admin.token");
    assert!(line.contains("serves another admin token") && line.contains(&token_file.display().to_string()), "{line}");
    assert!(line.contains("same") || line.contains("a copy of"), "what to do: {line}");
    assert_eq!(dump(cluster, database.name()), before, "nothing written");
    let held = cluster.psql(database.name(), "SELECT encode(admin_token_sha256, 'hex') FROM regent_vault.service");
    assert_eq!(held, hex::encode(sha2::Sha256::digest(token.trim().as_bytes())), "the first token's digest, only");

    // A copy of the first one's token, with a checkpoint key of its own: refused too (agents
    // trust the first one's key), naming the file to copy.
    std::fs::copy(first.join("admin.token"), &token_file).unwrap();
    let line = refused(serve(&second, &url), "database_checkpoint_key_mismatch", &[&url, token.trim()]);
    assert!(line.contains("checkpoint.key") && line.contains("a copy of"), "what to do: {line}");
    // Copies of both are what it needs.
    std::fs::copy(first.join("checkpoint.key"), second.join("checkpoint.key")).unwrap();
    start_and_stop(&second, &url);
    assert!(!contains(&std::fs::read(&token_file).unwrap(), other.as_bytes()));
}
