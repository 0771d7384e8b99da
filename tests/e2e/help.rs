//! `--help` and `regent man` through the binary: the manual names only pages that exist, says
//! the environment and the exit status, and the options say their limits.

use assert_cmd::Command;

fn regent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1");
    cmd
}

fn stdout(args: &[&str]) -> String {
    let out = regent().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_manual_page_names_no_missing_page_and_says_environment_and_exit_status() {
    let page = stdout(&["man"]);
    assert!(!page.contains("regent\\-quickstart(1)") && !page.contains("regent\\-vault(1)"), "{page}");
    for said in [".SH ENVIRONMENT", ".SH \"EXIT STATUS\"", "REGENT_DATA_DIR", "REGENT_VAULT_TLS_CERT", "NO_COLOR"] {
        assert!(page.contains(said), "{said}: {page}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = regent().arg("man").arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let top = std::fs::read_to_string(dir.path().join("regent.1")).unwrap();
    assert!(top.contains("regent\\-quickstart(1)") && dir.path().join("regent-quickstart.1").is_file());
    let serve = std::fs::read_to_string(dir.path().join("regent-vault-serve.1")).unwrap();
    assert!(serve.contains(".SH \"EXIT STATUS\"") && serve.contains("RUST_LOG"), "{serve}");
}

#[test]
fn options_that_had_no_help_have_one_and_validity_says_and_keeps_its_maximum() {
    let throttling = stdout(&["properties", "throttling", "set", "--help"]);
    assert!(throttling.contains("Outside work hours"), "{throttling}");
    let proxy = stdout(&["proxy", "set", "--help"]);
    assert!(proxy.contains("The user name the proxy asks for"), "{proxy}");
    let serve = stdout(&["vault", "serve", "--help"]);
    assert!(serve.contains("certificate chain (PEM)") && serve.contains("private key (PEM)"), "{serve}");
    let credentials = stdout(&["vault", "credentials", "--help"]);
    assert!(credentials.contains("at most 30 days"), "{credentials}");
    let dir = tempfile::tempdir().unwrap();
    let out = regent()
        .args(["vault", "credentials", "--vault", "v", "--validity", "31d", "--output"])
        .arg(dir.path().join("v.VaultCredentials"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 30 days"));
}
