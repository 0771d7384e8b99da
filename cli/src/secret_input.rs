//! Reading secrets the ways docs/cli.md allows: stdin, a file, a named environment variable, or a
//! masked prompt when stdin is a terminal. Never from the command line.

use std::io::{IsTerminal, Read};
use std::path::Path;

use regent_engine::service::SecretInput;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::failure::Failure;

/// The most a secret read from stdin, a file or the environment may be: real ones are a few
/// dozen bytes; anything larger is a mistake (the wrong file, a pipe left open) and is refused.
pub const MAX_SECRET_BYTES: usize = 1024;

/// What was read, as one secret: exactly one line (a trailing line break allowed) of at most
/// [`MAX_SECRET_BYTES`] of UTF-8 text without control characters. `None`: nothing was given.
/// Anything else is `Unusable`, with why and never any of its bytes, so the step records a
/// refusal.
fn one_line(bytes: &[u8]) -> Option<SecretInput> {
    if bytes.len() > MAX_SECRET_BYTES {
        return Some(SecretInput::Unusable(format!("it is more than {MAX_SECRET_BYTES} bytes")));
    }
    let line = bytes.strip_suffix(b"\n").map_or(bytes, |b| b.strip_suffix(b"\r").unwrap_or(b));
    if line.is_empty() {
        return None;
    }
    if line.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Some(SecretInput::Unusable("it is more than one line".into()));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(SecretInput::Unusable("it is not UTF-8 text".into()));
    };
    if text.chars().any(char::is_control) {
        return Some(SecretInput::Unusable("it holds a control character".into()));
    }
    Some(SecretInput::Given(SecretString::from(text.to_string())))
}

/// Reads at most `MAX_SECRET_BYTES + 1` bytes: enough to tell a secret from too much, without
/// ever holding more.
fn read_bounded(reader: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    reader.take(MAX_SECRET_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Standard input as one secret (see [`one_line`]).
pub fn from_stdin(what: &str) -> Result<SecretInput, Failure> {
    let bytes = read_bounded(std::io::stdin().lock())
        .map_err(|e| Failure::usage(format!("cannot read the {what} from standard input: {e}")))?;
    one_line(&bytes).ok_or_else(|| {
        Failure::usage(format!("standard input held no {what}; pipe it in, e.g. `printf %s \"$X\" | regent ...`"))
            .because("secret_missing")
    })
}

pub fn from_env(what: &str, variable: &str) -> Result<SecretInput, Failure> {
    let missing = |why: &str| {
        Failure::usage(format!("the environment variable {variable} holding the {what} is {why}"))
            .because("secret_missing")
    };
    match std::env::var_os(variable) {
        Some(value) => {
            use std::os::unix::ffi::OsStrExt;
            one_line(value.as_bytes()).ok_or_else(|| missing("empty"))
        }
        None => Err(missing("not set")),
    }
}

/// A file holding one secret (see [`one_line`]). Only a regular file is read: a FIFO or a device
/// could block forever.
pub fn from_file(what: &str, path: &Path) -> Result<SecretInput, Failure> {
    let cannot = |why: String| Failure::usage(format!("cannot read the {what} from {}: {why}", path.display()));
    let file = crate::world::open_regular(path).map_err(|e| match e {
        crate::world::Opened::Io(e) => cannot(e.to_string()),
        crate::world::Opened::Directory => cannot("it is a directory".into()),
        crate::world::Opened::Special(kind) => cannot(format!("it is {kind}, not a regular file")),
    })?;
    let bytes = read_bounded(file).map_err(|e| cannot(e.to_string()))?;
    one_line(&bytes)
        .ok_or_else(|| Failure::usage(format!("{} holds no {what}", path.display())).because("secret_missing"))
}

/// A masked prompt, asked twice when `confirm` is set. Only when stdin is a terminal.
pub fn prompt(what: &str, confirm: bool, flags: &str) -> Result<SecretInput, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("the {what} is needed: give it with {flags}")));
    }
    let label = format!("{}:", capitalize(what));
    let confirmation = confirm.then_some("Type it again:");
    masked(&label, confirmation, None).map(SecretInput::Given).map_err(|e| match e {
        // Esc or Ctrl-C: the operator stopped, as at the wizard's prompts.
        inquire::InquireError::OperationCanceled | inquire::InquireError::OperationInterrupted => {
            Failure::stopped(format!("stopped at the {what} prompt; nothing was recorded"))
        }
        other => Failure::usage(format!("no {what} was entered ({other})")),
    })
}

/// A masked prompt (one `*` per character typed, the text never shown), asked a second time
/// with `confirmation` as its label when given; an empty answer is asked again. The answer goes
/// straight into a `SecretString`.
pub fn masked(
    label: &str,
    confirmation: Option<&str>,
    help: Option<&str>,
) -> Result<SecretString, inquire::InquireError> {
    let mut prompt = inquire::Password::new(label)
        .with_display_mode(inquire::PasswordDisplayMode::Masked)
        .with_validator(inquire::required!("type it (Esc stops)"));
    prompt = match confirmation {
        Some(again) => prompt
            .with_custom_confirmation_message(again)
            .with_custom_confirmation_error_message("The two entries differ; type it twice again."),
        None => prompt.without_confirmation(),
    };
    if let Some(help) = help {
        prompt = prompt.with_help_message(help);
    }
    prompt.prompt().map(SecretString::from)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(bytes: &[u8]) -> Option<String> {
        match one_line(bytes) {
            Some(SecretInput::Unusable(why)) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn a_secret_is_one_line_of_at_most_a_kibibyte() {
        assert!(matches!(one_line(b"secret\n"), Some(SecretInput::Given(_))));
        assert!(matches!(one_line(b"secret\r\n"), Some(SecretInput::Given(_))));
        assert!(matches!(one_line(&[b'a'; MAX_SECRET_BYTES]), Some(SecretInput::Given(_))));
        assert!(one_line(b"").is_none() && one_line(b"\n").is_none());
        assert_eq!(problem(b"first\nsecond\n").as_deref(), Some("it is more than one line"));
        assert_eq!(problem(b"first\n\n").as_deref(), Some("it is more than one line"));
        assert_eq!(problem(&[b'a'; MAX_SECRET_BYTES + 1]).as_deref(), Some("it is more than 1024 bytes"));
        assert_eq!(problem(b"\xff\xfe").as_deref(), Some("it is not UTF-8 text"));
        assert_eq!(problem(b"a\x1bb").as_deref(), Some("it holds a control character"));
    }

    #[test]
    fn what_is_refused_never_holds_the_secret() {
        for input in [&b"hunter2-hunter2\nmore"[..], b"hunter2\x07"] {
            let why = problem(input).unwrap();
            assert!(!why.contains("hunter2"), "{why}");
        }
    }
}
