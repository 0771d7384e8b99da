//! Issue 14: a status that always answers, and settings changed after registration: the CA file
//! the registration trusted, a TLS failure as its own reason, a new proxy tried against the vault,
//! the scratch folder's files, work days over the weekend. Through the real binary, a real vault
//! (over HTTPS with a CA of the test's own) and a real tinyproxy.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{Duration, Utc};
use regent_vault::{BackgroundServer, ServeConfig};

use crate::support::*;

const USER: &str = "agent";
const PASSWORD: &str = "s3cret-proxy-pass";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: Output) -> Output {
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    out
}

/// A CA of the test's own and a certificate for 127.0.0.1 it signed, as PEM files in `dir`.
fn pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("regent test CA {name}"));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let paths = (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

#[test]
fn a_passphrase_change_over_https_trusts_the_registrations_ca_and_a_tls_failure_is_never_a_pin_refusal() {
    let agent = Agent::new();
    let (ca, cert, key) = pki(agent.dir.path(), "vault");
    let (other_ca, _, _) = pki(agent.dir.path(), "other");
    let server = BackgroundServer::start(
        ServeConfig::new(agent.path("vault"), "127.0.0.1:0".parse().unwrap()).with_tls(&cert, &key),
    )
    .unwrap();
    assert!(server.url().starts_with("https://"));
    let admin = |args: &[&str]| {
        let mut cmd = agent.cmd();
        cmd.args(["--json", "vault"]).args(args).arg("--server").arg(server.url());
        cmd.arg("--token-file").arg(server.admin_token_path()).arg("--ca-file").arg(&ca);
        let out = ok(cmd.output().unwrap());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    admin(&["create", "prod"]);
    let credentials = agent.path("prod.VaultCredentials");
    admin(&["credentials", "--vault", "prod", "--output", credentials.to_str().unwrap()]);
    ok(agent.folders());
    ok(agent.run(&[OsStr("credentials"), OsStr("load"), credentials.as_os_str()]));
    ok(agent.run_stdin(&["passphrase", "set", "--passphrase-stdin"], "a good long passphrase\n"));
    ok(agent.cmd().arg("register").arg("--ca-file").arg(&ca).output().unwrap());

    // No --ca-file: the CA the registration trusted, at the registration's endpoint.
    let change = |pin: &str, ca_file: Option<&Path>| {
        let mut cmd = agent.cmd();
        cmd.args(["properties", "passphrase", "change", "--passphrase-stdin", "--security-pin-env", "PIN"]);
        if let Some(ca_file) = ca_file {
            cmd.arg("--ca-file").arg(ca_file);
        }
        cmd.env("PIN", pin).write_stdin("another long passphrase\n").output().unwrap()
    };
    let pin = admin(&["pin", "--vault", "prod"])["pin"].as_str().unwrap().to_string();
    let changed = ok(change(&pin, None));
    assert!(stdout(&changed).contains("passphrase changed"), "{}", stdout(&changed));

    // Another CA: the vault cannot be trusted, said as such; the PIN was not sent and stays good.
    let pin = admin(&["pin", "--vault", "prod"])["pin"].as_str().unwrap().to_string();
    let refused = change(&pin, Some(&other_ca));
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let line = stderr(&refused);
    assert!(line.contains("regent: vault_tls_failed: "), "{line}");
    assert!(!line.contains("security_pin_invalid") && !line.contains("regent vault pin"), "{line}");
    assert!(line.contains("--ca-file"), "says what to do: {line}");
    let audit = agent.json(&["audit", "--kind", "refused"]);
    assert_eq!(audit["reason"], "vault_tls_failed", "{audit}");
    // The failing CA is not remembered: the same PIN goes through with the registration's.
    ok(change(&pin, None));

    let status = agent.json(&["status"]);
    assert_eq!(status["vault_detail"]["ca_file"], ca.to_str().unwrap(), "{status}");
    assert_eq!(status["vault_detail"]["endpoint"], server.url(), "{status}");
    let human = stdout(&ok(agent.run(&["status"])));
    assert!(human.contains(&format!("prod at {} (registered)", server.url())), "{human}");
    assert!(human.contains(&format!("vault CA      {}", ca.display())), "{human}");
}

/// `OsStr` arguments mixed with text, for [`Agent::run`].
#[allow(non_snake_case)]
fn OsStr(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

#[test]
fn a_new_proxy_on_a_registered_machine_is_tried_against_the_vault_and_a_wrong_password_is_refused() {
    let setup = Setup::new();
    let proxy = Tinyproxy::start(USER, PASSWORD);
    let port = proxy.port.to_string();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let credentials = setup.download("prod", "prod.VaultCredentials");
    setup.prepare("agent", &credentials);
    assert_eq!(setup.step("agent", &["register"]).0, 0);
    let proxy_set = |args: &[&str], password: &str| {
        setup
            .regent("agent")
            .args(["properties", "proxy", "set", "--host", "127.0.0.1"])
            .args(args)
            .write_stdin(format!("{password}\n"))
            .output()
            .unwrap()
    };
    let with_user = ["--port", port.as_str(), "--username", USER, "--password-stdin"];

    let refused = proxy_set(&with_user, "not-the-password");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).starts_with("regent: proxy_auth_failed: "), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("unchanged"), "{}", stderr(&refused));
    assert!(setup.json("agent", &["properties"])["proxy"].is_null(), "the proxy is not set");
    assert!(proxy.log_text().contains("/log-head"), "the probe went through the proxy:\n{}", proxy.log_text());

    let set = proxy_set(&with_user, PASSWORD);
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert!(stderr(&set).is_empty(), "no warning: {}", stderr(&set));
    assert_eq!(setup.json("agent", &["properties"])["proxy"]["port"], proxy.port);

    // Nothing listening there: not the proxy's password; set, with a warning.
    let nothing = regent_testkit::free_port().to_string();
    let set = proxy_set(&["--port", nothing.as_str()], "");
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert!(stderr(&set).contains("could not be reached through it"), "{}", stderr(&set));
    assert!(stderr(&set).contains("vault_unreachable"), "{}", stderr(&set));
}

#[test]
fn scratch_dir_says_only_the_setting_changed_and_leaves_the_files() {
    let agent = Agent::new();
    ok(agent.folders());
    let cache = agent.path("scratch").join("cache.bin");
    std::fs::write(&cache, b"cached").unwrap();
    let new = agent.path("scratch2");
    let out = ok(agent.run(&[OsStr("properties"), OsStr("scratch-dir"), new.as_os_str()]));
    assert!(stdout(&out).contains("the setting only: no file was moved"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("moved to"), "{}", stdout(&out));
    let warning = stderr(&out);
    assert!(warning.contains("only the setting changed"), "{warning}");
    assert!(warning.contains(&format!("in {} stays there", agent.path("scratch").display())), "{warning}");
    assert!(cache.exists(), "the files stay where they were");
    let json = agent.json(&["properties"]);
    assert_eq!(json["folders"]["scratch_dir"], new.to_str().unwrap());
}

#[test]
fn work_days_over_the_weekend_and_lists_are_accepted_and_said_back() {
    let agent = Agent::new();
    let out = ok(agent.run(&throttling_set("fri-mon", "09:00-17:00", "10Mbps", "100Mbps")));
    assert!(stdout(&out).contains("work days Fri, Sat, Sun, Mon, 09:00-17:00"), "{}", stdout(&out));
    assert_eq!(agent.json(&["properties"])["throttling"]["work_days"], serde_json::json!(["mon", "fri", "sat", "sun"]));
    let out = ok(agent.run(&throttling_set("mon,tue,fri", "08:00-18:00", "10Mbps", "100Mbps")));
    assert!(stdout(&out).contains("work days Mon, Tue, Fri,"), "{}", stdout(&out));
    let human = stdout(&ok(agent.run(&["properties"])));
    assert!(human.contains("Mon, Tue, Fri"), "{human}");
    let bad = agent.run(&throttling_set("fri-funday", "09:00-17:00", "10Mbps", "100Mbps"));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn status_shows_the_vault_and_the_credentials_before_and_after_registration_and_flags_superseded_ones() {
    let setup = Setup::new();
    assert_eq!(setup.admin(&["create", "prod"]).status.code(), Some(0));
    let first = setup.download("prod", "first.VaultCredentials");
    setup.prepare("agent", &first);

    let status = setup.json("agent", &["status"]);
    assert!(status["vault"].is_null(), "not registered: {status}");
    let detail = &status["vault_detail"];
    assert_eq!((detail["name"].as_str(), detail["registered"].as_bool()), (Some("prod"), Some(false)), "{status}");
    assert_eq!(detail["from"], "credentials");
    assert!(detail["endpoint"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{status}");
    assert_eq!(status["credentials"]["state"], "valid", "{status}");
    assert!(status["credentials"]["expires_at"].is_string(), "{status}");
    let human = String::from_utf8_lossy(&setup.regent("agent").arg("status").output().unwrap().stdout).into_owned();
    assert!(
        human.contains("prod at http://127.0.0.1:") && human.contains("(not registered; from the loaded credentials)"),
        "{human}"
    );
    assert!(human.contains("credentials   valid, expires "), "{human}");

    // A newer download: only the vault knows; the log learns it when the registration is refused.
    let second = setup.download("prod", "second.VaultCredentials");
    refused_with(setup.step("agent", &["register"]), "credentials_superseded");
    let status = setup.json("agent", &["status"]);
    assert_eq!(status["credentials"]["state"], "superseded", "{status}");
    assert_eq!(status["credentials"]["vault_refused"]["reason"], "credentials_superseded", "{status}");
    assert_eq!(status["credentials"]["vault_refused"]["learned_from"], "register", "{status}");
    assert_eq!(status["last_failure"]["current"], true, "register is the step due: {status}");
    // A refused proxy change now is not what the step due waits on: earlier history.
    refused_with(setup.step("agent", &["proxy", "set", "--host", "bad host", "--port", "3128"]), "invalid_proxy");
    let status = setup.json("agent", &["status"]);
    assert_eq!(
        (status["last_failure"]["step"].as_str(), status["last_failure"]["current"].as_bool()),
        (Some("proxy"), Some(false))
    );
    let human = String::from_utf8_lossy(&setup.regent("agent").arg("status").output().unwrap().stdout).into_owned();
    assert!(human.contains("SUPERSEDED") && human.contains("credentials_superseded"), "{human}");
    assert!(human.contains("earlier       (history, not the step now due) proxy invalid_proxy"), "{human}");
    assert!(!human.contains("last failure  proxy"), "{human}");

    assert_eq!(setup.step("agent", &["credentials", "load", second.to_str().unwrap()]).0, 0);
    assert_eq!(setup.step("agent", &["register"]).0, 0);
    let status = setup.json("agent", &["status"]);
    assert_eq!(status["vault"], "prod");
    assert_eq!(
        (status["vault_detail"]["registered"].as_bool(), status["vault_detail"]["from"].as_str()),
        (Some(true), Some("registration"))
    );
    assert_eq!(status["credentials"]["state"], "valid", "{status}");
    assert!(status["credentials"]["vault_refused"].is_null(), "{status}");
}

#[test]
fn an_expiry_in_the_past_is_marked_expired_in_properties_and_status() {
    let agent = Agent::new();
    ok(agent.folders());
    let file = agent.path("short.VaultCredentials");
    let from = Utc::now() - Duration::minutes(1);
    write_credentials_until(&file, "prod", from, Utc::now() + Duration::seconds(2));
    ok(agent.run(&[OsStr("credentials"), OsStr("load"), file.as_os_str()]));
    assert_eq!(agent.json(&["properties"])["credentials"]["expired"], false);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let properties = agent.json(&["properties"]);
    assert_eq!(properties["credentials"]["expired"], true, "{properties}");
    assert_eq!(properties["credentials"]["validity"], "expired", "{properties}");
    let human = stdout(&ok(agent.run(&["properties"])));
    assert!(human.contains("(EXPIRED at "), "{human}");
    assert_eq!(agent.json(&["status"])["credentials"]["state"], "expired");
    let human = stdout(&ok(agent.run(&["status"])));
    assert!(human.contains("credentials   EXPIRED at "), "{human}");
}
