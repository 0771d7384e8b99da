//! `regent vault serve` as a service manager runs it: in the foreground, its options from
//! `REGENT_VAULT_*` variables (the Debian package's unit reads them from /etc/default/regent-vault),
//! stopped by SIGTERM. The tests never bind the default port (127.0.0.1:8443).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use crate::support::Setup;

pub(crate) const VARIABLES: [&str; 6] = [
    "REGENT_VAULT_LISTEN",
    "REGENT_VAULT_TLS_CERT",
    "REGENT_VAULT_TLS_KEY",
    "REGENT_VAULT_PUBLIC_URL",
    "REGENT_VAULT_LOG_FORMAT",
    "REGENT_VAULT_DATABASE_URL",
];

/// `regent vault serve` in a child process, with no `REGENT_VAULT_*` from the caller's environment.
fn serve(setup: &Setup, env: &[(&str, &str)], args: &[&str]) -> std::process::Command {
    let mut cmd = setup.regent_std("own-vault");
    for var in VARIABLES {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).args(["--json", "vault", "serve"]).args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Starts the service and returns it with the URL it printed.
pub(crate) fn started(mut cmd: std::process::Command) -> (Child, String) {
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Drained to the end: a closed pipe would kill the service at its next line (SIGPIPE).
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(ready) => (child, ready["url"].as_str().unwrap().to_string()),
        Err(e) => {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("the service did not start ({e}): {line:?} {}", String::from_utf8_lossy(&output.stderr))
        }
    }
}

fn sigterm(child: &Child) {
    // SAFETY: a signal to our own child, whose pid is still ours (not yet waited for).
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
}

/// Stops the service with SIGTERM; it exits 0. Returns what it wrote.
pub(crate) fn stop(child: Child) -> std::process::Output {
    sigterm(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stopped by SIGTERM: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn admin(setup: &Setup, url: &str, token: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = setup.regent("admin");
    cmd.arg("vault").args(args).arg("--server").arg(url).arg("--token-file").arg(token);
    cmd.output().unwrap()
}

#[test]
fn vault_serve_takes_its_address_and_public_url_from_the_environment() {
    let setup = Setup::new();
    let env = [("REGENT_VAULT_LISTEN", "127.0.0.1:0"), ("REGENT_VAULT_PUBLIC_URL", "https://vault.example.test:9443")];
    let (child, url) = started(serve(&setup, &env, &[]));
    let port: u16 = url.strip_prefix("http://127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        panic!("not an address on 127.0.0.1: {url}");
    });
    assert!(port != 0 && port != 8443, "REGENT_VAULT_LISTEN=127.0.0.1:0 picks a free port, got {url}");

    // The public URL from the environment is the endpoint a download names.
    let token = setup.path("own-vault").join("admin.token");
    let created = admin(&setup, &url, &token, &["create", "prod"]);
    assert_eq!(created.status.code(), Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    let file = setup.path("prod.VaultCredentials");
    let downloaded =
        admin(&setup, &url, &token, &["credentials", "--vault", "prod", "--output", file.to_str().unwrap()]);
    assert_eq!(downloaded.status.code(), Some(0), "{}", String::from_utf8_lossy(&downloaded.stderr));
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(xml.contains("https://vault.example.test:9443"), "the download names the public URL: {xml}");
    stop(child);
}

#[test]
fn an_option_on_the_command_line_wins_over_its_variable() {
    let setup = Setup::new();
    let env = [("REGENT_VAULT_LISTEN", "not an address")];
    let (child, url) = started(serve(&setup, &env, &["--listen", "127.0.0.1:0"]));
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":8443"), "{url}");
    stop(child);

    // Alone, the variable is used, and refused as the option would be.
    let refused = serve(&setup, &env, &[]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("REGENT_VAULT_LISTEN") && stderr.contains("not an address"), "{stderr}");
}

#[test]
fn a_tls_certificate_from_the_environment_still_needs_its_key() {
    let setup = Setup::new();
    let env = [("REGENT_VAULT_LISTEN", "127.0.0.1:0"), ("REGENT_VAULT_TLS_CERT", "/nonexistent/cert.pem")];
    let refused = serve(&setup, &env, &[]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--tls-key"));
}

#[test]
fn the_help_names_the_fixed_default_address_and_each_variable() {
    let setup = Setup::new();
    let out = setup.regent("vault").args(["vault", "serve", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:8443]"), "{help}");
    assert!(help.contains("foreground"), "{help}");
    for var in VARIABLES {
        assert!(help.contains(&format!("[env: {var}]")), "{var} in {help}");
    }
}

#[test]
fn man_dir_writes_a_page_per_command_and_the_service_s_names_its_variables() {
    let setup = Setup::new();
    let dir = setup.path("man");
    std::fs::create_dir(&dir).unwrap();
    let out = setup.regent("agent").arg("man").arg("--dir").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["regent.1", "regent-vault.1", "regent-vault-serve.1", "regent-wizard.1", "regent-audit-verify.1"] {
        assert!(dir.join(page).is_file(), "{page} written");
    }
    let serve = std::fs::read_to_string(dir.join("regent-vault-serve.1")).unwrap();
    assert!(serve.contains("REGENT_VAULT_LISTEN") && serve.contains("127.0.0.1:8443"), "{serve}");
    assert!(serve.contains("REGENT_VAULT_DATABASE_URL"), "{serve}");

    let missing = setup.regent("agent").arg("man").arg("--dir").arg(setup.path("nowhere")).output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", String::from_utf8_lossy(&missing.stderr));
}

#[test]
fn admin_commands_find_the_token_in_the_services_data_dir_without_token_file() {
    let setup = Setup::new();
    let (child, url) = started(serve(&setup, &[], &["--listen", "127.0.0.1:0"]));
    let service_dir = setup.path("own-vault");
    // The data dir the service was given is where the admin command looks for admin.token.
    let mut create = setup.regent_std("own-vault");
    let out = create.args(["vault", "create", "prod", "--server", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(service_dir.join("admin.token").is_file());
    // Elsewhere, the one line says where it looked and which flag names the token.
    let out =
        setup.regent("elsewhere").args(["vault", "machines", "--vault", "prod", "--server", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&setup.path("elsewhere").join("admin.token").display().to_string())
            && stderr.contains("--token-file"),
        "{stderr}"
    );
    stop(child);
}

/// Every line of the service's stderr, each a JSON object with tracing-subscriber's standard
/// fields: `timestamp` (RFC 3339), `level`, `target`, `fields.message`. Returns the messages.
fn json_log_messages(stderr: &[u8]) -> Vec<String> {
    let stderr = std::str::from_utf8(stderr).expect("the log is UTF-8");
    assert!(stderr.ends_with('\n'), "whole lines: {stderr:?}");
    let mut messages = Vec::new();
    for line in stderr.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line:?}"));
        let object = event.as_object().unwrap_or_else(|| panic!("not a JSON object: {line}"));
        let timestamp = object["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
        chrono::DateTime::parse_from_rfc3339(timestamp).unwrap_or_else(|e| panic!("{e}: {timestamp}"));
        let level = object["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level), "{line}");
        assert!(object["target"].as_str().is_some_and(|t| !t.is_empty()), "no target: {line}");
        messages.push(object["fields"]["message"].as_str().unwrap_or_else(|| panic!("no message: {line}")).to_string());
    }
    messages
}

#[test]
fn log_format_json_writes_every_line_as_a_json_object_and_the_variable_chooses_it_too() {
    let setup = Setup::new();
    let (child, url) = started(serve(&setup, &[], &["--listen", "127.0.0.1:0", "--log-format", "json", "-v"]));
    let token = setup.path("own-vault").join("admin.token");
    // A change is logged at info, with its fields; a vault name with a line break cannot be made,
    // so the fields are the service's own.
    let created = admin(&setup, &url, &token, &["create", "logged"]);
    assert_eq!(created.status.code(), Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    let output = stop(child);
    let messages = json_log_messages(&output.stderr);
    for said in ["vault service listening", "stopping on signal", "vault service stopped"] {
        assert!(messages.iter().any(|m| m == said), "{said:?} in {messages:?}");
    }

    let env = [("REGENT_VAULT_LISTEN", "127.0.0.1:0"), ("REGENT_VAULT_LOG_FORMAT", "json")];
    let (child, _) = started(serve(&setup, &env, &["-v"]));
    let output = stop(child);
    assert!(json_log_messages(&output.stderr).len() >= 3);

    // Text by default: the same events as lines for a person.
    let (child, _) = started(serve(&setup, &[], &["--listen", "127.0.0.1:0", "-v"]));
    let output = stop(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("vault service listening"), "{stderr}");
    assert!(stderr.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_err()), "{stderr}");

    let refused = serve(&setup, &[], &["--listen", "127.0.0.1:0", "--log-format", "xml"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
}

/// What a raw HTTP/1.1 exchange came to.
#[derive(Debug, PartialEq, Eq)]
enum Exchange {
    /// A status line, headers and as many body bytes as `Content-Length` says.
    Answered(u16),
    /// The connection was refused: the service had stopped listening.
    Refused,
    /// Reset before a single byte of answer: the connection was still in the kernel's queue of the
    /// listening socket when the service closed it, so the request never reached the service (a
    /// client retries it as a connection that failed).
    Reset,
    /// Closed (FIN) before a single byte of answer, by a service that had taken the connection.
    ClosedUnanswered,
    /// Some of an answer, then the end: what a drained shutdown must never do.
    CutShort(String),
}

fn exchange(stream: &mut std::net::TcpStream) -> Exchange {
    use std::io::Read;
    let mut answer = Vec::new();
    let ended = stream.read_to_end(&mut answer);
    if answer.is_empty() {
        return match ended {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Exchange::Reset,
            _ => Exchange::ClosedUnanswered,
        };
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return Exchange::CutShort(text) };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()));
    match (status, length, ended) {
        (Some(status), Some(Ok(length)), Ok(_)) if body.len() == length => Exchange::Answered(status),
        _ => Exchange::CutShort(text),
    }
}

fn request(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> Exchange {
    use std::io::Write;
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Exchange::Refused,
        // The handshake answered by the kernel, then the listening socket closed under it.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Exchange::Reset,
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    // A write into a connection the kernel reset is a request that never reached the service.
    if stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).is_err() {
        return Exchange::Reset;
    }
    exchange(&mut stream)
}

/// The value of an unlabelled sample in a `/metrics` scrape.
fn gauge(addr: &str, name: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn sigterm_answers_every_request_in_flight_and_exits_0() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let setup = Setup::new();
    let (child, url) = started(serve(&setup, &[], &["--listen", "127.0.0.1:0"]));
    let addr = url.strip_prefix("http://").unwrap().to_string();
    let token_file = setup.path("own-vault").join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();

    // A slow request: an admin change whose headers are sent and whose body is not, so the
    // service is inside its handler, reading the body, when the signal comes.
    let body = br#"{"name":"drained"}"#;
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        slow,
        "POST /v1/vaults HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(&body[..5]).unwrap();
    // In flight: the scrape and the slow request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&addr, "regent_vault_http_requests_in_flight") < 2.0 {
        assert!(Instant::now() < deadline, "the slow request never reached its handler");
        std::thread::sleep(Duration::from_millis(10));
    }

    // And a crowd of quick ones, each on its own connection, going on across the signal until the
    // service stops listening.
    let stop_at = Instant::now() + Duration::from_secs(15);
    let crowd: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let path = if i % 2 == 0 { "/v1/health" } else { "/readyz" };
                    let got = request(&addr, "GET", path, "", b"");
                    let refused = got == Exchange::Refused;
                    seen.push(got);
                    if refused || Instant::now() > stop_at {
                        return seen;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    // The service has stopped listening (new connections refused) while the slow request is open.
    let deadline = Instant::now() + Duration::from_secs(4);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    slow.write_all(&body[5..]).unwrap();
    assert_eq!(exchange(&mut slow), Exchange::Answered(201), "the request in flight at the signal was answered");

    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let mut answered = 0;
    for thread in crowd {
        for got in thread.join().unwrap() {
            match got {
                Exchange::Answered(200) => answered += 1,
                Exchange::Refused | Exchange::Reset => {}
                // A connection the service took is answered, even one taken a moment before the
                // signal whose request it had not read yet.
                other => panic!("a request unanswered, answered in part, or wrongly: {other:?}"),
            }
        }
    }
    assert!(answered > 0, "the crowd was answered before the signal");

    // What the slow request changed is in the log the next start reads.
    let (child, url) = started(serve(&setup, &[], &["--listen", "127.0.0.1:0"]));
    let admin = regent_vault::AdminClient::from_token_file(&url, &token_file, None).unwrap();
    assert_eq!(admin.vault("drained").unwrap().name, "drained");
    stop(child);
}
