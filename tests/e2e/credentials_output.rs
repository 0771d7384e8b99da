//! `regent vault credentials --output FILE` asks the vault for nothing when it cannot write FILE:
//! a download supersedes every earlier one, so a lost download would cost the file the user had.

use regent_vault::AdminClient;

use crate::support::Setup;

/// The files in `dir` whose names start with the download's temporary prefix.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".regent-credentials-"))
        .collect()
}

#[test]
fn a_credentials_output_that_cannot_be_written_consumes_nothing_at_the_vault() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let kept = setup.download("prod", "kept.VaultCredentials");
    let kept_bytes = std::fs::read(&kept).unwrap();
    let admin = AdminClient::from_token_file(&setup.url(), &setup.path("vault").join("admin.token"), None).unwrap();
    let newest = admin.vault("prod").unwrap().newest_thumbprint;
    assert!(newest.is_some());

    let missing_dir = setup.path("no-such-dir");
    let cases = [
        ("onto the file the user has", kept.clone(), "already exists"),
        ("into a directory that does not exist", missing_dir.join("x.VaultCredentials"), "does not exist"),
    ];
    for (what, output, says) in cases {
        let out = setup.admin(&["credentials", "--vault", "prod", "--output", output.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("nothing was downloaded"), "{what}: {stderr}");
        assert!(stderr.contains("--output"), "{what}: says what to do next: {stderr}");
        assert_eq!(admin.vault("prod").unwrap().newest_thumbprint, newest, "{what}: the vault issued nothing");
    }
    assert!(!missing_dir.exists(), "the missing directory was not created");
    assert_eq!(std::fs::read(&kept).unwrap(), kept_bytes, "the file the user had is untouched");
    assert!(leftovers(setup.dir.path()).is_empty(), "no temporary file left behind");

    // The file the user had is still the newest: it registers.
    setup.prepare("agent", &kept);
    let (code, stderr) = setup.step("agent", &["register"]);
    assert_eq!(code, 0, "{stderr}");

    // A writable new name works, 0600, and leaves no temporary file.
    let fresh = setup.download("prod", "fresh.VaultCredentials");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(leftovers(setup.dir.path()).is_empty());
    assert_ne!(admin.vault("prod").unwrap().newest_thumbprint, newest);
}
