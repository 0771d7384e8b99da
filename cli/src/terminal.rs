//! The one way out to a person's terminal. Values shown there come from users, files (a credentials
//! file, a customer's exported log) and the network (the vault, a proxy), so a value could carry a
//! line break that forges a row, an ESC sequence the terminal obeys, or a bidi override that
//! reorders what is read. Every human-readable line is escaped here, whole: the C0 controls (line
//! breaks and tabs included), DEL, the C1 controls and the bidi controls are shown as `\u{1b}`,
//! `\u{a}`, `\u{202e}`; all other text is shown as it is. A line's own end is the only line break
//! written, so each call is exactly one line: the program's own multi-line texts are printed a
//! line at a time.
//!
//! JSON is written as it is ([`json_line`], [`Lines::json`]): serde's escaping is its contract.
//! The prompts and the spinner (inquire, indicatif) get escaped texts through [`ask_text`],
//! [`confirm`], [`select`] and [`Spinner`]; clap's messages through [`clap_error`]; tracing's
//! fields through [`init_logging`]. `cli/clippy.toml` disallows the print macros, `std::io::stdout`
//! and `std::io::stderr`, and the inquire and indicatif constructors everywhere else.
#![allow(clippy::disallowed_methods)] // this module is where they belong

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inquire::validator::{ErrorMessage, StringValidator, Validation};
use inquire::{CustomUserError, InquireError};

/// Whether `c` is shown escaped: a control (C0, DEL, C1: `char::is_control`), a bidi control
/// (Unicode's Bidi_Control: U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), or a line or
/// paragraph separator (U+2028, U+2029: line breaks too).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with every character of [`needs_escape`] written as `\u{hex}`. Hand-written because the
/// set of characters is this program's rule: `char::escape_debug` would also rewrite quotes and
/// backslashes (and `\n` as `\n`), and no crate escapes exactly this set.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Displays `T` escaped (see [`escape`]).
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.write_str(&escape(s))
            }
        }
        write!(Escaping(f), "{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Set when a line could not be written to standard output (a full disk behind a redirection):
/// the command then fails instead of exiting 0 with its output lost.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

fn write_to(stream: Stream, bytes: &[u8]) {
    match stream {
        Stream::Stdout => {
            if std::io::stdout().lock().write_all(bytes).is_err() {
                STDOUT_FAILED.store(true, Ordering::Relaxed);
            }
        }
        // Nowhere left to say that stderr failed.
        Stream::Stderr => {
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    }
}

fn escaped_line(args: fmt::Arguments<'_>) -> String {
    let mut line = match args.as_str() {
        Some(text) => escape(text).into_owned(),
        None => escape(&args.to_string()).into_owned(),
    };
    line.push('\n');
    line
}

/// Writes one line, everything in it escaped, line breaks included. Use [`outln!`] and [`errln!`].
pub fn write_line(stream: Stream, args: fmt::Arguments<'_>) {
    write_to(stream, escaped_line(args).as_bytes());
}

/// One line on standard output, escaped (see the module doc); `outln!()` is an empty line.
macro_rules! outln {
    () => { $crate::terminal::write_line($crate::terminal::Stream::Stdout, format_args!("")) };
    ($($arg:tt)*) => { $crate::terminal::write_line($crate::terminal::Stream::Stdout, format_args!($($arg)*)) };
}

/// One line on standard error, escaped (see the module doc); `errln!()` is an empty line.
macro_rules! errln {
    () => { $crate::terminal::write_line($crate::terminal::Stream::Stderr, format_args!("")) };
    ($($arg:tt)*) => { $crate::terminal::write_line($crate::terminal::Stream::Stderr, format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// A JSON document (or one JSON Lines entry) on standard output, exactly as serialized.
pub fn json_line(json: impl fmt::Display) {
    write_to(Stream::Stdout, format!("{json}\n").as_bytes());
}

/// Standard output, buffered, for a command that streams many lines (`regent audit`); write
/// errors are returned to the caller.
pub struct Lines {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Lines {
    pub fn stdout() -> Lines {
        Lines { out: std::io::BufWriter::new(std::io::stdout().lock()) }
    }

    /// One line, escaped.
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> std::io::Result<()> {
        self.out.write_all(escaped_line(args).as_bytes())
    }

    /// One JSON Lines entry, as serialized.
    pub fn json(&mut self, json: &str) -> std::io::Result<()> {
        self.out.write_all(json.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Part of one JSON document that is written in pieces (`replay --json`'s timeline), as
    /// serialized: no line break; the last piece is written with [`Lines::json`].
    pub fn json_part(&mut self, json: &str) -> std::io::Result<()> {
        self.out.write_all(json.as_bytes())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `1 record`, `2 records`: a count with its noun, singular for one.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// `record 5` or `records 5-7`: a range of positions said as a person reads it.
pub fn positions(from: u64, to: u64) -> String {
    if from == to { format!("record {from}") } else { format!("records {from}-{to}") }
}

/// Standard output for bytes that are not lines for a person: an export, a completion script, a
/// manual page.
pub fn machine_stdout() -> std::io::Stdout {
    std::io::stdout()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The exit code once the command is done: a command whose output could not be written fails.
pub fn exit_code(code: u8) -> u8 {
    if code == 0 && STDOUT_FAILED.load(Ordering::Relaxed) {
        errln!("regent: the output could not be written to standard output; check where it goes (a full disk?)");
        return crate::failure::EXIT_REFUSED;
    }
    code
}

// ---------------------------------------------------------------------------------------------
// clap

/// Prints a clap error, help or version text, with the values it quotes escaped, and returns the
/// exit code. Styles are dropped: they would be escaped with the rest.
pub fn clap_error(mut err: clap::Error, usage_code: u8) -> u8 {
    use clap::error::ContextValue;
    // The values clap quotes (an invalid value, an unknown argument) are escaped before they are
    // placed in its lines, so that a line break in them stays in its line. (Our value parsers
    // escape their own messages: see args.rs.)
    let escaped: Vec<_> = err
        .context()
        .filter_map(|(kind, value)| match value {
            ContextValue::String(s) => Some((kind, ContextValue::String(escape(s).into_owned()))),
            ContextValue::Strings(v) => {
                Some((kind, ContextValue::Strings(v.iter().map(|s| escape(s).into_owned()).collect())))
            }
            _ => None,
        })
        .collect();
    for (kind, value) in escaped {
        err.insert(kind, value);
    }
    let stream = if err.use_stderr() { Stream::Stderr } else { Stream::Stdout };
    let rendered = err.render().to_string();
    for line in rendered.trim_end_matches('\n').split('\n') {
        write_line(stream, format_args!("{line}"));
    }
    if err.use_stderr() { usage_code } else { 0 }
}

// ---------------------------------------------------------------------------------------------
// tracing

/// Logging on stderr (tracing). As text, every field value escaped, the message included:
/// tracing-subscriber 0.3.23 escapes ESC, BEL, BS, FF, DEL and C1 only, and leaves line breaks,
/// CR and bidi controls as they are, so a field could still forge a line. As JSON (`vault serve
/// --log-format json`, for a log collector rather than a person), one object a line, written by
/// tracing-subscriber's JSON formatter through serde_json, whose escaping (every control
/// character, line breaks included) is the contract, as for every JSON regent writes.
pub fn init_logging(filter: tracing_subscriber::EnvFilter, format: crate::args::LogFormat) {
    if format == crate::args::LogFormat::Json {
        tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_ansi(false).with_env_filter(filter).init();
        return;
    }
    let ansi = std::env::var_os("NO_COLOR").is_none() && stderr_is_terminal();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .fmt_fields(EscapedFields)
        .init();
}

/// tracing's fields as tracing-subscriber's default writes them (`message name=value ...`), each
/// value escaped.
struct EscapedFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = EscapingVisitor { writer: &mut writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'writer> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl tracing::field::Visit for EscapingVisitor<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // The metadata of records from the `log` crate, which the formatter shows already.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        let value = Escaped(format_args!("{value:?}"));
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}{value}"),
            name => write!(self.writer, "{separator}{}={value}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Prompts (inquire) and the spinner (indicatif): they draw on the terminal themselves

/// A text prompt. The label, help and the default shown are escaped, as is the answer shown once
/// given; the answer itself is what was typed, and Enter on the default gives the default's real
/// value (typing its escaped form means the same default).
pub fn ask_text<V>(
    label: &str,
    default: Option<&str>,
    help: &str,
    placeholder: Option<&str>,
    validator: V,
) -> Result<String, InquireError>
where
    V: StringValidator + Clone + 'static,
{
    let label = escape(label);
    let help = escape(help);
    let shown_default = default.map(escape);
    let placeholder = placeholder.map(escape);
    let formatter = |answer: &str| escape(answer).into_owned();
    let defaults = default.zip(shown_default.as_deref()).map(|(real, shown)| (shown.to_string(), real.to_string()));
    let mut prompt = inquire::Text::new(&label)
        .with_help_message(&help)
        .with_formatter(&formatter)
        .with_validator(EscapedValidator(validator, defaults));
    if let Some(shown) = &shown_default {
        prompt = prompt.with_default(shown);
    }
    if let Some(placeholder) = &placeholder {
        prompt = prompt.with_placeholder(placeholder);
    }
    let answer = prompt.prompt()?;
    Ok(match (default, &shown_default) {
        (Some(real), Some(shown)) if answer == **shown => real.to_string(),
        _ => answer,
    })
}

/// A validator whose messages (which may quote what was typed) are escaped, and which checks the
/// default's real value when Enter takes the default (its escaped form shown, then the default).
#[derive(Clone)]
struct EscapedValidator<V>(V, Option<(String, String)>);

impl<V: StringValidator + Clone> StringValidator for EscapedValidator<V> {
    fn validate(&self, input: &str) -> Result<Validation, CustomUserError> {
        let input = match &self.1 {
            Some((shown, real)) if input == shown => real.as_str(),
            _ => input,
        };
        Ok(match self.0.validate(input)? {
            Validation::Invalid(ErrorMessage::Custom(message)) => {
                Validation::Invalid(ErrorMessage::Custom(escape(&message).into_owned()))
            }
            other => other,
        })
    }
}

/// A yes/no question, escaped.
pub fn confirm(question: &str, default: bool, help: Option<&str>) -> Result<bool, InquireError> {
    let question = escape(question);
    let help = help.map(escape);
    let mut prompt = inquire::Confirm::new(&question).with_default(default);
    if let Some(help) = &help {
        prompt = prompt.with_help_message(help);
    }
    prompt.prompt()
}

/// A choice among a few options (the program's own), with `starting` offered first.
pub fn select<'a>(question: &str, options: Vec<&'a str>, starting: usize, help: &str) -> Result<&'a str, InquireError> {
    let question = escape(question);
    let help = escape(help);
    let shown: Vec<Cow<'_, str>> = options.iter().map(|o| escape(o)).collect();
    let index = inquire::Select::new(&question, shown.iter().map(Cow::as_ref).collect())
        .with_starting_cursor(starting)
        .without_filtering()
        .with_help_message(&help)
        .raw_prompt()?
        .index;
    options.get(index).copied().ok_or(InquireError::InvalidConfiguration("no such option".into()))
}

/// A spinner on stderr while something takes a while; drawn only on a terminal.
pub struct Spinner(indicatif::ProgressBar);

impl Spinner {
    pub fn start(message: &str) -> Spinner {
        let bar = indicatif::ProgressBar::new_spinner().with_message(escape(message).into_owned());
        bar.tick(); // drawn now, even if the work ends before the first steady tick
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(bar)
    }

    pub fn finish_and_clear(&self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_controls_are_escaped_and_other_text_kept() {
        let cases = [
            ("plain text", "plain text"),
            ("ünïcödé, 日本語, עברית", "ünïcödé, 日本語, עברית"),
            ("a\nb\r\tc", "a\\u{a}b\\u{d}\\u{9}c"),
            ("\x1b[2J\x1b]0;title\x07", "\\u{1b}[2J\\u{1b}]0;title\\u{7}"),
            ("\0\x7f\u{80}\u{9b}\u{9f}\u{a0}", "\\u{0}\\u{7f}\\u{80}\\u{9b}\\u{9f}\u{a0}"),
            (
                "\u{202e}evil\u{202c}\u{200e}\u{200f}\u{2066}\u{2069}\u{061c}",
                "\\u{202e}evil\\u{202c}\\u{200e}\\u{200f}\\u{2066}\\u{2069}\\u{61c}",
            ),
            ("\u{2028}\u{2029}", "\\u{2028}\\u{2029}"),
            // Backslashes and quotes are text.
            ("C:\\dir \"q\" 'q'", "C:\\dir \"q\" 'q'"),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape(raw), shown, "{raw:?}");
            assert_eq!(Escaped(raw).to_string(), shown, "{raw:?}");
        }
        assert!(matches!(escape("nothing to do"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_line_is_one_line_whatever_its_values_hold() {
        let value = "x\n    2  forged row\r\x1b[2J";
        let line = escaped_line(format_args!("{:>5}  {value}", 1));
        assert_eq!(line, "    1  x\\u{a}    2  forged row\\u{d}\\u{1b}[2J\n");
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(escaped_line(format_args!("")), "\n");
    }

    #[test]
    fn every_character_escaped_is_named_by_the_rule() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let shown = escape(c.encode_utf8(&mut [0; 4])).into_owned();
            assert_eq!(shown != c.to_string(), needs_escape(c), "{c:?}");
            assert!(!shown.chars().any(needs_escape), "{c:?}");
        }
        let expected: Vec<u32> = (0..0x20)
            .chain(0x7f..=0x9f)
            .chain([0x61c, 0x200e, 0x200f, 0x2028, 0x2029])
            .chain(0x202a..=0x202e)
            .chain(0x2066..=0x2069)
            .collect();
        let escaped: Vec<u32> =
            (0..=0x10ffff).filter_map(char::from_u32).filter(|&c| needs_escape(c)).map(u32::from).collect();
        assert_eq!(escaped, expected);
    }
}
