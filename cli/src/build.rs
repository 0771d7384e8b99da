//! Which build this binary is, said one way everywhere: `regent --version`, the export header's
//! `writer`, and the build every recorded step names. `build.rs` finds the commit and its date
//! (`unknown` outside a git checkout; never the time of the build).

use regent_engine::model::BuildId;

/// This binary's version, the commit it was built from (`-dirty` when its sources differed from
/// it) and the commit's date (YYYY-MM-DD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Build {
    pub version: &'static str,
    pub commit: &'static str,
    pub date: &'static str,
}

pub const BUILD: Build =
    Build { version: env!("CARGO_PKG_VERSION"), commit: env!("REGENT_COMMIT"), date: env!("REGENT_COMMIT_DATE") };

/// `0.1.0 (a5271b4c0d1e 2026-12-01)`: what `--version` prints after the name (a constant, for clap).
pub const DESCRIPTION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("REGENT_COMMIT"), " ", env!("REGENT_COMMIT_DATE"), ")");

/// This build in words, as [`DESCRIPTION`].
pub fn describe() -> &'static str {
    DESCRIPTION
}

/// Who wrote an export: `regent 0.1.0 (a5271b4c0d1e 2026-12-01)`, as `regent --version` says.
pub fn writer() -> String {
    format!("regent {}", describe())
}

/// This build as the engine records it beside every step.
pub fn recorded() -> BuildId {
    BuildId { version: BUILD.version.into(), commit: BUILD.commit.into(), date: BUILD.date.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_made_of_the_build_and_names_no_build_time() {
        assert_eq!(DESCRIPTION, format!("{} ({} {})", BUILD.version, BUILD.commit, BUILD.date));
        assert_eq!(writer(), format!("regent {DESCRIPTION}"));
        let recorded = recorded();
        assert_eq!(
            (recorded.version.as_str(), recorded.commit.as_str(), recorded.date.as_str()),
            (BUILD.version, BUILD.commit, BUILD.date)
        );
        assert!(BUILD.date == "unknown" || BUILD.date.len() == 10, "{}", BUILD.date);
    }
}
