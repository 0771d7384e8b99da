//! Nothing a user typed, a file held or the network said reaches the terminal raw: control and
//! bidi characters in values are shown escaped (`\u{1b}`), a line break inside a value never makes
//! a line of its own, and `--json` keeps the exact string.
//!
//! Each scenario runs twice, on fresh data dirs: with hostile values and with plain ones of the
//! same kind (refused or accepted alike). The hostile run must hold no raw control or bidi
//! character in its human output, show the values escaped, and print exactly as many lines as the
//! plain run; the audit trail must hold exactly one row per event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::support::Agent;

/// What an attacker puts in a value: a line break and a forged audit row, a carriage return, ESC
/// sequences (clear the screen; set the window title, ended by BEL), the C1 CSI, DEL, a tab, and
/// bidi overrides. No `/`, so that it can be a folder's name.
const HOSTILE: &str = "x\n    9  2026-01-01 00:00:00  root@vault          accepted    forged row\r\x1b[2J\x1b]0;title\x07\u{9b}31m\x7f\t\u{202e}dlrow\u{2066}z\u{2069}\u{200f}";
/// The same kind of value, harmless: accepted or refused where HOSTILE is.
const PLAIN: &str = "x plain value";
/// Bidi controls only: what a proxy user name may hold (control characters are refused there).
const HOSTILE_USER: &str = "ops\u{202e}nimda\u{2067}\u{200e}";
const PLAIN_USER: &str = "ops-plain";
/// How the ESC sequence of HOSTILE is shown: proof that the value was printed, escaped.
const SHOWN_ESCAPED: &str = "\\u{1b}[2J";

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// No raw control character (C0, DEL, C1) but the line breaks between lines, no bidi control.
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}): {bytes:?}"));
    if let Some((at, c)) = text.char_indices().find(|&(_, c)| (c.is_control() && c != '\n') || is_bidi_control(c)) {
        panic!("{what}: a raw {c:?} at byte {at}:\n{text:?}");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Agent {
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let output = self.cmd().arg("--json").args(args).output().unwrap();
        text(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Folders with plain names, for scenarios about something else.
    fn plain_folders(&self) {
        let out = self.folders();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }

    /// `regent audit`: a header and exactly one row per event, numbered 1, 2, 3, ...
    fn assert_one_row_per_event(&self) -> Output {
        let events = self.json(&["status"])["events"].as_u64().unwrap();
        assert!(events > 0);
        let out = self.run(&["audit"]);
        assert_eq!(out.status.code(), Some(0));
        assert_clean("audit", &out.stdout);
        let stdout = text(&out.stdout);
        let rows: Vec<&str> = stdout.lines().collect();
        assert_eq!(rows.len() as u64, 1 + events, "one row per event:\n{stdout}");
        for (i, row) in rows[1..].iter().enumerate() {
            assert!(row.trim_start().starts_with(&format!("{}  ", i + 1)), "row {}: {row}\n{stdout}", i + 1);
        }
        out
    }
}

/// Runs `scenario` with hostile and with plain values and compares the runs (see the module doc).
/// `scenario` returns what each command printed, under a name; the names of JSON runs start with
/// `json` (JSON keeps the exact string: serde's escaping is its contract, not ours).
fn compare_runs(scenario: impl Fn(&Agent, bool) -> Vec<(String, Output)>) {
    let (hostile_agent, plain_agent) = (Agent::new(), Agent::new());
    let hostile = scenario(&hostile_agent, true);
    let plain = scenario(&plain_agent, false);
    assert_eq!(hostile.len(), plain.len());
    let mut shown = false;
    for ((name, h), (_, p)) in hostile.iter().zip(&plain) {
        assert_eq!(h.status.code(), p.status.code(), "{name}: {}\n{}", text(&h.stderr), text(&p.stderr));
        if !name.starts_with("json") {
            assert_clean(&format!("{name}: stdout"), &h.stdout);
            assert_clean(&format!("{name}: stderr"), &h.stderr);
            for (stream, hb, pb) in [("stdout", &h.stdout, &p.stdout), ("stderr", &h.stderr, &p.stderr)] {
                assert_eq!(
                    text(hb).lines().count(),
                    text(pb).lines().count(),
                    "{name}: {stream} has as many lines as with plain values:\n{}\n--- plain ---\n{}",
                    text(hb),
                    text(pb)
                );
            }
        }
        shown |= text(&h.stdout).contains(SHOWN_ESCAPED) || text(&h.stderr).contains(SHOWN_ESCAPED);
    }
    assert!(shown, "the hostile value was shown, escaped, somewhere");
    hostile_agent.assert_one_row_per_event();
}

fn value(hostile: bool) -> &'static str {
    if hostile { HOSTILE } else { PLAIN }
}

/// A refusal: exit 1 and one line on stderr, `regent: REASON: ...`.
fn assert_refused(output: &Output, reason: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("regent: {reason}: ")), "{stderr}");
}

/// Exports the agent's log and replays it: `regent replay` shows a customer's log as it is.
fn export_and_replay(agent: &Agent, runs: &mut Vec<(String, Output)>) {
    let export = agent.path("log.jsonl");
    let out = agent.cmd().args(["audit", "export", "--output"]).arg(&export).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    runs.push(("export".into(), out));
    let replay = agent.cmd().args(["replay", "--check"]).arg(&export).output().unwrap();
    let events = agent.json(&["status"])["events"].as_u64().unwrap();
    // The timeline: one row per record between its header and the final status.
    let stdout = text(&replay.stdout);
    let timeline: Vec<&str> = stdout.lines().skip(2).take_while(|l| !l.is_empty()).collect();
    assert_eq!(timeline.len() as u64, events, "one timeline row per record:\n{stdout}");
    runs.push(("replay".into(), replay));
}

#[test]
fn folder_paths_are_escaped_in_every_view_and_kept_exact_in_json() {
    compare_runs(|agent, hostile| {
        let v = value(hostile);
        let (install, scratch) = (agent.path(&format!("i{v}")), agent.path(&format!("s{v}")));
        let mut runs = vec![("folders".to_string(), agent.folders_at(&install, &scratch))];
        // Refused: a relative path, recorded with its message.
        let relative = format!("rel{v}");
        let refused = agent.run(&["properties", "scratch-dir", &relative]);
        assert_refused(&refused, "invalid_folder");
        runs.push(("scratch-dir refused".into(), refused));
        runs.push(("status".into(), agent.run(&["status"])));
        runs.push(("properties".into(), agent.run(&["properties"])));
        runs.push(("audit".into(), agent.run(&["audit"])));
        export_and_replay(agent, &mut runs);

        // JSON holds the exact strings.
        let status = agent.json(&["status"]);
        assert!(status["last_failure"]["message"].as_str().unwrap().contains(&relative), "{status}");
        let properties = agent.json(&["properties"]);
        assert_eq!(properties["folders"]["install_dir"].as_str(), install.to_str(), "{properties}");
        assert_eq!(properties["folders"]["scratch_dir"].as_str(), scratch.to_str(), "{properties}");
        let audit = agent.json_lines(&["audit"]);
        assert!(audit[0]["summary"].as_str().unwrap().contains(install.to_str().unwrap()), "{:?}", audit[0]);
        assert!(audit[1]["summary"].as_str().unwrap().contains(&relative), "{:?}", audit[1]);
        let out = agent.cmd().arg("--json").arg("audit").output().unwrap();
        runs.push(("json audit".into(), out));
        runs
    });
}

#[test]
fn a_proxy_host_and_user_name_are_escaped_where_they_are_echoed() {
    compare_runs(|agent, hostile| {
        agent.plain_folders();
        // No `@`: a host with one is refused before it is recorded (it could hold a password).
        let host = format!("h{}", value(hostile).replace('@', "-"));
        let refused = agent.run(&["proxy", "set", "--host", &host, "--port", "3128"]);
        assert_refused(&refused, "invalid_proxy");
        let mut runs = vec![("proxy host refused".to_string(), refused)];
        // The refusal is the last failure until a proxy is set.
        runs.push(("status after refusal".into(), agent.run(&["status"])));
        let status = agent.json(&["status"]);
        assert!(status["last_failure"]["message"].as_str().unwrap().contains(&host), "{status}");
        let user = if hostile { HOSTILE_USER } else { PLAIN_USER };
        let set = agent
            .cmd()
            .args(["proxy", "set", "--host", "proxy.example", "--port", "3128", "--username", user])
            .args(["--password-env", "PROXY_PW"])
            .env("PROXY_PW", "a proxy password")
            .output()
            .unwrap();
        assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
        runs.push(("proxy set".into(), set));
        runs.push(("status".into(), agent.run(&["status"])));
        runs.push(("properties".into(), agent.run(&["properties"])));
        runs.push(("audit".into(), agent.run(&["audit"])));
        export_and_replay(agent, &mut runs);
        assert_eq!(agent.json(&["properties"])["proxy"]["username"].as_str(), Some(user));
        if hostile {
            let properties = text(&runs[4].1.stdout);
            assert!(properties.contains("ops\\u{202e}nimda\\u{2067}\\u{200e}"), "{properties}");
        }
        runs
    });
}

/// A credentials file as the vault issues it, with its vault name (`ResourceName`) replaced by
/// `name`: XML holds line breaks, tabs and CR as character references, and C1, DEL and bidi
/// controls raw; ESC and BEL it cannot hold at all, so they are left out. The name as the file
/// holds it.
fn credentials_with_vault_name(file: &Path, name: &str) -> String {
    crate::support::write_credentials(file, "vault-x", Utc::now() - Duration::minutes(5), 48);
    let xml = std::fs::read_to_string(file).unwrap();
    let held: String = name.chars().filter(|&c| !matches!(c, '\x1b' | '\x07')).collect();
    let as_xml: String = held
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect();
    let replaced =
        xml.replacen("<ResourceName>vault-x</ResourceName>", &format!("<ResourceName>{as_xml}</ResourceName>"), 1);
    assert_ne!(replaced, xml, "the vault name is in the file");
    std::fs::write(file, replaced).unwrap();
    held
}

#[test]
fn a_credentials_file_name_and_the_names_inside_it_are_escaped() {
    compare_runs(|agent, hostile| {
        agent.plain_folders();
        let v = value(hostile);
        // A good file under a hostile name: accepted, its path shown by properties.
        let good = agent.path(&format!("c{v}.VaultCredentials"));
        crate::support::write_credentials(&good, "vault-x", Utc::now() - Duration::minutes(5), 48);
        let mut runs =
            vec![("load".to_string(), agent.cmd().args(["credentials", "load"]).arg(&good).output().unwrap())];
        assert_eq!(runs[0].1.status.code(), Some(0), "{}", text(&runs[0].1.stderr));
        // The wrong extension, and a file that is not there: refused.
        let wrong = agent.path(&format!("c{v}.xml"));
        std::fs::copy(&good, &wrong).unwrap();
        let refused = agent.cmd().args(["credentials", "load"]).arg(&wrong).output().unwrap();
        assert_refused(&refused, "credentials_invalid");
        runs.push(("wrong extension".into(), refused));
        let missing = agent.path(&format!("m{v}.VaultCredentials"));
        let refused = agent.cmd().args(["credentials", "load"]).arg(&missing).output().unwrap();
        assert_refused(&refused, "credentials_unreadable");
        runs.push(("missing".into(), refused));
        runs.push(("properties after load".into(), agent.run(&["properties"])));
        assert_eq!(agent.json(&["properties"])["credentials"]["file"].as_str(), good.to_str());
        // A vault name with line breaks, C1 and bidi controls, from inside the file.
        let named = agent.path("named.VaultCredentials");
        let vault_name = credentials_with_vault_name(&named, &format!("vault {v}"));
        let load = agent.cmd().args(["credentials", "load"]).arg(&named).output().unwrap();
        assert_eq!(load.status.code(), Some(0), "{}", text(&load.stderr));
        runs.push(("load named".into(), load));
        runs.push(("status".into(), agent.run(&["status"])));
        runs.push(("properties".into(), agent.run(&["properties"])));
        runs.push(("audit".into(), agent.run(&["audit"])));
        export_and_replay(agent, &mut runs);
        let properties = agent.json(&["properties"]);
        assert_eq!(properties["vault"]["name"].as_str(), Some(vault_name.as_str()), "{properties}");
        let audit = agent.json_lines(&["audit"]);
        assert!(audit[4]["summary"].as_str().unwrap().contains(&vault_name), "{:?}", audit[4]);
        runs
    });
}

// ---------------------------------------------------------------------------------------------
// The network's word: a stand-in for the vault service

/// Answers every request on 127.0.0.1 with `status` and the JSON `body`, marked as the vault
/// service marks its answers, until dropped.
struct FakeVault {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeVault {
    fn answering(status: u16, body: &Value) -> FakeVault {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let body = body.to_string();
        let thread = std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(connection) = connection {
                    let _ = answer(connection, status, &body);
                }
            }
        });
        FakeVault { addr, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request (its headers and body) and answers it, closing the connection.
fn answer(mut connection: TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(connection.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut request_body = vec![0; length];
    reader.read_exact(&mut request_body)?;
    write!(
        connection,
        "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\nx-regent-vault: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    connection.flush()
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Folders, credentials (for vault `vault-x`) and a passphrase: ready to register.
fn ready_to_register(agent: &Agent) {
    agent.plain_folders();
    let credentials = agent.path("v.VaultCredentials");
    crate::support::write_credentials(&credentials, "vault-x", Utc::now() - Duration::minutes(5), 48);
    let out = agent.cmd().args(["credentials", "load"]).arg(&credentials).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = agent
        .cmd()
        .args(["passphrase", "set", "--passphrase-stdin"])
        .write_stdin("a good long passphrase\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_vaults_refusal_message_is_recorded_exactly_and_shown_escaped() {
    compare_runs(|agent, hostile| {
        ready_to_register(agent);
        let message = format!("the vault says {}", value(hostile));
        let vault = FakeVault::answering(
            409,
            &json!({ "error": "credentials_invalid", "reason": "credentials_invalid", "message": message }),
        );
        let register = agent.run(&["register", "--endpoint", &vault.url()]);
        assert_refused(&register, "credentials_invalid");
        let mut runs = vec![("register".to_string(), register)];
        runs.push(("status".into(), agent.run(&["status"])));
        runs.push(("audit".into(), agent.run(&["audit"])));
        export_and_replay(agent, &mut runs);
        let json_register = agent.cmd().args(["--json", "register", "--endpoint", &vault.url()]).output().unwrap();
        let line: Value = serde_json::from_slice(&json_register.stdout).unwrap();
        assert!(line["message"].as_str().unwrap().contains(&message), "{line}");
        assert!(agent.json(&["status"])["last_failure"]["message"].as_str().unwrap().contains(&message));
        runs.push(("json register".into(), json_register));
        runs
    });
}

/// tracing-subscriber 0.3.23 escapes ESC, BEL, BS, FF, DEL and C1 in an event's message only:
/// not line breaks, CR or bidi controls, and nothing in the fields (`%detail`). The vault's
/// message reaches a field of the client's debug event when a failed call is retried.
#[test]
fn verbose_logging_cannot_carry_the_networks_control_characters() {
    let agent = Agent::new();
    ready_to_register(&agent);
    let vault = FakeVault::answering(503, &json!({ "error": "internal", "message": format!("down {HOSTILE}") }));
    let out = agent.run(&["-vv", "register", "--endpoint", &vault.url()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("retrying"), "the retry was logged: {stderr}");
    assert_clean("register -vv: stderr", &out.stderr);
    assert_clean("register -vv: stdout", &out.stdout);
    // Every logged event is one line: each line is an event (a time stamp and a level) or the
    // closing `regent: ...` line, never the rest of a value.
    for line in stderr.lines() {
        let level = line.split_whitespace().nth(1).unwrap_or("");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level) || line.starts_with("regent: vault_error: "),
            "a line that is not an event: {line:?}\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("regent: ")).count(), 1, "{stderr}");
    assert!(stderr.matches(SHOWN_ESCAPED).count() >= 2, "the message was logged and told, escaped: {stderr}");
    agent.assert_one_row_per_event();
}

#[test]
fn machine_and_vault_names_from_the_vaults_api_are_escaped() {
    compare_runs(|agent, hostile| {
        let v = value(hostile);
        let token = agent.path("admin.token");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&token).unwrap();
            file.write_all(b"an-admin-token").unwrap();
        }
        let at = "2026-01-01T00:00:00Z";
        let machines = json!({ "vault": "v", "machines": [
            {
                "machine_id": format!("m{v}"), "machine_name": format!("n{v}"), "registered_at": at, "thumbprint": "ab",
                "log_head": {
                    "machine_id": "m", "position": 3, "hash": format!("h{v}"), "anchored_at": at, "refusals": 1,
                    "last_refusal": { "error": format!("e{v}"), "position": 2, "hash": "00", "refused_at": at },
                },
            },
            { "machine_id": "m2", "machine_name": "n2", "registered_at": at, "thumbprint": "cd", "log_head": null },
        ]});
        let vault = FakeVault::answering(200, &machines);
        let admin = |args: &[&str], json: bool| {
            let mut cmd = agent.cmd();
            if json {
                cmd.arg("--json");
            }
            cmd.arg("vault").args(args).arg("--server").arg(vault.url()).arg("--token-file").arg(&token);
            cmd.output().unwrap()
        };
        let listed = admin(&["machines", "--vault", "v"], false);
        assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
        assert_eq!(
            text(&listed.stdout).lines().count(),
            3,
            "a header and one row per machine: {}",
            text(&listed.stdout)
        );
        let json_listed = admin(&["machines", "--vault", "v"], true);
        let parsed: Value = serde_json::from_slice(&json_listed.stdout).unwrap();
        assert_eq!(parsed[0]["machine_name"].as_str(), Some(format!("n{v}").as_str()));
        let created = FakeVault::answering(
            201,
            &json!({
                "name": format!("v{v}"), "subscription_id": format!("s{v}"), "resource_group": "rg", "location": "here",
                "resource_id": 1, "created_at": at, "newest_thumbprint": null, "machines": 0,
            }),
        );
        let create = {
            let mut cmd = agent.cmd();
            cmd.args(["vault", "create", "v", "--server"]).arg(created.url()).arg("--token-file").arg(&token);
            cmd.output().unwrap()
        };
        // Refused by the vault with a message of its own.
        let refusing = FakeVault::answering(409, &json!({ "error": "vault_exists", "message": format!("exists {v}") }));
        let refused = {
            let mut cmd = agent.cmd();
            cmd.args(["vault", "create", "v", "--server"]).arg(refusing.url()).arg("--token-file").arg(&token);
            cmd.output().unwrap()
        };
        assert_eq!(refused.status.code(), Some(1));
        // Something there to record an event, for the audit check.
        agent.plain_folders();
        vec![
            ("machines".to_string(), listed),
            ("json machines".into(), json_listed),
            ("create".into(), create),
            ("create refused".into(), refused),
        ]
    });
}

#[test]
fn a_usage_error_echoing_a_value_escapes_it() {
    compare_runs(|agent, hostile| {
        let port = format!("1{}", value(hostile));
        let out = agent.run(&["proxy", "set", "--host", "proxy", "--port", &port]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let unknown = agent.run(&["audit", &format!("--{}", value(hostile))]);
        assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
        let size =
            agent.run(&["folders", "--install-dir", "/i", "--scratch-dir", "/s", "--backup-size", value(hostile)]);
        assert_eq!(size.status.code(), Some(2), "{}", text(&size.stderr));
        // The help shows the environment's value of --data-dir.
        let help =
            agent.cmd().env("REGENT_DATA_DIR", value(hostile)).env_remove("NO_COLOR").arg("--help").output().unwrap();
        assert_eq!(help.status.code(), Some(0));
        agent.plain_folders();
        vec![("port".to_string(), out), ("unknown flag".into(), unknown), ("size".into(), size), ("help".into(), help)]
    });
}

/// Records of `from`'s log appended to a new store, as `user@host` says: a log exported by a
/// customer whose user and host names are hostile.
fn copy_log_as(from: &Agent, to: &Agent, user: &str, host: &str) {
    use regent_store::{Actor, BatchMeta, EventStore, ExpectedVersion, NewEvent, StoreOptions};
    let records: Vec<_> = {
        let store = EventStore::open(from.data_dir().join("store"), &StoreOptions::default()).unwrap();
        store.read_all(1).map(Result::unwrap).collect()
    };
    let store = EventStore::open(to.data_dir().join("store"), &StoreOptions::default()).unwrap();
    for record in records {
        let meta = BatchMeta {
            recorded_at: record.recorded_at,
            actor: Actor { user: user.into(), host: host.into() },
            correlation_id: record.correlation_id,
        };
        let event = NewEvent::new(record.kind.clone(), record.schema, &record.payload).unwrap();
        store.append(&record.stream, ExpectedVersion::Any, &meta, &[event]).unwrap();
    }
}

#[test]
fn hostile_user_and_host_names_in_a_log_are_escaped_by_audit_and_replay() {
    compare_runs(|agent, hostile| {
        let source = Agent::new();
        source.plain_folders();
        assert_eq!(source.run(&["proxy", "set", "--host", "bad host", "--port", "1"]).status.code(), Some(1));
        let v = value(hostile);
        copy_log_as(&source, agent, &format!("u{v}"), &format!("h{v}"));
        let mut runs = vec![("audit".to_string(), agent.run(&["audit"]))];
        runs.push(("status".into(), agent.run(&["status"])));
        export_and_replay(agent, &mut runs);
        let audit = agent.json_lines(&["audit"]);
        assert_eq!(audit[0]["actor"].as_str(), Some(format!("u{v}@h{v}").as_str()));
        runs
    });
}

/// The interactive wizard, on a pseudo-terminal: what the log holds is shown escaped on the resume
/// screen and as a prompt's default, and Enter on that default gives the exact value, not its
/// escaped form. (The transcript holds inquire's own ESC sequences, so the hostile value's are
/// looked for by what they are.)
#[test]
fn the_wizard_shows_recorded_values_escaped_and_offers_them_exactly() {
    use crate::wizard_pty::{ENTER, ESC, Pty};
    let agent = Agent::new();
    let (install, scratch) = (agent.path(&format!("i{HOSTILE}")), agent.path(&format!("s{HOSTILE}")));
    assert_eq!(agent.folders_at(&install, &scratch).status.code(), Some(0));
    std::fs::create_dir_all(agent.path("home")).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_regent"));
    command
        .env_remove("REGENT_DATA_DIR")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("HOME", agent.path("home"))
        .arg("--data-dir")
        .arg(agent.data_dir())
        .arg("wizard");
    let mut pty = Pty::spawn(command);
    pty.expect("Resuming: these steps are done already.");
    pty.expect("forged row\\u{d}\\u{1b}[2J\\u{1b}]0;title\\u{7}\\u{9b}31m\\u{7f}\\u{9}\\u{202e}dlrow");
    pty.answer("Keep these and continue at step 2", "n");
    pty.expect("Install folder:");
    // The default, escaped, ends the prompt's line.
    pty.expect("\\u{202e}dlrow\\u{2066}z\\u{2069}\\u{200f})");
    pty.send(ENTER);
    pty.answer("Scratch folder:", "");
    pty.answer("Backup data size:", "");
    pty.expect("Folders chosen: install ");
    pty.expect("How does this server reach the vault?");
    pty.send(ESC);
    let (code, bytes) = pty.finish();
    assert_eq!(code, 130, "stopped at a prompt: {}", text(&bytes));
    let transcript = text(&bytes);
    for raw in ["\x1b[2J", "\x1b]0;", "\x07", "\u{9b}", "\x7f", "\u{202e}", "\u{2066}", "\u{2069}", "\u{200f}"] {
        assert!(!transcript.contains(raw), "{raw:?} reached the terminal raw:\n{transcript:?}");
    }
    let forged = "    9  2026-01-01 00:00:00";
    assert!(transcript.matches(forged).count() >= 3, "shown on the resume screen, as a default, once chosen");
    assert_eq!(
        transcript.matches(forged).count(),
        transcript.matches(&format!("\\u{{a}}{forged}")).count(),
        "every line break in the value is escaped:\n{transcript:?}"
    );
    // Enter took the recorded paths themselves.
    let properties = agent.json(&["properties"]);
    assert_eq!(properties["folders"]["install_dir"].as_str(), install.to_str(), "{properties}");
    assert_eq!(properties["folders"]["scratch_dir"].as_str(), scratch.to_str(), "{properties}");
    let audit = agent.json_lines(&["audit"]);
    assert_eq!(audit.len(), 2, "chosen again: {audit:?}");
    assert!(audit[1]["summary"].as_str().unwrap().contains(install.to_str().unwrap()), "{:?}", audit[1]);
    agent.assert_one_row_per_event();
}
