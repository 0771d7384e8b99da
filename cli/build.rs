//! The build's identity, for `regent --version`, the export header and every recorded step
//! (`src/build.rs` reads what this sets): the commit the binary was built from and that commit's
//! date, never the time of the build, so that building the same commit twice gives the same binary.
//!
//! - From git, when the package is in a git checkout (a worktree too) that tracks it:
//!   `git rev-parse --short=12 HEAD` and the committer date (`git log -1 --format=%cs`).
//! - `REGENT_BUILD_COMMIT` and `REGENT_BUILD_DATE` (YYYY-MM-DD) override them, for packagers who
//!   build from a tarball and know what it was made from.
//! - Otherwise `unknown` (a crate tarball, no git): never a guess.
//!
//! `SOURCE_DATE_EPOCH` is not read: it is the time a packager gives the build's files, not the
//! commit's date, and the version line would pair it with a commit it does not belong to.
//!
//! A tree whose Rust sources or manifests differ from the commit gets `-dirty` after the commit.
//! Honesty wins over a tidy string here: every step the binary records names this commit, and a
//! record claiming code that did not write it would send a support engineer to the wrong source.
//! Reproducibility loses nothing, since reproducible builds are made from clean checkouts or
//! tarballs, where the suffix never appears. To keep the suffix exact, the script runs again
//! whenever one of those tracked files changes, or the index, HEAD or the branch it points to.

// A build script speaks to cargo on stdout; nothing here reaches a person's terminal.
#![allow(clippy::disallowed_macros)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// What decides the binary: a change elsewhere (a fixture, a README) does not make it dirty.
const SOURCES: &[&str] = &[":(glob)**/*.rs", ":(glob)**/Cargo.toml", "Cargo.lock"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REGENT_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=REGENT_BUILD_DATE");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let given_commit = given("REGENT_BUILD_COMMIT", valid_commit);
    let given_date = given("REGENT_BUILD_DATE", valid_date);
    let from_git = if given_commit.is_some() && given_date.is_some() { None } else { from_git(&manifest_dir) };
    let (git_commit, git_date) = from_git.unzip();
    let commit = given_commit.or(git_commit).unwrap_or_else(|| "unknown".into());
    let date = given_date.or(git_date).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=REGENT_COMMIT={commit}");
    println!("cargo:rustc-env=REGENT_COMMIT_DATE={date}");
}

/// An override from the environment; a malformed one fails the build (a packager's mistake,
/// better caught than recorded in every step).
fn given(name: &str, valid: fn(&str) -> bool) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    if !valid(&value) {
        panic!("{name}={value:?} is not valid: a commit is up to 64 of [0-9a-zA-Z._-], a date YYYY-MM-DD");
    }
    Some(value)
}

fn valid_commit(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

/// The commit (with `-dirty` when the sources differ from it) and its date, from the checkout
/// holding `package`; None when there is no git, no checkout, or one that does not track this
/// package (a crate unpacked inside some other repository).
fn from_git(package: &Path) -> Option<(String, String)> {
    git(package, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let top = PathBuf::from(git(package, &["rev-parse", "--show-toplevel"])?);
    watch(package, &top);
    let commit = git(package, &["rev-parse", "--short=12", "HEAD"]).filter(|c| valid_commit(c))?;
    let date = git(package, &["log", "-1", "--format=%cs", "HEAD"]).filter(|d| valid_date(d))?;
    // `--no-optional-locks`: status must not rewrite the index it is watched through.
    let mut status = vec!["--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(SOURCES);
    let dirty = !git(&top, &status)?.is_empty();
    Some((if dirty { format!("{commit}-dirty") } else { commit }, date))
}

/// Runs the script again when HEAD moves (a checkout, or a commit on its branch), the index
/// changes, or a tracked source does. In a worktree `.git` is a file: `--git-path` names the
/// worktree's own HEAD and index, and the branch in the common directory.
fn watch(package: &Path, top: &Path) {
    let git_path = |name: &str| git(package, &["rev-parse", "--git-path", name]).map(|p| package.join(p));
    let mut watched: Vec<PathBuf> = ["HEAD", "index", "packed-refs"].into_iter().filter_map(git_path).collect();
    if let Some(branch) = git(package, &["symbolic-ref", "-q", "HEAD"]) {
        // A branch that lives only in packed-refs gets a loose file on its next commit: its folder changes then.
        if let Some(loose) = git_path(&branch) {
            watched.push(if loose.exists() { loose } else { loose.parent().map_or(loose.clone(), Path::to_path_buf) });
        }
    }
    let mut files = vec!["ls-files", "-z", "--"];
    files.extend(SOURCES);
    if let Some(list) = git(top, &files) {
        watched.extend(list.split('\0').filter(|f| !f.is_empty()).map(|f| top.join(f)));
    }
    // A path that does not exist would make cargo run the script on every build; one with a line
    // break cannot be said to cargo (and the index still catches a change to it).
    for path in watched.iter().filter(|p| p.exists() && !p.to_string_lossy().contains(['\n', '\r'])) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// git's output, trimmed; None if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok().map(|s| s.trim().to_string())
}
