//! `regent man`: the manual page, or with `--dir` one page per command (as the Debian package
//! installs them). clap_mangen renders what clap declares; this adds what clap cannot say (the
//! environment, the exit status) and, on the single page, lists the commands instead of naming
//! pages that are not installed.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::args::Cli;

/// The single page, `regent.1`, as `regent man` prints it.
pub fn render_single(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    render(&cmd, Pages::Single, w)
}

/// One page per command into the existing directory `dir`, replacing pages of those names.
pub fn write_pages(dir: &Path) -> std::io::Result<()> {
    fn each(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            each(sub, dir)?;
        }
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        render(cmd, Pages::PerCommand, &mut page)?;
        let mut file = std::fs::File::create(dir.join(man.get_filename()))?;
        file.write_all(&page)?;
        file.flush()
    }
    if !dir.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"));
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    each(&cmd, dir)
}

#[derive(Clone, Copy, PartialEq)]
enum Pages {
    /// `regent man`: one page, naming no other.
    Single,
    /// `regent man --dir`: each page names its commands' pages, which are written beside it.
    PerCommand,
}

fn render(cmd: &clap::Command, pages: Pages, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        match pages {
            Pages::PerCommand => man.render_subcommands_section(w)?,
            Pages::Single => commands_section(cmd, w)?,
        }
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(w)?;
    }
    environment_section(w)?;
    exit_status_section(w)?;
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(w)?;
    }
    if pages == Pages::Single {
        writeln!(w, ".SH \"SEE ALSO\"")?;
        text(
            w,
            "regent COMMAND \\-\\-help shows a command's options. One page per command (regent\\-vault\\-serve(1), ...) is written by regent man \\-\\-dir DIR; the Debian package installs them.",
        )?;
    }
    Ok(())
}

/// Every command, by its full path, with its one-line help.
fn commands_section(cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    fn each(cmd: &clap::Command, path: &str, w: &mut dyn Write) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let path = format!("{path} {}", sub.get_name());
            writeln!(w, ".TP")?;
            writeln!(w, "\\fB{}\\fR", escape(&path))?;
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            text(w, &escape(&about))?;
            each(sub, &path, w)?;
        }
        Ok(())
    }
    writeln!(w, ".SH COMMANDS")?;
    each(cmd, cmd.get_bin_name().unwrap_or("regent"), w)
}

fn environment_section(w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, ".SH ENVIRONMENT")?;
    for (name, meaning) in environment() {
        writeln!(w, ".TP")?;
        writeln!(w, "\\fB{}\\fR", escape(&name))?;
        text(w, &escape(&meaning))?;
    }
    Ok(())
}

/// The variables regent reads: each option's (from the declaration), then the logging ones.
fn environment() -> Vec<(String, String)> {
    fn each(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in cmd.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
            let var = var.to_string_lossy().into_owned();
            if out.iter().any(|(name, _)| *name == var) {
                continue;
            }
            let command = if arg.is_global_set() { "regent".to_string() } else { path.to_string() };
            out.push((var, format!("as {command} --{long}; the option wins when both are given")));
        }
        for sub in cmd.get_subcommands() {
            each(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    each(&Cli::command(), "regent", &mut out);
    out.push(("RUST_LOG".into(), "what is logged on stderr (e.g. debug, or sled=debug), instead of -v and -q".into()));
    out.push(("NO_COLOR".into(), "when set, log lines on stderr are not coloured".into()));
    out
}

fn exit_status_section(w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, ".SH \"EXIT STATUS\"")?;
    for (code, meaning) in [
        ("0", "done: a view shown, a step accepted, registered already"),
        (
            "1",
            "refused: a step was refused (and recorded), a check failed, a file or the vault refused the request, or standard output could not be written",
        ),
        (
            "2",
            "usage: the command line cannot be done as asked (unknown flag, bad value, a missing secret); nothing is recorded",
        ),
        (
            "3",
            "the store or the data directory cannot be used: locked, damaged, missing, not empty for import; vault serve: its database",
        ),
        ("130", "stopped at a prompt (Esc, Ctrl-C); the steps done before are kept"),
    ] {
        writeln!(w, ".TP")?;
        writeln!(w, "\\fB{code}\\fR")?;
        text(w, &escape(meaning))?;
    }
    text(
        w,
        "Every non\\-zero exit ends with one line on stderr, regent: MESSAGE, saying what went wrong and what to do next.",
    )
}

/// A line of text, never taken for a request (a leading `.` or `'`).
fn text(w: &mut dyn Write, line: &str) -> std::io::Result<()> {
    writeln!(w, "\\&{line}")
}

/// Text as roff shows it as typed: backslashes and dashes escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> String {
        let mut page = Vec::new();
        render_single(&mut page).unwrap();
        String::from_utf8(page).unwrap()
    }

    #[test]
    fn the_single_page_names_no_page_it_does_not_ship_and_says_environment_and_exit_status() {
        let page = single();
        assert!(!page.contains("regent\\-quickstart(1)") && !page.contains("regent-quickstart(1)"), "{page}");
        for said in [
            ".SH ENVIRONMENT",
            ".SH \"EXIT STATUS\"",
            ".SH COMMANDS",
            "REGENT_DATA_DIR",
            "REGENT_VAULT_LISTEN",
            "REGENT_VAULT_TLS_KEY",
            "REGENT_VAULT_PUBLIC_URL",
            "REGENT_VAULT_LOG_FORMAT",
            "REGENT_VAULT_DATABASE_URL",
            "RUST_LOG",
            "NO_COLOR",
            "regent vault serve",
            "regent properties throttling set",
            "\\fB130\\fR",
            "regent man \\-\\-dir DIR",
        ] {
            assert!(page.contains(said), "{said}: {page}");
        }
    }

    #[test]
    fn every_page_written_to_a_dir_names_only_pages_written_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        write_pages(dir.path()).unwrap();
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.contains(&"regent.1".to_string()) && names.contains(&"regent-vault-serve.1".to_string()));
        for name in &names {
            let page = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(page.contains(".SH ENVIRONMENT") && page.contains(".SH \"EXIT STATUS\""), "{name}");
            for (at, _) in page.match_indices("(1)") {
                let start = page[..at].rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
                let named = page[start..at].replace("\\-", "-");
                if named.starts_with("regent") {
                    assert!(names.contains(&format!("{named}.1")), "{name} names {named}(1), not written");
                }
            }
        }
    }
}
