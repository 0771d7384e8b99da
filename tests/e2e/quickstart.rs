//! `regent quickstart` on a fresh data dir: the whole job, then the same command again.

use assert_cmd::Command;

fn regent(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1").arg("--data-dir").arg(data_dir);
    cmd
}

#[test]
fn quickstart_registers_a_fresh_machine_and_a_second_run_only_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = regent(&data).arg("quickstart").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    for shown in [
        "== Status ==",
        "== Change Properties ==",
        "== Audit trail ==",
        "registered to vault quickstart-vault",
        "Next, try:",
    ] {
        assert!(stdout.contains(shown), "quickstart shows {shown:?}:\n{stdout}");
    }
    // It runs each next step itself: the step commands' `next: ...` hints would be noise here.
    assert!(!stdout.lines().any(|line| line.starts_with("next: ")), "{stdout}");
    let status: serde_json::Value =
        serde_json::from_slice(&regent(&data).args(["--json", "status"]).output().unwrap().stdout).unwrap();
    // folders, credentials, passphrase, registration started, registered
    assert_eq!((status["phase"].as_str(), status["events"].as_u64()), (Some("registered"), Some(5)));
    assert_eq!(status["vault"], "quickstart-vault");
    // The generated passphrase was saved 0600 and the log verifies.
    use std::os::unix::fs::PermissionsExt;
    let saved = data.join("quickstart-passphrase.txt");
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(regent(&data).args(["audit", "verify"]).output().unwrap().status.code(), Some(0));

    let again = regent(&data).arg("quickstart").output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("registered already"));
    let status: serde_json::Value =
        serde_json::from_slice(&regent(&data).args(["--json", "status"]).output().unwrap().stdout).unwrap();
    assert_eq!(status["events"], 5, "a second run records nothing");

    // The quickstart's vault is gone: the next step it suggests works without a warning about it.
    let next = regent(&data)
        .args(crate::support::throttling_set("mon-fri", "09:00-17:00", "512Kbps", "20Mbps"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!((next.status.code(), stderr.as_ref()), (Some(0), ""), "{stderr}");
    // Checking against that vault says it is gone for good, not to retry later.
    for args in [&["audit", "verify", "--against-vault"][..], &["audit", "anchor"]] {
        let out = regent(&data).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("regent: anchor_unavailable: ") && stderr.contains("ended with it"), "{stderr}");
        assert!(!stderr.contains("retry"), "{stderr}");
    }
}
