//! A real PostgreSQL (Debian's `postgresql` package) for tests: a throwaway cluster in a temp dir
//! on 127.0.0.1, and a fresh database with its own login role for each test. No container, no
//! mock; SQL goes through the `psql` binary, so this crate stays synchronous and small.
//! A cluster that cannot be set up (a file of its own temp dir that cannot be written, no
//! `/dev/urandom`) panics: this crate is only a dev-dependency, and a test without its PostgreSQL
//! fails; nothing here reads a user's input, the network beyond loopback, or a store.
//!
//! - [`shared`]: one cluster per test binary, started on first use. Each test takes its own
//!   [`Database`] from it ([`Cluster::database`]), so tests running in parallel do not see each
//!   other's tables.
//! - [`Cluster::start`]: a cluster of the test's own, for a test that stops and starts it.
//!
//! **The watchdog.** The shared cluster lives in a `static`, and a static is never dropped, so its
//! stop cannot be a `Drop`; nor would `Drop` run when the test process panics across threads,
//! aborts or is SIGKILLed. So every cluster gets, before `initdb` runs, a watchdog: a small
//! `sh` whose stdin is the read end of a pipe whose only write end is held by this process,
//! with the close-on-exec flag, so that no other child (not `pg_ctl`, not the postmaster, not the
//! watchdog itself, not a child a test leaves running) inherits it. The kernel closes the write end
//! when this process ends, however it ends; the watchdog's `read` then sees end-of-file and it
//! runs `pg_ctl stop -m immediate` and removes the temp dir. The watchdog is in its own process
//! group and ignores SIGINT and SIGHUP, so a Ctrl-C on `cargo test` does not kill it before it
//! has cleaned up (the postmaster is out of the group too: `pg_ctl` starts it with `setsid`).
//!
//! **`runuser`.** `initdb`, `pg_ctl` and `postgres` refuse to run as root, and CI runs as root.
//! Then the temp dir is given to the `postgres` user the Debian package creates, and those three
//! run as it through `runuser -u postgres --` (no password, no login shell, no setuid code here).
//! Not root, they run as the current user. `psql` runs as whoever runs the tests: it reaches the
//! server over TCP with a password, as the service under test does.
//!
//! Authentication is real: `scram-sha-256` for TCP (so a test can check a wrong password is
//! refused); `trust` only on the Unix socket, which lives in the temp dir (never
//! `/var/run/postgresql`), where only the cluster's owner can reach it.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::free_port;

/// The superuser `initdb` creates; its password is random, per cluster.
pub const SUPERUSER: &str = "postgres";

/// The programs a cluster needs, all from one PostgreSQL's `bin` directory.
const PROGRAMS: [&str; 4] = ["initdb", "pg_ctl", "postgres", "psql"];

/// How long `pg_ctl` waits for a start or a stop, in seconds.
const PG_CTL_TIMEOUT: &str = "30";

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_NAME: AtomicU64 = AtomicU64::new(1);

/// The test binary's cluster, started on the first call. It is stopped and its files removed by its
/// watchdog when the test process ends (see the module's documentation), never by `Drop`. If it
/// cannot start, every test that asks for it panics with the reason (initdb's or the server's
/// log), and it is not tried again.
pub fn shared() -> &'static Cluster {
    match SHARED.get_or_init(Cluster::try_start) {
        Ok(cluster) => cluster,
        Err(reason) => panic!("{reason}"),
    }
}

/// A PostgreSQL cluster in a temp dir, listening on 127.0.0.1 at [`Cluster::port`].
pub struct Cluster {
    bindir: PathBuf,
    /// Root runs `initdb`, `pg_ctl` and `postgres` as the `postgres` user, through `runuser`.
    as_postgres: bool,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    password: String,
    reaper: Option<Reaper>,
}

/// The watchdog: `pipe` is the only write end of its stdin.
struct Reaper {
    pipe: Option<std::io::PipeWriter>,
    child: Child,
}

/// A login role: a name and its (random, URL-safe) password.
#[derive(Clone, Debug)]
pub struct Role {
    name: String,
    password: String,
}

impl Role {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

/// A fresh database, owned by a fresh login role of its own (which can create schemas, tables and
/// so on in it, and nothing elsewhere). Dropping it drops the database and the role, best effort.
pub struct Database<'c> {
    cluster: &'c Cluster,
    name: String,
    owner: Role,
}

impl Database<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role that owns the database.
    pub fn owner(&self) -> &Role {
        &self.owner
    }

    /// `postgres://OWNER:PASSWORD@127.0.0.1:PORT/NAME`: what the service under test is given.
    pub fn url(&self) -> String {
        self.url_as(&self.owner)
    }

    /// The database, as another role (one from [`Cluster::role`], say).
    pub fn url_as(&self, role: &Role) -> String {
        self.cluster.url(&role.name, &role.password, &self.name)
    }

    /// The database, as the cluster's superuser.
    pub fn superuser_url(&self) -> String {
        self.cluster.superuser_url(&self.name)
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        // Best effort: the cluster may be stopped (a test stopped it), a connection may linger
        // (FORCE ends it); the cluster is thrown away with the test process anyway.
        let _ = self.cluster.superuser_psql(
            "postgres",
            &[
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
                &format!("DROP ROLE IF EXISTS \"{}\"", self.owner.name),
            ],
        );
    }
}

impl Cluster {
    /// A cluster of the caller's own, for a test that stops or restarts it. `Drop` stops it
    /// (`-m immediate`) and removes its files; its watchdog does the same if `Drop` never runs.
    pub fn start() -> Cluster {
        Cluster::try_start().unwrap_or_else(|reason| panic!("{reason}"))
    }

    fn try_start() -> Result<Cluster, String> {
        let bindir = find_bindir()?;
        // SAFETY: geteuid cannot fail and touches no memory.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("regent-postgres-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for PostgreSQL: {e}"))?
            .keep();
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        // The watchdog first: from here on, however this process ends, the dir goes.
        let mut pg_ctl: Vec<OsString> = Vec::new();
        if as_postgres {
            pg_ctl.extend([runuser().into(), "-u".into(), SUPERUSER.into(), "--".into()]);
        }
        pg_ctl.push(bindir.join("pg_ctl").into());
        let reaper = match spawn_reaper(&dir, &data, &pg_ctl) {
            Ok(reaper) => reaper,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("cannot start the watchdog of a PostgreSQL cluster (sh): {e}"));
            }
        };
        // An error from here on drops the cluster, and with it the watchdog's pipe.
        let mut cluster =
            Cluster { bindir, as_postgres, dir, data, log, port: 0, password: random_token(24), reaper: Some(reaper) };
        cluster.init()?;
        cluster.first_start()?;
        Ok(cluster)
    }

    /// `initdb`, as `postgres` when root, with the superuser's password from a file.
    fn init(&self) -> Result<(), String> {
        // Only the cluster's owner may reach the trusted Unix socket, the log and the data.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).unwrap();
        if self.as_postgres {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to the postgres user: {e}", self.dir.display()))?;
        }
        let pwfile = self.dir.join("superuser.password");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .and_then(|mut file| writeln!(file, "{}", self.password))
            .unwrap();
        if self.as_postgres {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let output = self
            .server_program("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            // C locale: the same collation on every machine, and no locale to install.
            // --no-sync: initdb's files need not reach the disk before the server starts; the
            // server itself runs with fsync on.
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        let _ = fs::remove_file(&pwfile);
        if !output.status.success() {
            let hint = if self.as_postgres {
                format!(
                    " (it runs as the postgres user, which must be able to reach {}: set TMPDIR to a \
                     directory it can traverse, /tmp is fine)",
                    self.dir.display()
                )
            } else {
                String::new()
            };
            return Err(format!("initdb failed{hint}: {}", describe(&output)));
        }
        let mut conf = fs::OpenOptions::new().append(true).open(self.data.join("postgresql.conf")).unwrap();
        conf.write_all(b"\n# regent-testkit: its settings, port included\ninclude = 'regent-testkit.conf'\n").unwrap();
        Ok(())
    }

    /// Starts the server on a free port; if another process took the port in between, tries
    /// another.
    fn first_start(&mut self) -> Result<(), String> {
        for _ in 0..5 {
            self.port = free_port();
            self.write_settings();
            let log_before = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(reason) => {
                    let log = fs::read(&self.log).unwrap_or_default();
                    let this_attempt = String::from_utf8_lossy(&log[(log_before as usize).min(log.len())..]);
                    if !this_attempt.contains("Address already in use") {
                        return Err(reason);
                    }
                }
            }
        }
        Err(format!("PostgreSQL found no free port in 5 tries; {}", self.log_tail()))
    }

    fn write_settings(&self) {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             max_connections = 200\n\
             shared_buffers = 64MB\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            port = self.port,
            socket_dir = self.dir.display(),
        );
        fs::write(self.data.join("regent-testkit.conf"), settings).unwrap();
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let output = self
            .server_program("pg_ctl")
            .args(["start", "-w", "-t", PG_CTL_TIMEOUT, "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("PostgreSQL did not start ({}); {}", describe(&output), self.log_tail()))
        }
    }

    fn pg_ctl_stop(&self) -> Result<(), String> {
        let output = self
            .server_program("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT, "-D"])
            .arg(&self.data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop -m immediate failed ({}); {}", describe(&output), self.log_tail()))
        }
    }

    /// Stops the server as a crash would: no checkpoint, no clean shutdown (`pg_ctl stop -m
    /// immediate`). What was committed is in the WAL; [`Cluster::start_again`] replays it.
    pub fn stop_immediate(&self) {
        self.pg_ctl_stop().unwrap_or_else(|reason| panic!("{reason}"));
    }

    /// Starts the server again after [`Cluster::stop_immediate`]: same data, same port.
    pub fn start_again(&self) {
        self.pg_ctl_start().unwrap_or_else(|reason| panic!("{reason}"));
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.server_program("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"))
            .status
            .success()
    }

    /// The directory of `initdb`, `pg_ctl`, `postgres` and `psql` this cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir: the data dir, the log, the Unix socket. Removed when the cluster stops for
    /// good.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's pid, from `postmaster.pid`; `None` when the server is not running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DATABASE`. Generated names and passwords are
    /// URL-safe; the caller's must be too (nothing is percent-encoded).
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{database}", self.port)
    }

    /// A database, as the superuser.
    pub fn superuser_url(&self, database: &str) -> String {
        self.url(SUPERUSER, &self.password, database)
    }

    /// A fresh database (`regent_test_N_PID`) owned by a fresh login role (`regent_test_N_PID_owner`)
    /// with a random password. In it, `CREATE` on schema `public` is revoked from `PUBLIC` (as
    /// PostgreSQL 15 does by default), so only the owner can create there on any version; any role
    /// can still connect, as PostgreSQL's default `CONNECT` for `PUBLIC` allows.
    pub fn database(&self) -> Database<'_> {
        let name = format!("regent_test_{}_{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed), std::process::id());
        let owner = Role { name: format!("{name}_owner"), password: random_token(24) };
        self.superuser_psql(
            "postgres",
            &[
                &format!("CREATE ROLE \"{}\" LOGIN PASSWORD '{}'", owner.name, owner.password),
                &format!("CREATE DATABASE \"{name}\" OWNER \"{}\"", owner.name),
            ],
        )
        .unwrap_or_else(|stderr| panic!("cannot create database {name}: {stderr}"));
        self.psql(&name, "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
        Database { cluster: self, name, owner }
    }

    /// A fresh login role `PREFIX_N_PID` with a random password, and `options` after `LOGIN
    /// PASSWORD '...'` in its `CREATE ROLE` (`""`, `"CONNECTION LIMIT 2"`, `"CREATEDB"`...). It
    /// owns nothing and is granted nothing: it can connect to any database (PostgreSQL's default)
    /// and create nothing in one it does not own. `prefix`: lowercase letters, digits, `_`. The
    /// role is not dropped: it lives as long as the cluster.
    pub fn role(&self, prefix: &str, options: &str) -> Role {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= 40
                && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a role's prefix is 1 to 40 of a-z, 0-9 and _, not {prefix:?}"
        );
        let role = Role {
            name: format!("{prefix}_{}_{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed), std::process::id()),
            password: random_token(24),
        };
        self.psql("postgres", &format!("CREATE ROLE \"{}\" LOGIN PASSWORD '{}' {options}", role.name, role.password));
        role
    }

    /// Runs `sql` in `database` as the superuser, through `psql` over TCP (`-At`: rows as
    /// `a|b` lines, no headers; `-q`: no command tags), and returns what it printed, without the
    /// final newline. Several statements in `sql` run in one transaction. Panics with psql's
    /// message when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.superuser_psql(database, &[sql])
            .unwrap_or_else(|stderr| panic!("psql failed in database {database}: {sql}\n{stderr}"))
    }

    /// Runs `sql` through `psql "URL"`: as whoever the URL names. `Err` is psql's message (a
    /// refused password, a permission denied), for a test that expects the refusal.
    pub fn psql_url(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut command = self.psql_command();
        command.arg(url).arg("-c").arg(sql);
        run_psql(command)
    }

    fn superuser_psql(&self, database: &str, commands: &[&str]) -> Result<String, String> {
        let mut command = self.psql_command();
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-d", database]);
        command.env("PGPASSWORD", &self.password);
        // One -c each: DROP DATABASE and CREATE DATABASE refuse to run in a transaction block.
        for sql in commands {
            command.arg("-c").arg(sql);
        }
        run_psql(command)
    }

    fn psql_command(&self) -> Command {
        let mut command = Command::new(self.bindir.join("psql"));
        // The caller's PG* variables (PGHOST, PGOPTIONS, PGSERVICE...) must not redirect or
        // reconfigure the connection.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        command.env("PGCONNECT_TIMEOUT", "10").env("PGSSLMODE", "disable");
        command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]).stdin(Stdio::null());
        command
    }

    /// `initdb`, `pg_ctl` or `postgres`: as the `postgres` user through `runuser` when root, run
    /// from the temp dir (which that user can reach, unlike, say, `/root`).
    fn server_program(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new(runuser());
            command.args(["-u", SUPERUSER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("the end of its log ({}):\n{tail}", self.log.display())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some() {
            let _ = self.pg_ctl_stop();
        }
        // Closing the pipe tells the watchdog to stop the server (already stopped) and remove the
        // dir; waiting for it means the dir is gone when `drop` returns.
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.pipe.take());
            let _ = reaper.child.wait();
        }
    }
}

/// The watchdog's script: `$1` the temp dir, `$2` the data dir, the rest the `pg_ctl` command
/// (behind `runuser` when root). It waits for end-of-file on stdin, then stops and removes.
const REAPER_SCRIPT: &str = r#"trap '' INT HUP
dir=$1
data=$2
shift 2
while read -r _; do :; done
"$@" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1
rm -rf -- "$dir"
"#;

fn spawn_reaper(dir: &Path, data: &Path, pg_ctl: &[OsString]) -> std::io::Result<Reaper> {
    // std creates both ends close-on-exec (pipe2 with O_CLOEXEC, in one step, so a child another
    // thread spawns meanwhile cannot inherit them either); the read end becomes the watchdog's
    // stdin, and only that dup is inherited.
    let (reader, writer) = std::io::pipe()?;
    // SAFETY: F_GETFD on a descriptor we own reads its flags and touches no memory.
    let flags = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_GETFD) };
    assert!(
        flags >= 0 && flags & libc::FD_CLOEXEC != 0,
        "the watchdog's pipe must be close-on-exec, or other children would keep PostgreSQL alive"
    );
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(REAPER_SCRIPT)
        .arg("regent-postgres-watchdog")
        .arg(dir)
        .arg(data)
        .args(pg_ctl)
        .stdin(Stdio::from(reader))
        // Not the test's stdout: a parent reading it to the end would wait for the watchdog.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // Out of the test's process group: a Ctrl-C on the test must not kill it.
        .process_group(0)
        .spawn()?;
    Ok(Reaper { pipe: Some(writer), child })
}

/// The directory with `initdb`, `pg_ctl`, `postgres` and `psql`: `pg_config --bindir` if it has
/// them, else the highest version under `/usr/lib/postgresql/*/bin` that does (Debian keeps them
/// off PATH). Never PATH itself: links a fresh machine lacks must not make a test pass here.
fn find_bindir() -> Result<PathBuf, String> {
    let has_programs = |dir: &Path| PROGRAMS.iter().all(|program| dir.join(program).is_file());
    if let Ok(output) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_programs(&dir) {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name.split('.').map(|part| part.parse::<u32>().ok()).collect::<Option<Vec<u32>>>() else {
            continue;
        };
        let bin = entry.path().join("bin");
        if has_programs(&bin) && best.as_ref().is_none_or(|(highest, _)| version > *highest) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed, and this test needs a real one (initdb, pg_ctl, postgres and psql, \
         from `pg_config --bindir` or /usr/lib/postgresql/*/bin): install it with \
         `apt-get install -y postgresql` (./test.sh does this)"
            .to_string()
    })
}

/// The `postgres` user's uid and gid (the Debian package creates it).
fn postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .map_err(|e| format!("cannot run id to find the postgres user: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "running as root, the tests run PostgreSQL as the postgres user, and there is none \
                 (id {flag} postgres: {}); the Debian package creates it: apt-get install -y postgresql",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id {flag} postgres printed no number: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser"].into_iter().find(|path| Path::new(path).is_file()).unwrap_or("runuser")
}

fn run_psql(mut command: Command) -> Result<String, String> {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run psql: {e}"));
    if output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    } else {
        Err(describe(&output))
    }
}

fn describe(output: &Output) -> String {
    let mut text = format!("{}", output.status);
    for stream in [&output.stderr, &output.stdout] {
        for line in stream.lines().map_while(Result::ok) {
            if !line.trim().is_empty() {
                text.push_str("\n  ");
                text.push_str(&line);
            }
        }
    }
    text
}

/// `len` random letters and digits: a password that needs no quoting in SQL and no encoding in a
/// URL.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("read /dev/urandom");
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}
