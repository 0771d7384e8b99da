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
    let again = wizard(&good);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to do"));
    let machines: serde_json::Value =
        serde_json::from_slice(&setup.admin(&["machines", "--vault", "prod", "--json"]).stdout).unwrap();
    assert_eq!(machines.as_array().map(Vec::len), Some(1));
}
