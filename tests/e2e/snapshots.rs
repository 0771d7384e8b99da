//! Snapshots of the human output of status, properties and audit, so a change to what people
//! read is a reviewed change. Times, hashes, ids, paths, free space, the actor and the build are
//! masked.

use assert_cmd::Command;
use chrono::{Duration, Utc};

use crate::support::{StepArgs, throttling_set};

fn regent(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regent"));
    cmd.env_remove("REGENT_DATA_DIR").env("NO_COLOR", "1").arg("--data-dir").arg(data);
    cmd
}

fn masked(output: std::process::Output, root: &std::path::Path) -> String {
    let text = String::from_utf8(output.stdout).unwrap();
    text.replace(&root.display().to_string(), "[DIR]")
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    for (pattern, replacement) in [
        (r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?( UTC|Z)?", "[TIME]"),
        (r"\b[0-9a-f]{64}\b", "[HASH]"),
        (r"\b[0-9a-f]{16}…", "[HASH…]"),
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "[UUID]"),
        (r"\d+(\.\d)? (B|KiB|MiB|GiB|TiB) \((\w+)\)", "[FREE] ([FS])"),
        // The build that recorded each step (the commit changes with every commit), and its padding.
        (r"\b\d+\.\d+\.\d+ (?:[0-9a-f]{12}(?:-dirty)?|unknown)\s+(accepted|refused)", "[BUILD]  $1"),
        (r"\S+@\S+(\s+)\[BUILD\]", "[ACTOR]$1[BUILD]"),
    ] {
        settings.add_filter(pattern, replacement);
    }
    settings
}

#[test]
fn status_properties_and_audit_read_as_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ok = |cmd: &mut Command| assert!(cmd.output().unwrap().status.code().is_some());
    ok(regent(&data).folders(dir.path().join("install"), dir.path().join("install/cache"), "750GiB"));
    ok(regent(&data).folders(dir.path().join("install"), dir.path().join("scratch"), "1GiB"));
    ok(regent(&data)
        .args([
            "proxy",
            "set",
            "--host",
            "proxy.corp.example",
            "--port",
            "3128",
            "--username",
            "svc-backup",
            "--password-env",
            "PW",
        ])
        .env("PW", "pw-not-shown"));
    ok(regent(&data).args(throttling_set("mon-fri", "09:00-17:00", "512Kbps", "20Mbps")));
    let credentials = dir.path().join("contoso.VaultCredentials");
    crate::support::write_credentials(&credentials, "contoso-backup", Utc::now() - Duration::minutes(10), 48);
    ok(regent(&data).args(["credentials", "load"]).arg(&credentials));
    ok(regent(&data).args(["passphrase", "set", "--passphrase-stdin"]).write_stdin("too short\n"));
    ok(regent(&data).args(["passphrase", "generate", "--save-to"]).arg(dir.path().join("passphrase.txt")));

    settings().bind(|| {
        insta::assert_snapshot!("status", masked(regent(&data).arg("status").output().unwrap(), dir.path()));
        insta::assert_snapshot!("properties", masked(regent(&data).arg("properties").output().unwrap(), dir.path()));
        insta::assert_snapshot!("audit", masked(regent(&data).arg("audit").output().unwrap(), dir.path()));
    });
}
