//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Duration, Utc};
use regent_vault::{BackgroundServer, ServeConfig};

/// A temp dir with a real vault service on 127.0.0.1 (port 0); agents keep their data dirs in it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub server: BackgroundServer,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server =
            BackgroundServer::start(ServeConfig::new(dir.path().join("vault"), "127.0.0.1:0".parse().unwrap()))
                .unwrap();
        Setup { dir, server }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `regent --data-dir <dir>/<agent>`, as a std command (for a pseudo-terminal).
    pub fn regent_std(&self, agent: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regent"));
        cmd.env_remove("REGENT_DATA_DIR")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .arg("--data-dir")
            .arg(self.path(agent));
        cmd
    }

    pub fn regent(&self, agent: &str) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.regent_std(agent))
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        let token = self.server.admin_token_path().to_path_buf();
        let mut cmd = self.regent("admin");
        cmd.args(["vault"]).args(args).arg("--server").arg(self.server.url()).arg("--token-file").arg(token);
        cmd.output().unwrap()
    }

    /// Downloads credentials for `vault` to `<dir>/<file>`.
    pub fn download(&self, vault: &str, file: &str) -> PathBuf {
        let output = self.path(file);
        let out = self.admin(&["credentials", "--vault", vault, "--output", output.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        output
    }

    /// `regent --json <args>` for `agent`, parsed.
    pub fn json(&self, agent: &str, args: &[&str]) -> serde_json::Value {
        let out = self.regent(agent).arg("--json").args(args).output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// Every form a secret could take in bytes.
pub fn leaks(haystack: &[u8], secret: &str) -> bool {
    use base64::Engine as _;
    let forms = [
        secret.as_bytes().to_vec(),
        hex::encode(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(secret).into_bytes(),
    ];
    forms.iter().any(|form| haystack.windows(form.len()).any(|w| w == form.as_slice()))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// Writes a credentials file for `vault`, issued as the vault service issues them, valid from
/// `from` for `hours`.
pub fn write_credentials(path: &Path, vault: &str, from: DateTime<Utc>, hours: i64) {
    let issued = regent_credentials::issue(&regent_credentials::IssueRequest {
        identity: regent_credentials::VaultIdentity {
            resource_name: vault.into(),
            subscription_id: "00000000-0000-0000-0000-000000000042".into(),
            resource_group: "rg-backup".into(),
            location: "westeurope".into(),
            resource_id: 4242,
            resource_type: "Vaults".into(),
            provider_namespace: "Microsoft.RecoveryServices".into(),
        },
        aad_authority: String::new(),
        aad_tenant_id: String::new(),
        service_principal_client_id: String::new(),
        endpoint: "http://127.0.0.1:9".into(),
        agent_links: vec![],
        not_before: from,
        not_after: from + Duration::hours(hours),
    })
    .unwrap();
    std::fs::write(path, issued.xml.as_bytes()).unwrap();
}
