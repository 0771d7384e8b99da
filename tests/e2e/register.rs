//! Registration through the real binary against a real vault service on 127.0.0.1 (port 0):
//! the admin commands, registration, the vault's refusals, and the passphrase change with a PIN.

use std::path::Path;

use crate::support::{Setup, refused_with};

#[test]
fn register_against_a_real_vault_with_its_refusals() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    assert_eq!(setup.admin(&["create", "other"]).status.code(), Some(0));
    let stale = setup.download("prod", "stale.VaultCredentials");
    let newest = setup.download("prod", "newest.VaultCredentials");
    let other = setup.download("other", "other.VaultCredentials");
    setup.prepare("agent", &stale);

    refused_with(setup.step("agent", &["register"]), "credentials_superseded");
    assert_eq!(setup.step("agent", &["credentials", "load", newest.to_str().unwrap()]).0, 0);
    let out = setup.regent("agent").args(["--json", "register"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"]["phase"], "registered");
    assert_eq!(answer["status"]["vault"], "prod");

    refused_with(setup.step("agent", &["register"]), "already_registered");
    refused_with(setup.step("agent", &["credentials", "load", other.to_str().unwrap()]), "credentials_wrong_vault");

    let properties: serde_json::Value =
        serde_json::from_slice(&setup.regent("agent").args(["--json", "properties"]).output().unwrap().stdout).unwrap();
    let machine_id = properties["vault"]["machine_id"].as_str().unwrap().to_string();
    assert_eq!(properties["vault"]["name"], "prod");
    assert!(properties["vault"]["registered_at"].is_string());
    let machines: serde_json::Value =
        serde_json::from_slice(&setup.admin(&["machines", "--vault", "prod", "--json"]).stdout).unwrap();
    assert_eq!(machines.as_array().map(Vec::len), Some(1));
    assert_eq!(machines[0]["machine_id"], machine_id.as_str());

    // The passphrase change: a wrong PIN, a right one, and the right one again (used once).
    let pin = String::from_utf8(setup.admin(&["pin", "--vault", "prod"]).stdout).unwrap().trim().to_string();
    assert_eq!(pin.len(), 8);
    let change = |pin: &str| {
        let out = setup
            .regent("agent")
            .args(["properties", "passphrase", "change", "--passphrase-stdin", "--security-pin-env", "PIN"])
            .env("PIN", pin)
            .write_stdin("the new passphrase, long\n")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let wrong = if pin == "00000000" { "11111111" } else { "00000000" };
    refused_with(change(wrong), "security_pin_invalid");
    assert_eq!(change(&pin).0, 0);
    refused_with(change(&pin), "security_pin_invalid");

    // Unregister, and a vault that is gone is unreachable.
    assert_eq!(setup.step("agent", &["unregister"]).0, 0);
    refused_with(setup.step("agent", &["register", "--endpoint", "http://127.0.0.1:1"]), "vault_unreachable");
    let audit = String::from_utf8(
        setup.regent("agent").args(["audit", "--json", "--kind", "refused"]).output().unwrap().stdout,
    )
    .unwrap();
    for reason in [
        "credentials_superseded",
        "already_registered",
        "credentials_wrong_vault",
        "security_pin_invalid",
        "vault_unreachable",
    ] {
        assert!(audit.contains(reason), "{reason} is recorded");
    }
    assert_eq!(setup.step("agent", &["audit", "verify"]).0, 0);
}

#[test]
fn credentials_download_refuses_to_overwrite_and_needs_the_token() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let file = setup.download("prod", "v.VaultCredentials");
    let again = setup.admin(&["credentials", "--vault", "prod", "--output", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let bad_token = setup.path("bad.token");
    std::fs::write(&bad_token, "not-the-token\n").unwrap();
    let out = setup
        .regent("admin")
        .args(["vault", "create", "x", "--server", &setup.url(), "--token-file"])
        .arg(&bad_token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn the_unattended_wizard_registers_from_flags_resumes_and_is_idempotent() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let good = setup.download("prod", "prod.VaultCredentials");
    let broken = setup.path("broken.VaultCredentials");
    std::fs::write(&broken, b"<not-credentials/>").unwrap();
    let wizard = |credentials: &Path| {
        setup
            .regent("agent")
            .args(["wizard", "--unattended", "--install-dir"])
            .arg(setup.path("install"))
            .arg("--scratch-dir")
            .arg(setup.path("scratch"))
            .args([
                "--backup-size",
                "1GiB",
                "--proxy-host",
                "127.0.0.1",
                "--proxy-port",
                "1",
                "--proxy-user",
                "svc",
                "--proxy-password-env",
                "PROXY_PW",
            ])
            .env("PROXY_PW", "proxy-secret-1")
            .arg("--credentials")
            .arg(credentials)
            .arg("--generate-passphrase-to")
            .arg(setup.path("passphrase.txt"))
            .output()
            .unwrap()
    };
    // A broken credentials file stops the wizard at that step, recorded.
    let out = wizard(&broken);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials_invalid"));
    // The proxy on port 1 makes registration fail as unreachable; the passphrase is created first.
    let out = wizard(&good);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vault_unreachable") || stderr.contains("proxy"), "{stderr}");
    assert!(setup.path("passphrase.txt").exists());
    // Clear the proxy and run again: it resumes, keeps the passphrase, registers.
    assert_eq!(setup.step("agent", &["proxy", "clear"]).0, 0);
    let out = setup
        .regent("agent")
        .args(["wizard", "--unattended", "--install-dir"])
        .arg(setup.path("install"))
        .arg("--scratch-dir")
        .arg(setup.path("scratch"))
        .args(["--backup-size", "1GiB", "--credentials"])
        .arg(&good)
        .arg("--generate-passphrase-to")
        .arg(setup.path("passphrase.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Run again with a proxy this machine does not use: the difference is said with what changes
    // it, exit 1, and nothing is recorded.
    let events = setup.json("agent", &["status"])["events"].clone();
    let again = wizard(&good);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("differs: --proxy-host: 127.0.0.1:1, user svc given, but this machine has no proxy (a direct connection); to change it: `regent properties proxy set --host 127.0.0.1 --port 1 --username svc --password-stdin`"),
        "{stderr}"
    );
    assert!(stderr.lines().last().unwrap_or_default().starts_with("regent: wizard_state_differs: "), "{stderr}");
    assert_eq!(setup.json("agent", &["status"])["events"], events);
    // The same flags as the registration: nothing to do.
    let out = setup
        .regent("agent")
        .args(["wizard", "--unattended", "--install-dir"])
        .arg(setup.path("install"))
        .arg("--scratch-dir")
        .arg(setup.path("scratch"))
        .args(["--backup-size", "1GiB", "--credentials"])
        .arg(&good)
        .arg("--generate-passphrase-to")
        .arg(setup.path("passphrase.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the flags match its state; nothing to do"));
    let machines: serde_json::Value =
        serde_json::from_slice(&setup.admin(&["machines", "--vault", "prod", "--json"]).stdout).unwrap();
    assert_eq!(machines.as_array().map(Vec::len), Some(1));
}

/// `regent --json wizard --unattended ...`: exactly one JSON object on stdout, and the exit code.
fn unattended_json(
    setup: &Setup,
    agent: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (i32, serde_json::Value) {
    let mut command = setup.regent(agent);
    command.args(["--json", "wizard", "--unattended"]).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let document = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.code().unwrap_or(-1), document)
}

#[test]
fn a_rerun_on_a_registered_machine_names_every_flag_that_differs_and_json_is_one_document_in_every_case() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    assert_eq!(setup.admin(&["create", "other"]).status.code(), Some(0));
    let good = setup.download("prod", "prod.VaultCredentials");
    let other = setup.download("other", "other.VaultCredentials");
    let broken = setup.path("broken.VaultCredentials");
    std::fs::write(&broken, b"<not-credentials/>").unwrap();
    let (passphrase, wrong) = (setup.path("pp.txt"), setup.path("wrong.txt"));
    std::fs::write(&passphrase, "the passphrase of this machine\n").unwrap();
    std::fs::write(&wrong, "another passphrase altogether\n").unwrap();
    let (install, scratch, scratch2) = (setup.path("install"), setup.path("scratch"), setup.path("scratch2"));
    let flags = |scratch: &Path, size: &str, credentials: &Path, passphrase: &Path| -> Vec<std::ffi::OsString> {
        let mut flags: Vec<std::ffi::OsString> = Vec::new();
        for (flag, value) in [
            ("--install-dir", install.as_os_str()),
            ("--scratch-dir", scratch.as_os_str()),
            ("--backup-size", size.as_ref()),
            ("--credentials", credentials.as_os_str()),
            ("--passphrase-file", passphrase.as_os_str()),
        ] {
            flags.push(flag.into());
            flags.push(value.into());
        }
        flags
    };
    let proxy = ["--proxy-host", "127.0.0.1", "--proxy-port", "1", "--proxy-user", "svc", "--proxy-password-env", "PW"];
    let os = |flags: &[std::ffi::OsString], more: &[&str]| -> Vec<std::ffi::OsString> {
        flags.iter().cloned().chain(more.iter().map(Into::into)).collect()
    };
    let run = |agent: &str, args: Vec<std::ffi::OsString>, env: &[(&str, &str)]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        unattended_json(&setup, agent, &args, env)
    };

    // A refusal: the steps run so far and the refused one, with its error.
    let (code, document) = run("spare", flags(&scratch, "1GiB", &broken, &passphrase), &[]);
    assert_eq!(code, 1, "{document}");
    assert_eq!(document["outcome"], "refused");
    let outcomes: Vec<&str> =
        document["steps"].as_array().unwrap().iter().filter_map(|s| s["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["accepted", "refused"]);
    assert_eq!(document["error"]["code"], "credentials_invalid");

    // Registered from the flags: every step in the one document.
    let base = flags(&scratch, "1GiB", &good, &passphrase);
    let (code, document) = run("agent", base.clone(), &[]);
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["outcome"], "registered");
    assert_eq!(document["steps"].as_array().map(Vec::len), Some(4), "{document}");
    assert_eq!(document["status"]["phase"], "registered");
    assert!(document["error"].is_null() && document["differences"] == serde_json::json!([]));

    // A proxy set after registering, with a password: the same flags and password match.
    let out = setup
        .regent("agent")
        .args(["properties", "proxy", "set", "--host", "127.0.0.1", "--port", "1", "--username", "svc"])
        .args(["--password-env", "PW"])
        .env("PW", "proxy-password-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let events = setup.json("agent", &["status"])["events"].clone();
    let (code, document) = run("agent", os(&base, &proxy), &[("PW", "proxy-password-1")]);
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["outcome"], "nothing_to_do");
    assert_eq!(document["steps"], serde_json::json!([]));
    assert_eq!(document["status"]["phase"], "registered");

    // Everything that can differ at once: each said, one line each, nothing recorded.
    let differing = os(&flags(&scratch2, "2GiB", &other, &wrong), &proxy);
    let (code, document) = run("agent", differing.clone(), &[("PW", "another-password")]);
    assert_eq!(code, 1, "{document}");
    assert_eq!(document["outcome"], "state_differs");
    assert_eq!(document["error"]["code"], "wizard_state_differs");
    assert_eq!(document["error"]["exit"], 1);
    let named: Vec<&str> =
        document["differences"].as_array().unwrap().iter().filter_map(|d| d["flag"].as_str()).collect();
    assert_eq!(named, ["--scratch-dir", "--backup-size", "--proxy-password-env", "--credentials", "--passphrase-file"]);
    let credentials = &document["differences"][3];
    assert!(credentials["given"].as_str().unwrap().contains("credentials of vault other"), "{credentials}");
    assert!(credentials["change"].as_str().unwrap().contains("`regent unregister`"), "{credentials}");
    let out = setup.regent("agent").args(["wizard", "--unattended"]).args(&differing).env("PW", "x").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("differs: ")).count(), 5, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "differs: --scratch-dir: {} given, but this machine has {}; to move it: `regent properties scratch-dir {}`",
            scratch2.display(),
            scratch.display(),
            scratch2.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("differs: --backup-size: 2GiB given, but this machine has 1GiB; "), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("regent: wizard_state_differs: ") && last.contains("5 of the flags given"), "{stderr}");
    assert_eq!(setup.json("agent", &["status"])["events"], events, "a comparison records nothing");

    // A failure before any step: still the one document, with its error.
    let (code, document) = run("agent", os(&base, &proxy), &[]);
    assert_eq!(code, 2, "{document}");
    assert_eq!(
        (document["outcome"].as_str(), document["error"]["code"].as_str()),
        (Some("failed"), Some("secret_missing"))
    );
}
