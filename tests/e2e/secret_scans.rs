//! Secret scans of a real registration: through a real tinyproxy that demands a user and password,
//! nothing secret (the proxy password, the passphrase, the credentials' private key in any of its
//! forms) is in any file of the data dir, in the commands' output at -vv, or in the export.

use std::process::Output;

use assert_cmd::Command;

use crate::support::{Setup, StepArgs, Tinyproxy, contains, files_under, leaks, private_key_forms};

const USER: &str = "backup-svc";
const PASSWORD: &str = "Tiny-Proxy-Basic-4417";
const WRONG_PASSWORD: &str = "Not-The-Password-0093";
const PASSPHRASE: &str = "the registration passphrase, long enough 88";

#[test]
fn register_through_an_authenticating_proxy_leaves_no_secret_or_key_in_files_output_or_export() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    let proxy = Tinyproxy::start(USER, PASSWORD);
    let port = proxy.port.to_string();

    let mut seen = Vec::new();
    let mut run = |mut cmd: Command| -> Output {
        let out = cmd.output().unwrap();
        seen.extend_from_slice(&out.stdout);
        seen.extend_from_slice(&out.stderr);
        out
    };
    let regent = || {
        let mut cmd = setup.regent("agent");
        cmd.arg("-vv");
        cmd
    };
    let ok = |out: &Output, what: &str| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mut folders = regent();
    folders.folders(setup.path("install"), setup.path("scratch"), "1GiB");
    ok(&run(folders), "folders");
    let proxy_set = |password_env: &str| {
        let mut cmd = regent();
        cmd.args(["proxy", "set", "--host", "127.0.0.1", "--port", &port, "--username", USER])
            .args(["--password-env", "PROXY_PW"])
            .env("PROXY_PW", password_env);
        cmd
    };
    // First a wrong password: the proxy refuses it, so it really demands one.
    ok(&run(proxy_set(WRONG_PASSWORD)), "proxy set");
    let mut load = regent();
    load.args(["credentials", "load"]).arg(&credentials);
    ok(&run(load), "credentials load");
    let mut passphrase = regent();
    passphrase.args(["passphrase", "set", "--passphrase-stdin"]).write_stdin(format!("{PASSPHRASE}\n"));
    ok(&run(passphrase), "passphrase set");
    let mut register = regent();
    register.arg("register");
    let refused = run(register);
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("proxy_auth_failed"));

    // The right password, from standard input this time; registration goes through the proxy.
    let mut right = regent();
    right
        .args(["proxy", "set", "--host", "127.0.0.1", "--port", &port, "--username", USER, "--password-stdin"])
        .write_stdin(format!("{PASSWORD}\n"));
    ok(&run(right), "proxy set");
    let mut register = regent();
    register.args(["--json", "register"]);
    let registered = run(register);
    ok(&registered, "register");
    let answer: serde_json::Value = serde_json::from_slice(&registered.stdout).unwrap();
    assert_eq!(answer["status"]["phase"], "registered");
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("POST {}/v1/vaults/prod/registrations", setup.url())),
        "the registration went through the proxy:\n{log}"
    );
    for args in [&["--json", "status"][..], &["--json", "properties"], &["audit"], &["audit", "--json"]] {
        let mut cmd = regent();
        cmd.args(args);
        ok(&run(cmd), &format!("{args:?}"));
    }
    let mut export = regent();
    export.args(["audit", "export"]);
    let export = run(export);
    ok(&export, "audit export");
    assert!(export.stdout.len() > 1000, "the export holds the log");
    let first_record = String::from_utf8_lossy(&export.stdout).lines().nth(1).unwrap().to_string();

    let mut places: Vec<(String, Vec<u8>)> =
        vec![("the commands' stdout and stderr".into(), seen), ("the export".into(), export.stdout)];
    let data_dir = setup.path("agent");
    for file in files_under(&data_dir) {
        places.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    // The vault keeps the agent's records too (reported after each step): its files are searched,
    // and they do hold the agent's log.
    let vault_files = files_under(&setup.path("vault"));
    assert!(
        vault_files.iter().any(|file| contains(&std::fs::read(file).unwrap(), first_record.as_bytes())),
        "the vault keeps the agent's first record"
    );
    for file in vault_files {
        places.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    let names: Vec<String> = places.iter().map(|(name, _)| name.clone()).collect();
    assert!(names.iter().any(|n| n.ends_with("/db")), "sled's data file is searched: {names:?}");
    assert!(names.len() > 6, "the store, the secrets area and the rest are searched: {names:?}");

    let basic = |password: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
    };
    let key_forms = private_key_forms(&credentials);
    // The scan finds what it looks for: the key written as PEM or DER, and the credentials file.
    let found_in = |bytes: &[u8]| -> Vec<&str> {
        key_forms.iter().filter(|(_, needle)| contains(bytes, needle)).map(|(form, _)| form.as_str()).collect()
    };
    let der = &key_forms.iter().find(|(form, _)| form == "PKCS#8 DER").unwrap().1;
    let pem = {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    };
    assert!(found_in(pem.as_bytes()).iter().filter(|f| f.starts_with("PEM line")).count() >= 2);
    assert!(found_in(der).contains(&"private scalar"));
    assert!(found_in(&std::fs::read(&credentials).unwrap()).contains(&"PKCS#12 base64 text"));
    for (place, bytes) in &places {
        for secret in [PASSWORD, WRONG_PASSWORD, PASSPHRASE] {
            assert!(!leaks(bytes, secret), "a secret is in {place}");
        }
        for password in [PASSWORD, WRONG_PASSWORD] {
            assert!(!contains(bytes, basic(password).as_bytes()), "a Proxy-Authorization value is in {place}");
        }
        for (form, needle) in &key_forms {
            assert!(!contains(bytes, needle), "the private key ({form}) is in {place}");
        }
    }
}
