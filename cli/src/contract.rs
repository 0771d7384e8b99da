//! `docs/cli.md` against the binary: the page is the contract scripts rely on, so a command, a
//! flag or a code the binary has and the page does not (or the reverse) fails here, naming it.
//!
//! The page's rules, read with two small parsers (headings, and backtick spans outside fenced
//! blocks): one `### regent PATH` heading per leaf command (a command whose subcommand is optional,
//! such as `properties`, is one too); in its section, up to the next heading of level 3 or less,
//! each of its long flags as `` `--flag` `` (the global flags once, in "Global flags") and each
//! positional argument as `` `NAME` ``; the reason codes and the vault's error codes as the first
//! column of the tables under "## Reason codes" and "## Vault error codes".

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use regent_engine::Reason;
use regent_vault::protocol::ErrorCode;

use crate::args::Cli;

const DOC: &str = include_str!("../../docs/cli.md");

/// What the binary says one leaf command takes.
struct Leaf {
    /// Its long flags, without the global ones.
    flags: BTreeSet<String>,
    /// Its positional arguments' value names (`FILE`).
    positionals: Vec<String>,
}

/// The leaf commands by path (`proxy set`), walking clap's tree; `help` is clap's, not ours.
fn leaves() -> BTreeMap<String, Leaf> {
    fn walk(command: &clap::Command, path: &str, out: &mut BTreeMap<String, Leaf>) {
        let children: Vec<&clap::Command> = command.get_subcommands().filter(|c| c.get_name() != "help").collect();
        if !path.is_empty() && (children.is_empty() || !command.is_subcommand_required_set()) {
            let args = || command.get_arguments().filter(|a| !a.is_global_set());
            let flags = args()
                .filter_map(|a| a.get_long())
                .filter(|long| !["help", "version"].contains(long))
                .map(|long| format!("--{long}"))
                .collect();
            let positionals = args()
                .filter(|a| a.is_positional())
                .flat_map(|a| a.get_value_names().unwrap_or_default().iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .collect();
            out.insert(path.to_string(), Leaf { flags, positionals });
        }
        for child in children {
            let path =
                if path.is_empty() { child.get_name().to_string() } else { format!("{path} {}", child.get_name()) };
            walk(child, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Cli::command(), "", &mut out);
    out
}

/// The global flags (`--json`, ...), which any section may name.
fn global_flags() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter(|a| a.is_global_set())
        .filter_map(|a| a.get_long())
        .map(|long| format!("--{long}"))
        .collect()
}

/// The page's lines outside fenced code blocks.
fn prose(doc: &str) -> Vec<&str> {
    let mut fenced = false;
    doc.lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// A heading's level and text (`### regent status` is 3, `regent status`).
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    let text = line[level..].strip_prefix(' ')?;
    (level > 0).then_some((level, text.trim()))
}

/// Each `### regent PATH` heading, in order, with the lines of its section.
fn command_sections(doc: &str) -> Vec<(String, Vec<&str>)> {
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    let mut open = false;
    for line in prose(doc) {
        match heading(line) {
            Some((level, _)) if level <= 3 => {
                open = false;
                if let Some(path) = line.strip_prefix("### regent ") {
                    sections.push((path.trim().to_string(), Vec::new()));
                    open = true;
                }
            }
            _ if open => {
                if let Some((_, lines)) = sections.last_mut() {
                    lines.push(line);
                }
            }
            _ => {}
        }
    }
    sections
}

/// The text between backticks on each line (a span does not cross a line here).
fn code_spans<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines.iter().flat_map(|line| line.split('`').skip(1).step_by(2)).collect()
}

/// The long flags the spans name: a span's first word when it starts with `--`.
fn flags_named(spans: &[&str]) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|span| span.starts_with("--"))
        .filter_map(|span| span.split(|c: char| c.is_whitespace() || c == '=').next())
        .map(str::to_string)
        .collect()
}

/// The codes in the first column of the table under the heading `title` (of any level), in order.
fn table_codes(doc: &str, title: &str) -> Vec<String> {
    let lines = prose(doc);
    let (start, level) = lines
        .iter()
        .enumerate()
        .find_map(|(at, line)| heading(line).filter(|(_, text)| *text == title).map(|(level, _)| (at, level)))
        .unwrap_or_else(|| panic!("docs/cli.md has no `{title}` section"));
    lines[start + 1..]
        .iter()
        .take_while(|line| !matches!(heading(line), Some((inner, _)) if inner <= level))
        .filter_map(|line| line.strip_prefix('|')?.split('|').next())
        .map(str::trim)
        .filter_map(|cell| cell.strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

/// Codes as a set, failing on one listed twice.
fn unique(codes: Vec<String>, table: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for code in codes {
        assert!(seen.insert(code.clone()), "docs/cli.md lists `{code}` twice in {table}");
    }
    seen
}

fn check_table(title: &str, known: BTreeSet<String>) {
    let documented = unique(table_codes(DOC, title), title);
    let missing: Vec<&String> = known.difference(&documented).collect();
    assert!(missing.is_empty(), "codes of the binary missing from docs/cli.md's \"{title}\" table: {missing:?}");
    let unknown: Vec<&String> = documented.difference(&known).collect();
    assert!(unknown.is_empty(), "docs/cli.md's \"{title}\" table lists codes the binary does not know: {unknown:?}");
}

#[test]
fn every_leaf_command_has_one_section_and_every_section_names_a_command() {
    let leaves = leaves();
    assert!(leaves.contains_key("vault serve") && leaves.contains_key("properties"), "the walk finds the leaves");
    let mut documented = BTreeSet::new();
    for (path, _) in command_sections(DOC) {
        assert!(documented.insert(path.clone()), "docs/cli.md has two `### regent {path}` headings");
        assert!(leaves.contains_key(&path), "docs/cli.md has `### regent {path}`, but regent has no such command");
    }
    for path in leaves.keys() {
        assert!(documented.contains(path), "`regent {path}` has no `### regent {path}` section in docs/cli.md");
    }
}

#[test]
fn every_flag_is_in_its_commands_section_and_every_flag_named_there_is_one_of_its_own() {
    let leaves = leaves();
    let globals = global_flags();
    assert!(globals.contains("--json") && globals.contains("--data-dir"), "the global flags are found");
    let global_section = prose(DOC).into_iter().skip_while(|line| heading(line) != Some((2, "Global flags")));
    let global_section: Vec<&str> =
        global_section.skip(1).take_while(|line| !matches!(heading(line), Some((level, _)) if level <= 2)).collect();
    let named = flags_named(&code_spans(&global_section));
    for flag in &globals {
        assert!(named.contains(flag), "the global flag `{flag}` is not in docs/cli.md's \"Global flags\" section");
    }
    for (path, lines) in command_sections(DOC) {
        let Some(leaf) = leaves.get(&path) else { continue };
        let spans = code_spans(&lines);
        let named = flags_named(&spans);
        for flag in &leaf.flags {
            assert!(
                named.contains(flag),
                "`regent {path}` takes `{flag}`, which its section in docs/cli.md does not name"
            );
        }
        for flag in &named {
            assert!(
                leaf.flags.contains(flag) || globals.contains(flag),
                "docs/cli.md's `regent {path}` section names `{flag}`, which is not a flag of that command"
            );
        }
        for positional in &leaf.positionals {
            assert!(
                spans.iter().any(|span| span.split_whitespace().next() == Some(positional.as_str())),
                "`regent {path}` takes `{positional}`, which its section in docs/cli.md does not name"
            );
        }
    }
}

#[test]
fn the_reason_table_holds_exactly_the_reason_codes() {
    check_table("Reason codes", Reason::ALL.iter().map(|r| r.code().to_string()).collect());
}

#[test]
fn the_vault_error_table_holds_exactly_the_vault_error_codes() {
    check_table("Vault error codes", ErrorCode::ALL.iter().map(|c| c.code().to_string()).collect());
}

/// The failure codes the CLI's own code gives: `.because("code")`, the codes `failure.rs` maps
/// errors to, and message literals that start with a code (`"replay_diverged: ..."`, which
/// `Failure` takes as its code). Read from the source, since they are spread over the commands.
fn failure_codes_in_source() -> BTreeSet<String> {
    fn looks_like_code(text: &str) -> bool {
        text.contains('_') && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![dir.clone()];
    let mut codes = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        if path.file_name() == Some("contract.rs".as_ref()) || path.extension() != Some("rs".as_ref()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for marker in ["because(\"", "EXIT_REFUSED, \"", "EXIT_STORE, \"", "EXIT_USAGE, \""] {
            for (at, _) in source.match_indices(marker) {
                let rest = &source[at + marker.len()..];
                let code = &rest[..rest.find('"').unwrap_or(0)];
                if looks_like_code(code) {
                    codes.insert(code.to_string());
                }
            }
        }
        for (at, _) in source.match_indices("format!(") {
            let Some(rest) = source[at + "format!(".len()..].trim_start().strip_prefix('"') else { continue };
            if let Some((code, _)) = rest.split_once(": ").filter(|(code, _)| looks_like_code(code)) {
                codes.insert(code.to_string());
            }
        }
    }
    codes
}

#[test]
fn the_failure_table_holds_exactly_the_failure_codes_the_cli_gives() {
    let reasons: BTreeSet<String> = Reason::ALL.iter().map(|r| r.code().to_string()).collect();
    let vault: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.code().to_string()).collect();
    let documented = unique(table_codes(DOC, "The error object"), "The error object");
    let in_source = failure_codes_in_source();
    assert!(in_source.contains("store_locked") && in_source.contains("replay_diverged"), "the scan finds codes");
    let undocumented: Vec<&String> = in_source
        .iter()
        .filter(|code| !documented.contains(*code) && !reasons.contains(*code) && !vault.contains(*code))
        .collect();
    assert!(undocumented.is_empty(), "failure codes the CLI gives that docs/cli.md does not list: {undocumented:?}");
    // The defaults of Failure::refused, usage, store and stopped are given without a literal.
    let given: BTreeSet<String> =
        in_source.into_iter().chain(["refused", "usage", "store_unavailable", "stopped"].map(String::from)).collect();
    let stale: Vec<&String> = documented.difference(&given).collect();
    assert!(stale.is_empty(), "docs/cli.md's failure table lists codes the CLI never gives: {stale:?}");
}

#[test]
fn the_parsers_read_what_the_page_means() {
    let page = "# t\n## Reason codes\n| code | x |\n| --- | --- |\n| `a_b` | one |\n```\n| `fenced` |\n```\n\
                ### regent x y\nuse `--one N` and `--two=V`, not -v\n#### inside\n`--three`\n## Other\n| `c` | no |\n";
    assert_eq!(table_codes(page, "Reason codes"), ["a_b"]);
    let sections = command_sections(page);
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].0, "x y");
    let named: Vec<String> = flags_named(&code_spans(&sections[0].1)).into_iter().collect();
    assert_eq!(named, ["--one", "--three", "--two"]);
}
