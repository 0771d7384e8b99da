//! Which directory a command keeps its state in when `--data-dir` and `REGENT_DATA_DIR` name
//! none. Decided by [`choose`], a pure function of what the binary found out (who runs it, the
//! user's data folder, which state exists where), so every case is a unit test; `Context` asks
//! the operating system.
//!
//! | who | the agent | `regent vault serve` |
//! | --- | --- | --- |
//! | root (euid 0) | `/var/lib/regent` | `/var/lib/regent-vault` |
//! | anyone else | `~/.local/share/regent` | `~/.local/share/regent-vault` |
//!
//! (`~/.local/share` is `$XDG_DATA_HOME` when set.) Earlier builds kept root's agent in root's
//! home, and the vault service in the agent's directory. State found where an earlier build
//! left it, with none where this build looks, is refused (`data_dir_moved`, exit 2) with the line
//! that moves it: starting afresh beside it would register the machine a second time (or start an
//! empty vault), and using it silently would keep two places in use for ever.

use std::path::{Path, PathBuf};

/// Whose state: the agent's, or the vault service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent,
    VaultService,
}

/// What the binary found out about this run.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// `--data-dir` or `REGENT_DATA_DIR`.
    pub named: Option<&'a Path>,
    /// The effective user is root.
    pub root: bool,
    /// The user's data folder (`~/.local/share`, or `$XDG_DATA_HOME`), when there is a home.
    pub user_data: Option<&'a Path>,
}

/// Where root's state is kept.
const SYSTEM_STATE: &str = "/var/lib";

/// The directory chosen, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Named by the user.
    Named(PathBuf),
    /// The default for this user and role.
    Default(PathBuf),
    /// No state where the default is, but state where an earlier build kept it: `found`, with
    /// `holds` (what of it is this role's). `default_exists`: the default is there (empty of
    /// state), so a plain `mv` of the folder would put it inside.
    Moved { found: PathBuf, holds: Vec<&'static str>, default: PathBuf, default_exists: bool },
    /// No home to keep state in.
    NoHome,
}

impl Role {
    fn folder(self) -> &'static str {
        match self {
            Role::Agent => "regent",
            Role::VaultService => "regent-vault",
        }
    }

    /// The entries that say a directory holds this role's state (the agent's store; the vault
    /// service's log and admin token).
    fn marks(self) -> &'static [&'static str] {
        match self {
            Role::Agent => &["store"],
            Role::VaultService => &["log", "admin.token"],
        }
    }
}

/// Where `role` keeps its state. `exists(path)` says whether a path exists (the caller asks the
/// file system; tests answer from a list).
pub fn choose(role: Role, facts: Facts<'_>, exists: impl Fn(&Path) -> bool) -> Choice {
    if let Some(named) = facts.named {
        return Choice::Named(named.to_path_buf());
    }
    let default = match (facts.root, facts.user_data) {
        (true, _) => Path::new(SYSTEM_STATE).join(role.folder()),
        (false, Some(user_data)) => user_data.join(role.folder()),
        (false, None) => return Choice::NoHome,
    };
    // Where an earlier build kept this role's state: root's agent in root's home; every vault
    // service in the agent's folder of the user's data.
    let earlier = match (role, facts.root) {
        (Role::Agent, true) => facts.user_data.map(|d| d.join(Role::Agent.folder())),
        (Role::Agent, false) => None,
        (Role::VaultService, _) => facts.user_data.map(|d| d.join(Role::Agent.folder())),
    };
    let Some(earlier) = earlier.filter(|e| *e != default) else { return Choice::Default(default) };
    let marks = role.marks();
    let has_state = |dir: &Path| exists(&dir.join(marks[0]));
    if has_state(&default) || !has_state(&earlier) {
        return Choice::Default(default);
    }
    let holds = marks.iter().copied().filter(|m| exists(&earlier.join(m))).collect();
    Choice::Moved { default_exists: exists(&default), found: earlier, holds, default }
}

/// The one line that says where the state is and how to move it (a `data_dir_moved` failure).
pub fn moved_message(role: Role, found: &Path, holds: &[&str], default: &Path, default_exists: bool) -> String {
    let whose = match role {
        Role::Agent => "this machine's registration",
        Role::VaultService => "the vault service's state",
    };
    let (found_text, default_text) = (shell_word(found), shell_word(default));
    let how = match (role, default_exists) {
        // The whole folder is the agent's (its key and sealed values too): moved as it is, in
        // place of an empty default (`rmdir` refuses one that is not).
        (Role::Agent, false) => format!("mv {found_text} {default_text}"),
        (Role::Agent, true) => format!("rmdir {default_text} && mv {found_text} {default_text}"),
        // The agent's folder may hold the agent's state too: only the service's entries move.
        (Role::VaultService, _) => {
            let from: Vec<String> = holds.iter().map(|h| shell_word(&found.join(h))).collect();
            format!("mkdir -p -m 700 {default_text} && mv {} {default_text}/", from.join(" "))
        }
    };
    format!(
        "data_dir_moved: {whose} is in {}, where an earlier regent kept it, and this regent keeps it in {}: move it with `{how}`, or keep using it with --data-dir {found_text}",
        found.display(),
        default.display()
    )
}

/// A path as one shell word: as it is when it needs no quoting, otherwise in single quotes.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%".contains(&b)) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(root: bool, user_data: Option<&'a str>, named: Option<&'a str>) -> Facts<'a> {
        Facts { named: named.map(Path::new), root, user_data: user_data.map(Path::new) }
    }

    /// `choose` on a file system holding exactly `present`.
    fn pick(role: Role, facts: Facts<'_>, present: &[&str]) -> Choice {
        choose(role, facts, |p| present.iter().any(|q| Path::new(q) == p))
    }

    fn default(path: &str) -> Choice {
        Choice::Default(path.into())
    }

    #[test]
    fn a_named_dir_wins_for_everyone_whatever_exists() {
        for (role, root) in [(Role::Agent, true), (Role::Agent, false), (Role::VaultService, true)] {
            let chosen = pick(role, facts(root, None, Some("/srv/x")), &["/root/.local/share/regent/store"]);
            assert_eq!(chosen, Choice::Named("/srv/x".into()));
        }
    }

    #[test]
    fn root_keeps_its_state_under_var_lib_and_others_in_their_home() {
        let root = facts(true, Some("/root/.local/share"), None);
        let user = facts(false, Some("/home/ops/.local/share"), None);
        assert_eq!(pick(Role::Agent, root, &[]), default("/var/lib/regent"));
        assert_eq!(pick(Role::VaultService, root, &[]), default("/var/lib/regent-vault"));
        assert_eq!(pick(Role::Agent, user, &[]), default("/home/ops/.local/share/regent"));
        assert_eq!(pick(Role::VaultService, user, &[]), default("/home/ops/.local/share/regent-vault"));
        // Root needs no home; anyone else does.
        assert_eq!(pick(Role::Agent, facts(true, None, None), &[]), default("/var/lib/regent"));
        assert_eq!(pick(Role::Agent, facts(false, None, None), &[]), Choice::NoHome);
        assert_eq!(pick(Role::VaultService, facts(false, None, None), &[]), Choice::NoHome);
    }

    #[test]
    fn roots_state_left_in_its_home_is_refused_with_the_move_unless_var_lib_has_state() {
        let root = facts(true, Some("/root/.local/share"), None);
        let old = "/root/.local/share/regent/store";
        assert_eq!(
            pick(Role::Agent, root, &[old]),
            Choice::Moved {
                found: "/root/.local/share/regent".into(),
                holds: vec!["store"],
                default: "/var/lib/regent".into(),
                default_exists: false,
            }
        );
        // The default there but empty (made by a package, say): still moved, and said so.
        let Choice::Moved { default_exists, .. } = pick(Role::Agent, root, &[old, "/var/lib/regent"]) else {
            panic!("not refused")
        };
        assert!(default_exists);
        // State in both: this build's place is used; the home's is not looked at.
        assert_eq!(pick(Role::Agent, root, &[old, "/var/lib/regent/store"]), default("/var/lib/regent"));
        // Keys but no store in the home: nothing was recorded there; not state to move.
        assert_eq!(pick(Role::Agent, root, &["/root/.local/share/regent/machine.key"]), default("/var/lib/regent"));
        // A user's own home is where its agent always was.
        let user = facts(false, Some("/home/ops/.local/share"), None);
        assert_eq!(
            pick(Role::Agent, user, &["/home/ops/.local/share/regent/store"]),
            default("/home/ops/.local/share/regent")
        );
    }

    #[test]
    fn a_vault_service_left_in_the_agents_folder_is_refused_with_the_move() {
        let user = facts(false, Some("/home/ops/.local/share"), None);
        let old = ["/home/ops/.local/share/regent/log", "/home/ops/.local/share/regent/admin.token"];
        assert_eq!(
            pick(Role::VaultService, user, &old),
            Choice::Moved {
                found: "/home/ops/.local/share/regent".into(),
                holds: vec!["log", "admin.token"],
                default: "/home/ops/.local/share/regent-vault".into(),
                default_exists: false,
            }
        );
        let root = facts(true, Some("/root/.local/share"), None);
        assert!(matches!(pick(Role::VaultService, root, &["/root/.local/share/regent/log"]), Choice::Moved { .. }));
        // The agent's own store there is not a vault's.
        assert_eq!(
            pick(Role::VaultService, user, &["/home/ops/.local/share/regent/store"]),
            default("/home/ops/.local/share/regent-vault")
        );
        let new_log = "/home/ops/.local/share/regent-vault/log";
        assert_eq!(pick(Role::VaultService, user, &[old[0], new_log]), default("/home/ops/.local/share/regent-vault"));
    }

    #[test]
    fn the_move_is_one_line_that_works_as_typed() {
        let agent = moved_message(
            Role::Agent,
            Path::new("/root/.local/share/regent"),
            &["store"],
            Path::new("/var/lib/regent"),
            false,
        );
        assert_eq!(
            agent,
            "data_dir_moved: this machine's registration is in /root/.local/share/regent, where an earlier regent kept it, and this regent keeps it in /var/lib/regent: move it with `mv /root/.local/share/regent /var/lib/regent`, or keep using it with --data-dir /root/.local/share/regent"
        );
        let into = moved_message(
            Role::Agent,
            Path::new("/root/.local/share/regent"),
            &["store"],
            Path::new("/var/lib/regent"),
            true,
        );
        assert!(into.contains("`rmdir /var/lib/regent && mv /root/.local/share/regent /var/lib/regent`"), "{into}");
        let vault = moved_message(
            Role::VaultService,
            Path::new("/home/o p/r"),
            &["log", "admin.token"],
            Path::new("/v"),
            false,
        );
        assert!(
            vault.contains("`mkdir -p -m 700 /v && mv '/home/o p/r/log' '/home/o p/r/admin.token' /v/`"),
            "{vault}"
        );
        assert!(vault.contains("--data-dir '/home/o p/r'"), "{vault}");
        assert_eq!(agent.lines().count(), 1);
    }
}
