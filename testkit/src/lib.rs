//! Test helpers shared by more than one crate's tests (the vault's proxy tests and the binary's
//! end-to-end tests): real components, started for a test and stopped when dropped (or, for the
//! test binary's shared PostgreSQL, when the test process ends: [`postgres`]). Panics are how a
//! test helper fails, so this crate unwraps freely; nothing here ships in `regent`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod postgres;

/// A free TCP port on 127.0.0.1, for a server that must be told its port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real tinyproxy (Debian's package) on 127.0.0.1 with `BasicAuth`, logging to a temp dir. It
/// must be installed: a test that needs it fails and says so, it is never skipped.
pub struct Tinyproxy {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: TempDir,
}

fn tinyproxy_binary() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/bin/tinyproxy"), PathBuf::from("/usr/sbin/tinyproxy")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("tinyproxy")));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "tinyproxy is not installed, and the proxy tests need a real one: install it with \
             `apt-get install -y tinyproxy` (CI installs it in .ci/run)"
        )
    })
}

impl Tinyproxy {
    pub fn start(user: &str, password: &str) -> Tinyproxy {
        let binary = tinyproxy_binary();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tinyproxy.log");
        // tinyproxy needs a fixed port: take a free one; if another process grabs it in between,
        // tinyproxy exits and we try another.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("tinyproxy.conf");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nLogFile \"{}\"\nLogLevel Info\nBasicAuth {user} {password}\n",
                    log.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&binary)
                .arg("-d")
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tinyproxy { child, port, log, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start; its log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// What tinyproxy logged so far (each request it relayed, each it refused).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
