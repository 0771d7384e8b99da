//! `regent wizard --unattended` run again on a registered machine: each flag given, compared with
//! the machine's state, and each difference said with what changes it. A comparison records
//! nothing: it is not a step.
//!
//! What can be compared is: the folders and the backup size (as recorded), the proxy's host, port
//! and user, the proxy password (against the sealed one, opened here as `register` opens it), the
//! credentials file (by its certificate's thumbprint, against the registration's and the loaded
//! credentials'), the passphrase (a `--passphrase-file`'s against the sealed Argon2id verifier; a
//! `--generate-passphrase-to` file by its place, or by its content when it holds the passphrase)
//! and `--endpoint` (against the registration's). A flag not given is not compared: without
//! `--proxy-host` the proxy is left as it is, as a first run leaves it. `--ca-file` is not
//! state and is not compared.

use std::path::{Path, PathBuf};

use super::size_text;
use regent_engine::State;
use regent_engine::model::{PassphraseOrigin, Registration};
use regent_engine::ports::FileReader;
use regent_engine::service::{MAX_CREDENTIALS_BYTES, SecretInput, read_credential_facts};
use regent_secrets::{PassphraseVerifier, SecretKind, SecretRef, SecretsArea};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::world::LocalFiles;

/// What the flags ask for.
pub(super) struct Given<'a> {
    pub install_dir: &'a Path,
    pub scratch_dir: &'a Path,
    pub backup_size_bytes: u64,
    /// Host, port and user.
    pub proxy: Option<(&'a str, u32, Option<&'a str>)>,
    /// The password and the flag it came with.
    pub proxy_password: Option<(&'a SecretInput, &'static str)>,
    pub credentials: &'a Path,
    pub generate_passphrase_to: Option<&'a Path>,
    pub passphrase: Option<&'a SecretInput>,
    pub endpoint: Option<&'a str>,
}

/// One flag that disagrees with the state: what was given, what the machine has, and what to run
/// to change it (or why it cannot simply be changed).
#[derive(Debug, Serialize)]
pub(super) struct Difference {
    pub flag: &'static str,
    pub given: String,
    pub current: String,
    pub change: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} given, but this machine has {}; {}", self.flag, self.given, self.current, self.change)
    }
}

/// Every flag of `given` that differs from the state of this registered machine. `area` holds the
/// sealed values (or why it cannot be opened).
pub(super) fn differences(
    state: &State,
    registration: &Registration,
    given: &Given<'_>,
    area: Result<&SecretsArea, &str>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |flag, given: String, current: String, change: String| {
        out.push(Difference { flag, given, current, change });
    };
    const AGAIN: &str = "it is chosen with the folders step, which is refused once registered: \
         `regent unregister`, then the wizard again (the machine registers anew)";
    match &state.folders {
        Some(f) => {
            if given.install_dir != f.install_dir {
                differ("--install-dir", shown(given.install_dir), shown(&f.install_dir), AGAIN.into());
            }
            if given.scratch_dir != f.scratch_dir {
                differ(
                    "--scratch-dir",
                    shown(given.scratch_dir),
                    shown(&f.scratch_dir),
                    format!("to move it: `regent properties scratch-dir {}`", quoted(&shown(given.scratch_dir))),
                );
            }
            if given.backup_size_bytes != f.backup_size_bytes {
                differ(
                    "--backup-size",
                    size_text(given.backup_size_bytes),
                    size_text(f.backup_size_bytes),
                    AGAIN.into(),
                );
            }
        }
        None => differ("--install-dir", shown(given.install_dir), "no folders recorded".into(), AGAIN.into()),
    }
    if let Some((host, port, user)) = given.proxy {
        let set = proxy_set_command(host, port, user);
        match &state.proxy {
            None => differ("--proxy-host", proxy_shown(host, port, user), "no proxy (a direct connection)".into(), set),
            Some(p) if p.host != host || u32::from(p.port) != port => differ(
                "--proxy-host",
                proxy_shown(host, port, user),
                format!("proxy {}", proxy_shown(&p.host, u32::from(p.port), p.username.as_deref())),
                set,
            ),
            Some(p) if p.username.as_deref() != user => differ(
                "--proxy-user",
                user.map_or_else(|| "no proxy user".into(), |u| format!("user {u}")),
                p.username.as_ref().map_or_else(|| "no proxy user".into(), |u| format!("user {u}")),
                set,
            ),
            Some(p) => {
                if let (Some(sealed), Some((input, flag))) = (&p.password, given.proxy_password) {
                    let kept = area.map_err(str::to_string).and_then(|area| {
                        area.open(SecretKind::ProxyPassword, &SecretRef { id: sealed.id.clone() })
                            .map_err(|e| e.to_string())
                    });
                    match (input, kept) {
                        (SecretInput::Unusable(why), _) => differ(
                            flag,
                            format!("a password that cannot be used ({why})"),
                            "a proxy password set".into(),
                            set,
                        ),
                        (_, Err(why)) => differ(
                            flag,
                            "a proxy password".into(),
                            format!("a sealed proxy password that cannot be opened here ({why})"),
                            set,
                        ),
                        (SecretInput::Given(password), Ok(kept)) => {
                            if !same_bytes(password.expose_secret().as_bytes(), &kept) {
                                differ(
                                    flag,
                                    "a proxy password".into(),
                                    "another one (compared with the password kept sealed)".into(),
                                    set,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    credentials(state, registration, given.credentials, &mut differ);
    if let Some(encryption) = &state.encryption {
        let origin = match &encryption.origin {
            PassphraseOrigin::Generated { saved_to } => format!("a passphrase generated to {}", saved_to.display()),
            PassphraseOrigin::Provided => "a passphrase typed or given from a file".into(),
        };
        let verifier = verifier(encryption.verifier.as_deref(), encryption.verifier_sealed.as_ref(), area);
        const PIN: &str = "(with a security PIN from `regent vault pin`)";
        if let Some(path) = given.generate_passphrase_to {
            let placed = matches!(&encryption.origin, PassphraseOrigin::Generated { saved_to }
                if *saved_to == resolved(path) || saved_to == path);
            let holds_it = || {
                let Ok(verifier) = &verifier else { return false };
                crate::secret_input::from_file("passphrase", path)
                    .is_ok_and(|input| matches!(input, SecretInput::Given(p) if verifier.verify(&p)))
            };
            if !placed && !holds_it() {
                differ(
                    "--generate-passphrase-to",
                    format!("a passphrase generated to {}", path.display()),
                    origin.clone(),
                    format!(
                        "a passphrase is made once; to make a new one: `regent properties passphrase change --generate --save-to {}` {PIN}",
                        quoted(&shown(path))
                    ),
                );
            }
        }
        if let Some(input) = given.passphrase {
            let change = format!("to change it: `regent properties passphrase change --passphrase-file F` {PIN}");
            match (input, &verifier) {
                (SecretInput::Unusable(why), _) => {
                    differ("--passphrase-file", format!("a passphrase that cannot be used ({why})"), origin, change)
                }
                (SecretInput::Given(passphrase), Ok(verifier)) => {
                    if !verifier.verify(passphrase) {
                        differ(
                            "--passphrase-file",
                            "another passphrase".into(),
                            format!("{origin} (checked against its verifier)"),
                            change,
                        );
                    }
                }
                (SecretInput::Given(_), Err(why)) => differ(
                    "--passphrase-file",
                    "a passphrase".into(),
                    format!("{origin}, whose verifier cannot be read here ({why})"),
                    change,
                ),
            }
        }
    }
    if let Some(endpoint) = given.endpoint
        && endpoint != registration.endpoint
    {
        differ(
            "--endpoint",
            endpoint.to_string(),
            format!("the registration's address {}", registration.endpoint),
            "a registration keeps its address; a vault that moved is reached with `--endpoint URL` on `regent audit anchor` and `regent audit verify --against-vault`".into(),
        );
    }
    out
}

/// The credentials file, by its certificate's thumbprint: the registration's, or the credentials
/// loaded since, match.
fn credentials(
    state: &State,
    registration: &Registration,
    path: &Path,
    differ: &mut impl FnMut(&'static str, String, String, String),
) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let facts = LocalFiles
        .read(path, MAX_CREDENTIALS_BYTES)
        .map_err(|(_, detail)| detail)
        .and_then(|bytes| read_credential_facts(&name, &bytes));
    let registered =
        format!("a registration to vault {} with credentials {}", registration.vault, short(&registration.thumbprint));
    let facts = match facts {
        Ok(facts) => facts,
        Err(why) => {
            return differ(
                "--credentials",
                format!("{}, which cannot be read as vault credentials ({why})", path.display()),
                registered,
                "give the file this machine registered with, or new credentials of its vault".into(),
            );
        }
    };
    if facts.vault.name != registration.vault {
        return differ(
            "--credentials",
            format!("credentials of vault {} ({})", facts.vault.name, short(&facts.thumbprint)),
            registered,
            format!(
                "to move this machine to vault {}: `regent unregister`, then register with the new credentials (the wizard again)",
                facts.vault.name
            ),
        );
    }
    let loaded = state.credentials.as_ref().map(|c| c.facts.thumbprint.as_str());
    if facts.thumbprint != registration.thumbprint && Some(facts.thumbprint.as_str()) != loaded {
        differ(
            "--credentials",
            format!("another download of vault {}'s credentials ({})", facts.vault.name, short(&facts.thumbprint)),
            registered,
            format!(
                "to make it the credentials loaded (the registration stays): `regent credentials load {}`",
                quoted(&shown(path))
            ),
        );
    }
}

/// The passphrase's verifier: sealed beside the log (schema 3 on), or recorded (older logs).
fn verifier(
    recorded: Option<&str>,
    sealed: Option<&regent_engine::model::SealedRef>,
    area: Result<&SecretsArea, &str>,
) -> Result<PassphraseVerifier, String> {
    let phc = match (sealed, recorded) {
        (Some(sealed), _) => {
            let bytes = area
                .map_err(str::to_string)?
                .open(SecretKind::PassphraseVerifier, &SecretRef { id: sealed.id.clone() })
                .map_err(|e| e.to_string())?;
            String::from_utf8(bytes.to_vec()).map_err(|_| "the sealed verifier is not text".to_string())?
        }
        (None, Some(phc)) => phc.to_string(),
        (None, None) => return Err("none was recorded".into()),
    };
    PassphraseVerifier::from_phc(&phc).map_err(|e| e.to_string())
}

/// Equal bytes, compared in time that depends on the lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The path with its folder resolved, as a generated passphrase's place is recorded.
fn resolved(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (path.parent().and_then(|p| std::fs::canonicalize(p).ok()), path.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => path,
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The beginning of a thumbprint, enough to tell two downloads apart.
fn short(thumbprint: &str) -> String {
    let head: String = thumbprint.chars().take(16).collect();
    format!("thumbprint {head}…")
}

fn proxy_shown(host: &str, port: u32, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("{host}:{port}, user {user}"),
        None => format!("{host}:{port}"),
    }
}

fn proxy_set_command(host: &str, port: u32, user: Option<&str>) -> String {
    let login = user.map(|u| format!(" --username {} --password-stdin", quoted(u))).unwrap_or_default();
    format!("to change it: `regent properties proxy set --host {} --port {port}{login}`", quoted(host))
}

/// A word as a POSIX shell reads it back: as it is when it is plain, else in single quotes.
fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-' | ':' | '@' | '%' | '+' | '=' | ',')
        });
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_quoted_only_when_a_shell_would_split_or_expand_it() {
        assert_eq!(quoted("/var/cache/regent"), "/var/cache/regent");
        assert_eq!(quoted("/srv/my cache"), "'/srv/my cache'");
        assert_eq!(quoted("it's"), "'it'\\''s'");
        assert_eq!(quoted("$HOME"), "'$HOME'");
        assert_eq!(quoted(""), "''");
    }

    #[test]
    fn equal_bytes_are_same_and_any_other_are_not() {
        assert!(same_bytes(b"secret", b"secret"));
        assert!(!same_bytes(b"secret", b"secreT"));
        assert!(!same_bytes(b"secret", b"secret2"));
    }
}
