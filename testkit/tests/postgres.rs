//! The test kit's PostgreSQL, for real: a shared cluster with a database and a role per test,
//! passwords that are checked, committed data kept through an immediate stop, and a cluster that
//! never outlives its test process (a normal exit, or SIGKILL).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regent_testkit::postgres::{self, Cluster};

#[test]
fn the_shared_cluster_runs_with_its_settings_on_loopback() {
    let cluster = postgres::shared();
    assert!(std::ptr::eq(cluster, postgres::shared()), "one cluster per test binary");
    assert!(cluster.is_running());
    let show = |setting: &str| cluster.psql("postgres", &format!("SHOW {setting}"));
    assert_eq!(show("listen_addresses"), "127.0.0.1");
    assert_eq!(show("port"), cluster.port().to_string());
    assert_eq!(show("unix_socket_directories"), cluster.dir().display().to_string());
    assert_eq!(show("fsync"), "on");
    assert_eq!(show("synchronous_commit"), "on");
    assert_eq!(show("max_connections"), "200");
    assert_eq!(show("shared_buffers"), "64MB");
    assert_eq!(show("password_encryption"), "scram-sha-256");
    assert_eq!(cluster.psql("postgres", "SELECT current_user"), "postgres");
    // The server logs to the temp dir.
    assert!(cluster.log_text().contains("database system is ready to accept connections"), "{}", cluster.log_text());
}

#[test]
fn each_database_is_its_owners_and_no_other_roles() {
    let cluster = postgres::shared();
    let a = cluster.database();
    let b = cluster.database();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.owner().name(), b.owner().name());
    assert_ne!(a.owner().password(), b.owner().password());
    assert_eq!(
        a.url(),
        format!("postgres://{}:{}@127.0.0.1:{}/{}", a.owner().name(), a.owner().password(), cluster.port(), a.name())
    );

    // Each owner creates a table in its database, through psql and its URL.
    cluster.psql_url(&a.url(), "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").unwrap();
    cluster.psql_url(&b.url(), "CREATE TABLE t (x int); INSERT INTO t VALUES (2)").unwrap();
    cluster.psql_url(&a.url(), "CREATE SCHEMA vault; CREATE TABLE vault.s (y text)").unwrap();
    assert_eq!(cluster.psql_url(&a.url(), "SELECT x FROM t").unwrap(), "1");
    assert_eq!(cluster.psql_url(&b.url(), "SELECT x FROM t").unwrap(), "2");
    assert_eq!(cluster.psql(a.name(), "SELECT tableowner FROM pg_tables WHERE tablename = 't'"), a.owner().name());
    assert_eq!(
        cluster.psql(
            "postgres",
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'", b.name())
        ),
        b.owner().name()
    );

    // a's owner may connect to b (PostgreSQL's default), and do nothing there.
    let a_in_b = b.url_as(a.owner());
    assert_eq!(cluster.psql_url(&a_in_b, "SELECT current_user").unwrap(), a.owner().name());
    for sql in
        ["SELECT x FROM t", "INSERT INTO t VALUES (3)", "DELETE FROM t", "DROP TABLE t", "CREATE TABLE u (x int)"]
    {
        let refusal = cluster.psql_url(&a_in_b, sql).expect_err(sql);
        assert!(refusal.contains("permission denied") || refusal.contains("must be owner"), "{sql}: {refusal}");
    }
    assert_eq!(cluster.psql_url(&b.url(), "SELECT x FROM t").unwrap(), "2", "b's table as it was");

    // The superuser sees each database's table, in that database only.
    assert_eq!(cluster.psql(a.name(), "SELECT x FROM t"), "1");
    assert_eq!(cluster.psql(b.name(), "SELECT x FROM t"), "2");
    assert_eq!(cluster.psql_url(&b.superuser_url(), "SELECT x FROM t").unwrap(), "2");

    // Dropping a database drops it and its owner.
    let (name, owner) = (a.name().to_string(), a.owner().name().to_string());
    drop(a);
    assert_eq!(cluster.psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")), "0");
    assert_eq!(cluster.psql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{owner}'")), "0");
}

#[test]
fn a_role_of_its_own_connects_but_creates_nothing() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let reader = cluster.role("vault_reader", "CONNECTION LIMIT 5");
    assert!(reader.name().starts_with("vault_reader_"), "{}", reader.name());
    assert_eq!(
        cluster.psql("postgres", &format!("SELECT rolconnlimit FROM pg_roles WHERE rolname = '{}'", reader.name())),
        "5"
    );
    let url = database.url_as(&reader);
    assert_eq!(cluster.psql_url(&url, "SELECT current_user").unwrap(), reader.name());
    let refusal = cluster.psql_url(&url, "CREATE TABLE t (x int)").unwrap_err();
    assert!(refusal.contains("permission denied for schema public"), "{refusal}");
    let refusal = cluster.psql_url(&url, "CREATE SCHEMA s").unwrap_err();
    assert!(refusal.contains("permission denied for database"), "{refusal}");
    // The owner can, in the same database.
    cluster.psql_url(&database.url(), "CREATE TABLE t (x int)").unwrap();
}

#[test]
fn a_wrong_password_is_refused() {
    let cluster = postgres::shared();
    let database = cluster.database();
    let owner = database.owner();
    let wrong = cluster.url(owner.name(), "not-the-password", database.name());
    let refusal = cluster.psql_url(&wrong, "SELECT 1").unwrap_err();
    assert!(refusal.contains("password authentication failed"), "{refusal}");
    let wrong = cluster.url(postgres::SUPERUSER, "not-the-password", database.name());
    let refusal = cluster.psql_url(&wrong, "SELECT 1").unwrap_err();
    assert!(refusal.contains("password authentication failed"), "{refusal}");
    // Another role's password is not this one's.
    let other = cluster.database();
    let swapped = cluster.url(owner.name(), other.owner().password(), database.name());
    assert!(cluster.psql_url(&swapped, "SELECT 1").unwrap_err().contains("password authentication failed"));
    // The right ones are accepted.
    assert_eq!(cluster.psql_url(&database.url(), "SELECT 1").unwrap(), "1");
    assert_eq!(cluster.psql_url(&database.superuser_url(), "SELECT 1").unwrap(), "1");
}

#[test]
#[should_panic(expected = "syntax error")]
fn psql_panics_with_psqls_message() {
    postgres::shared().psql("postgres", "SELEC 1");
}

#[test]
fn an_immediate_stop_keeps_what_was_committed() {
    let cluster = Cluster::start();
    assert!(cluster.is_running());
    let port = cluster.port();
    let database = cluster.database();
    let url = database.url();
    cluster.psql_url(&url, "CREATE TABLE t (x int)").unwrap();
    for i in 0..50 {
        cluster.psql_url(&url, &format!("INSERT INTO t VALUES ({i})")).unwrap();
    }
    // Not committed when the server stops: an open transaction in a psql that waits for more.
    let mut open = Command::new(cluster.bindir().join("psql"))
        .args(["-X", "-q", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(open.stdin.as_mut().unwrap(), "BEGIN; INSERT INTO t VALUES (1000);").unwrap();
    let in_transaction = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND state = 'idle in transaction'",
        database.owner().name()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.psql("postgres", &in_transaction) != "1" {
        assert!(Instant::now() < deadline, "the open transaction never showed in pg_stat_activity");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = cluster.postmaster_pid().expect("postmaster.pid");

    cluster.stop_immediate();
    assert!(!cluster.is_running());
    assert!(!alive(pid), "the postmaster {pid} is still running");
    assert!(cluster.psql_url(&url, "SELECT 1").is_err(), "a stopped server answered");
    drop(open.stdin.take());
    let _ = open.wait();

    cluster.start_again();
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql_url(&url, "SELECT count(*), sum(x) FROM t").unwrap(), "50|1225");
    // It was a crash for PostgreSQL, not a clean shutdown: it recovered from its WAL.
    let log = cluster.log_text();
    assert!(log.contains("was not properly shut down; automatic recovery in progress"), "{log}");

    let dir = cluster.dir().to_path_buf();
    let pid = cluster.postmaster_pid().expect("postmaster.pid");
    drop(database);
    drop(cluster);
    assert!(!alive(pid), "the postmaster {pid} outlived its Cluster");
    assert!(!dir.exists(), "{} outlived its Cluster", dir.display());
}

/// Set in the child test process the reaper tests start: what it does once its cluster runs.
const CHILD_MODE: &str = "REGENT_TESTKIT_POSTGRES_CHILD";

/// Not a test of its own: the body of the child test process of the two tests below. Without
/// `CHILD_MODE` (any ordinary run) it does nothing.
#[test]
#[expect(clippy::zombie_processes, reason = "the sleeper is to outlive this process; the parent test kills it")]
fn reaper_child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let cluster = postgres::shared();
    // A child that outlives this process: it must not keep the cluster alive.
    let sleeper = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    println!(
        "cluster postmaster={} sleeper={} port={} dir={}",
        cluster.postmaster_pid().unwrap(),
        sleeper.id(),
        cluster.port(),
        cluster.dir().display()
    );
    if mode == "kill" {
        // The parent SIGKILLs this process.
        std::thread::sleep(Duration::from_secs(60));
        panic!("not killed");
    }
    // "exit": the test passes, and the test binary exits; the static cluster is never dropped.
}

struct ChildCluster {
    postmaster: u32,
    sleeper: u32,
    port: u16,
    dir: PathBuf,
}

/// Runs `reaper_child_process` in a child test process; `kill`: SIGKILLs it once its cluster runs.
fn run_child(mode: &str) -> ChildCluster {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["reaper_child_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut found = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // The harness prints `test reaper_child_process ... ` before it, on the same line.
        if let Some((_, rest)) = line.split_once("cluster ") {
            let field = |key: &str| {
                rest.split(' ').find_map(|kv| kv.strip_prefix(key)).unwrap_or_else(|| panic!("{key} in {line}"))
            };
            found = Some(ChildCluster {
                postmaster: field("postmaster=").parse().unwrap(),
                sleeper: field("sleeper=").parse().unwrap(),
                port: field("port=").parse().unwrap(),
                dir: PathBuf::from(field("dir=")),
            });
            if mode == "kill" {
                child.kill().unwrap();
            }
            // Drain the rest (the harness's summary), up to end-of-file.
            continue;
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    let found = found.unwrap_or_else(|| panic!("the child test printed no cluster ({status}): {seen:#?}"));
    if mode == "kill" {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    } else {
        assert!(status.success(), "the child test failed ({status}): {seen:#?}");
    }
    assert!(seen.iter().any(|line| line.contains("1 passed") || mode == "kill"), "{seen:#?}");
    found
}

fn assert_reaped(child: ChildCluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(child.postmaster) || child.dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleeper_alive = alive(child.sleeper);
    // SAFETY: kill sends a signal and touches no memory.
    unsafe { libc::kill(child.sleeper as libc::pid_t, libc::SIGKILL) };
    assert!(!alive(child.postmaster), "the postmaster {} outlived its test process by 10 s", child.postmaster);
    assert!(!child.dir.exists(), "{} outlived its test process by 10 s", child.dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", child.port)).is_err(), "port {} still answers", child.port);
    assert!(sleeper_alive, "the sleeper was to outlive the test process, and show it keeps nothing alive");
}

#[test]
fn the_shared_cluster_stops_when_its_test_process_exits() {
    assert_reaped(run_child("exit"));
}

#[test]
fn the_shared_cluster_stops_when_its_test_process_is_killed() {
    assert_reaped(run_child("kill"));
}

/// Whether `pid` is a live process (a zombie is not: nothing may reap an orphan here).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).and_then(|rest| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}
