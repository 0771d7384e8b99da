//! Reading secrets the ways spec/cli.md allows: stdin, a file, a named environment variable, or a
//! masked prompt when stdin is a terminal. Never from the command line.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use secrecy::SecretString;

use crate::failure::Failure;

/// The first line of standard input, without its line ending.
pub fn from_stdin(what: &str) -> Result<SecretString, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("cannot read the {what} from standard input: {e}")))?;
    let value = line.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(Failure::usage(format!(
            "standard input held no {what}; pipe it in, e.g. `printf %s \"$X\" | regent ...`"
        )));
    }
    Ok(SecretString::from(value))
}

pub fn from_env(what: &str, variable: &str) -> Result<SecretString, Failure> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        Ok(_) => Err(Failure::usage(format!("the environment variable {variable} holding the {what} is empty"))),
        Err(_) => Err(Failure::usage(format!("the environment variable {variable} holding the {what} is not set"))),
    }
}

/// The first line of a file, which must not be readable by others.
pub fn from_file(what: &str, path: &Path) -> Result<SecretString, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read the {what} from {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or("").to_string();
    if first.is_empty() {
        return Err(Failure::usage(format!("{} holds no {what} on its first line", path.display())));
    }
    Ok(SecretString::from(first))
}

/// A masked prompt, asked twice when `confirm` is set. Only when stdin is a terminal.
pub fn prompt(what: &str, confirm: bool, flags: &str) -> Result<SecretString, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("the {what} is needed: give it with {flags}")));
    }
    let label = format!("{}:", capitalize(what));
    let confirmation = confirm.then_some("Type it again:");
    masked(&label, confirmation, None).map_err(|e| Failure::usage(format!("no {what} was entered ({e})")))
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
