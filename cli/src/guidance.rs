//! How to do what the engine says comes next, in this build's commands and flags. The engine
//! records facts (a step to run, a PIN to get); only the binary knows its command line, so the
//! log never holds the flags of the build that wrote it.

use regent_engine::Step;
use regent_engine::model::Next;
use regent_engine::service::NeededSecret;

/// The command a user runs for a step.
pub fn command_line(step: Step) -> &'static str {
    match step {
        Step::Folders => "regent folders --install-dir DIR --scratch-dir DIR --backup-size SIZE",
        Step::Proxy => "regent proxy set --host HOST --port PORT",
        Step::Credentials => "regent credentials load FILE",
        Step::Passphrase => "regent passphrase generate --save-to FILE",
        Step::Register => "regent register",
        Step::Unregister => "regent unregister",
        Step::ScratchFolder => "regent properties scratch-dir DIR",
        Step::Throttling => "regent properties throttling set ...",
        Step::PassphraseChange => "regent properties passphrase change --security-pin-env VAR",
    }
}

fn command_of(next: Next) -> &'static str {
    match next {
        Next::Run(step) => command_line(step),
        Next::GetPin => "regent vault pin",
        Next::ExportLog => "regent audit export",
        Next::CheckStatus => "regent status",
        Next::Move => "regent register --credentials FILE",
    }
}

/// `run `A`, then `B``, or nothing when nothing comes next.
pub fn next_text(next: &[Next]) -> Option<String> {
    let (first, rest) = next.split_first()?;
    let mut text = format!("run `{}`", command_of(*first));
    for next in rest {
        text.push_str(&format!(", then `{}`", command_of(*next)));
    }
    Some(text)
}

/// A refusal's message with what to do next: `MESSAGE; run `...``.
pub fn with_next(message: &str, next: &[Next]) -> String {
    match next_text(next) {
        Some(next) => format!("{}; {next}", message.trim_end_matches('.')),
        None => message.to_string(),
    }
}

/// As [`with_next`], with the credentials file the refused step named in place of `FILE` (the
/// command to move is said exactly).
pub fn with_next_for_file(message: &str, next: &[Next], file: Option<&std::path::Path>) -> String {
    let text = with_next(message, next);
    match (file, next.contains(&Next::Move)) {
        (Some(file), true) => {
            let shown = file.display().to_string();
            let shown = if shown.contains(char::is_whitespace) { format!("'{shown}'") } else { shown };
            text.replace("regent register --credentials FILE", &format!("regent register --credentials {shown}"))
        }
        _ => text,
    }
}

/// How a secret the step needed is given.
pub fn how_to_give(secret: NeededSecret) -> &'static str {
    match secret {
        NeededSecret::ProxyPassword => "--password-stdin or --password-env VAR",
        NeededSecret::Passphrase => "--passphrase-stdin or --passphrase-file F",
        NeededSecret::SecurityPin => "--security-pin-env VAR or at the prompt (get one with `regent vault pin`)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_comes_next_is_said_as_commands_in_order() {
        assert_eq!(next_text(&[]), None);
        assert_eq!(
            with_next("the folders step comes first", &[Next::Run(Step::Folders), Next::Run(Step::Register)]),
            "the folders step comes first; run `regent folders --install-dir DIR --scratch-dir DIR --backup-size SIZE`, then `regent register`"
        );
        assert_eq!(with_next("done.", &[Next::GetPin]), "done; run `regent vault pin`");
        assert_eq!(with_next("as it is", &[]), "as it is");
    }
}
