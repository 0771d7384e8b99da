//! The rules, given/when/then: given these recorded steps, when this command with these
//! observations, then this change or this refusal. Every reason code is reached here.

use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use regent_engine::decide as decide_mod;
use regent_engine::model::*;
use regent_engine::{Reason, State, Step, decide, precheck};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn at(minutes: i64) -> Observations {
    Observations { now: t0() + Duration::minutes(minutes), ..Observations::default() }
}

fn dir(facts_free: u64) -> FolderFacts {
    FolderFacts {
        resolved: None,
        existed: true,
        created: false,
        is_dir: true,
        writable: true,
        filesystem: "ext4".into(),
        network: false,
        free_bytes: facts_free,
        problem: None,
        creatable: false,
    }
}

const GIB: u64 = 1 << 30;

fn choose_folders() -> Command {
    Command::ChooseFolders {
        install_dir: "/opt/regent".into(),
        scratch_dir: "/var/cache/regent".into(),
        backup_size_bytes: 100 * GIB,
    }
}

fn folders_seen(free: u64) -> Observations {
    Observations { install: Some(dir(free)), scratch: Some(dir(free)), ..at(0) }
}

fn vault(name: &str) -> VaultIdentity {
    VaultIdentity {
        name: name.into(),
        subscription_id: "sub-1".into(),
        resource_group: "rg".into(),
        location: "westeurope".into(),
        resource_id: 42,
    }
}

fn credentials_seen(vault_name: &str) -> Observations {
    Observations {
        credentials: Some(CredentialsObserved::Parsed {
            facts: CredentialFacts {
                file_name: "v.VaultCredentials".into(),
                vault: vault(vault_name),
                endpoint: "http://127.0.0.1:9".into(),
                thumbprint: "ab".repeat(32),
                not_before: t0() - Duration::minutes(10),
                not_after: t0() + Duration::hours(48),
                subject: "CN=test".into(),
                vault_key: None,
            },
            private_key: SealedRef { id: "key".into() },
        }),
        ..at(1)
    }
}

/// Another download from the same vault: another certificate and key.
fn other_credentials_seen() -> Observations {
    let mut observed = credentials_seen("vault-a");
    if let Some(CredentialsObserved::Parsed { facts, private_key }) = &mut observed.credentials {
        facts.thumbprint = "cd".repeat(32);
        *private_key = SealedRef { id: "key-2".into() };
    }
    observed.now = t0() + Duration::minutes(4);
    observed
}

fn passphrase_seen(length: usize) -> Observations {
    Observations {
        passphrase: Some(PassphraseObserved {
            length,
            printable_ascii: true,
            verifier_sealed: Some(SealedRef { id: "vf".into() }),
            sealed: Some(SealedRef { id: "pp".into() }),
            ..PassphraseObserved::default()
        }),
        ..at(2)
    }
}

/// A registration started: its request id drawn, nothing asked of the vault yet.
fn started_seen() -> Observations {
    Observations { request_id: Some("req-1".into()), ..at(3) }
}

/// The vault's answer to the registration started with `req-1`.
fn answered(answer: VaultAnswer) -> Observations {
    Observations { vault: Some(answer), request_id: Some("req-1".into()), ..at(3) }
}

fn registered_seen() -> Observations {
    answered(VaultAnswer::Registered { machine_id: "m-1".into(), vault: "vault-a".into(), registered_at: t0() })
}

fn refused_by_vault(reason: Reason) -> Observations {
    answered(VaultAnswer::Refused { reason, detail: "detail".into() })
}

/// Everything up to a registration started and not answered yet.
fn started() -> Given {
    let mut steps = history(Step::Passphrase);
    steps.push((Command::Register { endpoint_override: None }, started_seen()));
    given(steps)
}

/// The steps leading up to each phase, as recorded.
fn history(upto: Step) -> Vec<(Command, Observations)> {
    let all = vec![
        (Step::Folders, choose_folders(), folders_seen(100 * GIB)),
        (
            Step::Credentials,
            Command::LoadCredentials { file: "/tmp/v.VaultCredentials".into() },
            credentials_seen("vault-a"),
        ),
        (Step::Passphrase, Command::SetPassphrase { save_to: None }, passphrase_seen(20)),
        (Step::Register, Command::Register { endpoint_override: None }, started_seen()),
        (Step::Register, Command::Register { endpoint_override: None }, registered_seen()),
    ];
    let mut steps = Vec::new();
    let mut reached = false;
    for (step, command, observed) in all {
        if reached && step != upto {
            break;
        }
        steps.push((command, observed));
        reached |= step == upto;
    }
    steps
}

/// Given/when/then over decide and evolve.
struct Given {
    state: State,
}

fn given(steps: Vec<(Command, Observations)>) -> Given {
    let mut state = State::default();
    for (command, observed) in steps {
        let outcome = decide(&state, &command, &observed);
        assert!(matches!(outcome, Outcome::Accepted(_)), "the history must be accepted: {outcome:?}");
        state = state.evolve(&StepRecord { command, observed, outcome, build: None });
    }
    Given { state }
}

fn nothing() -> Given {
    given(vec![])
}

impl Given {
    fn when(&self, command: Command, observed: Observations) -> Then {
        let outcome = decide(&self.state, &command, &observed);
        let after = self.state.clone().evolve(&StepRecord { command, observed, outcome: outcome.clone(), build: None });
        Then { outcome, after }
    }
}

struct Then {
    outcome: Outcome,
    after: State,
}

impl Then {
    fn accepted(self) -> (Change, State) {
        match self.outcome {
            Outcome::Accepted(change) => (change, self.after),
            Outcome::Refused(r) => panic!("expected acceptance, got {:?}: {}", r.reason, r.message),
        }
    }

    /// Refused with `reason`; the message mentions each of `says`; the state keeps the failure.
    fn refused(self, reason: Reason, says: &[&str]) -> Refusal {
        let Outcome::Refused(refusal) = self.outcome else {
            panic!("expected {reason} refusal, got {:?}", self.outcome);
        };
        assert_eq!(refusal.reason, reason, "{}", refusal.message);
        for text in says {
            assert!(refusal.message.contains(text), "message {:?} should mention {text:?}", refusal.message);
        }
        assert!(!refusal.message.contains('\n'), "one line");
        let failure = self.after.last_refusal.expect("state keeps the last failure");
        assert_eq!((failure.reason, failure.message.as_str()), (reason, refusal.message.as_str()));
        refusal
    }
}

// ---- folders ----

#[test]
fn folders_are_accepted_with_enough_scratch_space_and_recorded() {
    let (change, state) = nothing().when(choose_folders(), folders_seen(5 * GIB)).accepted();
    let Change::FoldersChosen(folders) = change else { panic!("{change:?}") };
    assert_eq!((folders.backup_size_bytes, folders.scratch_free_bytes), (100 * GIB, 5 * GIB));
    assert_eq!(state.phase().name(), "folders_chosen");
    assert_eq!(state.next_step(), Some(Step::Credentials));
}

#[test]
fn scratch_space_below_five_percent_is_insufficient_and_says_how_much() {
    nothing()
        .when(choose_folders(), folders_seen(5 * GIB - 1))
        .refused(Reason::InsufficientScratchSpace, &["5.0 GiB", "100.0 GiB", "5%"]);
}

#[test]
fn exactly_five_percent_rounded_up_is_enough() {
    let command =
        Command::ChooseFolders { install_dir: "/opt/a".into(), scratch_dir: "/opt/b".into(), backup_size_bytes: 101 };
    nothing().when(command.clone(), folders_seen(6)).accepted();
    nothing().when(command, folders_seen(5)).refused(Reason::InsufficientScratchSpace, &[]);
}

#[test]
fn folder_paths_that_are_relative_equal_or_nested_are_invalid() {
    let cases = [
        ("opt/regent", "/var/cache", "absolute path"),
        ("/opt/regent", "/opt/regent", "must differ"),
        ("/opt/regent", "/opt/regent/cache", "inside the other"),
        ("/var/x/../cache/sub", "/var/cache", "inside the other"),
        ("/opt/regent/", "/opt/./regent", "must differ"),
    ];
    for (install, scratch, says) in cases {
        let command =
            Command::ChooseFolders { install_dir: install.into(), scratch_dir: scratch.into(), backup_size_bytes: GIB };
        assert!(precheck(&State::default(), &command).is_some(), "{install} {scratch}");
        nothing().when(command, folders_seen(GIB)).refused(Reason::InvalidFolder, &[says]);
    }
}

#[test]
fn a_zero_backup_size_is_invalid() {
    let command = Command::ChooseFolders { install_dir: "/a".into(), scratch_dir: "/b".into(), backup_size_bytes: 0 };
    nothing().when(command, folders_seen(GIB)).refused(Reason::InvalidFolder, &["more than 0"]);
}

#[test]
fn unusable_folders_are_invalid_with_the_cause() {
    let mut not_dir = dir(GIB);
    not_dir.is_dir = false;
    let mut read_only = dir(GIB);
    read_only.writable = false;
    let mut cannot_create = dir(GIB);
    cannot_create.problem = Some("cannot create it: permission denied".into());
    for (facts, says) in
        [(not_dir, "not a directory"), (read_only, "not writable"), (cannot_create, "permission denied")]
    {
        let observed = Observations { install: Some(facts.clone()), scratch: Some(dir(100 * GIB)), ..at(0) };
        nothing().when(choose_folders(), observed).refused(Reason::InvalidFolder, &["install", says]);
        let observed = Observations { install: Some(dir(GIB)), scratch: Some(facts), ..at(0) };
        nothing().when(choose_folders(), observed).refused(Reason::InvalidFolder, &["scratch", says]);
    }
}

#[test]
fn a_scratch_folder_on_a_network_share_is_refused() {
    for fs in ["nfs", "cifs", "smb2"] {
        let mut share = dir(1000 * GIB);
        share.network = true;
        share.filesystem = fs.into();
        let observed = Observations { install: Some(dir(GIB)), scratch: Some(share), ..at(0) };
        nothing().when(choose_folders(), observed).refused(Reason::InvalidFolder, &["network share", fs]);
    }
}

#[test]
fn folders_that_nest_through_a_symlink_are_caught_on_the_resolved_paths() {
    let mut install = dir(GIB);
    install.resolved = Some("/data/regent".into());
    let mut scratch = dir(100 * GIB);
    scratch.resolved = Some("/data/regent/cache".into());
    let observed = Observations { install: Some(install), scratch: Some(scratch), ..at(0) };
    nothing().when(choose_folders(), observed).refused(Reason::InvalidFolder, &["symbolic links"]);
}

// ---- proxy ----

fn set_proxy(host: &str, port: u32, user: Option<&str>, password: bool) -> Command {
    Command::SetProxy { host: host.into(), port, username: user.map(String::from), password_given: password }
}

#[test]
fn a_proxy_can_be_set_and_cleared_at_any_time_and_its_password_is_only_a_reference() {
    let observed = Observations { proxy_password: Some(SealedRef { id: "sealed-pw".into() }), ..at(0) };
    let (change, state) = nothing().when(set_proxy("proxy.corp", 3128, Some("ops"), true), observed).accepted();
    assert!(matches!(change, Change::ProxySet(Proxy { port: 3128, .. })));
    assert_eq!(state.proxy.unwrap().password, Some(SealedRef { id: "sealed-pw".into() }));
    let (_, state) = given(history(Step::Register)).when(set_proxy("10.0.0.5", 8080, None, false), at(9)).accepted();
    assert!(state.proxy.is_some());
    let (_, state) = given(history(Step::Register)).when(Command::ClearProxy, at(9)).accepted();
    assert_eq!(state.proxy, None);
}

#[test]
fn bad_proxies_are_invalid() {
    let cases = [
        (set_proxy("", 3128, None, false), "not a host"),
        (set_proxy("bad host", 3128, None, false), "not a host"),
        (set_proxy("-x.corp", 3128, None, false), "not a host"),
        (set_proxy("proxy", 0, None, false), "out of range"),
        (set_proxy("proxy", 65536, None, false), "out of range"),
        (set_proxy("proxy", 3128, Some("ops"), false), "needs a password"),
        (set_proxy("proxy", 3128, None, true), "needs a user"),
        (set_proxy("proxy", 3128, Some("a:b"), true), "without ':'"),
    ];
    for (command, says) in cases {
        nothing().when(command, at(0)).refused(Reason::InvalidProxy, &[says]);
    }
    nothing().when(set_proxy("::1", 3128, None, false), at(0)).accepted();
}

// ---- credentials ----

#[test]
fn credentials_need_folders_first() {
    let refusal = nothing()
        .when(Command::LoadCredentials { file: "/tmp/x.VaultCredentials".into() }, credentials_seen("v"))
        .refused(Reason::StepOutOfOrder, &["folders"]);
    assert_eq!(refusal.next, [Next::Run(Step::Folders), Next::Run(Step::Credentials)]);
}

#[test]
fn loaded_credentials_record_the_vault_validity_and_thumbprint() {
    let (change, state) = given(history(Step::Folders))
        .when(Command::LoadCredentials { file: "/tmp/v.VaultCredentials".into() }, credentials_seen("vault-a"))
        .accepted();
    let Change::CredentialsLoaded(loaded) = change else { panic!() };
    assert_eq!(loaded.facts.vault.name, "vault-a");
    assert_eq!(loaded.facts.thumbprint, "ab".repeat(32));
    assert_eq!(state.phase().name(), "credentials_loaded");
}

#[test]
fn unreadable_and_invalid_credentials_are_refused_with_their_codes() {
    let load = || Command::LoadCredentials { file: "/tmp/v.VaultCredentials".into() };
    for (kind, says) in [
        (UnreadableKind::Missing, "does not exist"),
        (UnreadableKind::PermissionDenied, "permission denied"),
        (UnreadableKind::IsDirectory, "directory"),
        (UnreadableKind::TooLarge, "too large"),
    ] {
        let observed = Observations {
            credentials: Some(CredentialsObserved::Unreadable { kind, detail: "2 MiB".into() }),
            ..at(1)
        };
        given(history(Step::Folders))
            .when(load(), observed)
            .refused(Reason::CredentialsUnreadable, &[says, "Unable to read"]);
    }
    let observed = Observations {
        credentials: Some(CredentialsObserved::Invalid {
            detail: "the root element is not RSBackupVaultAADCreds".into(),
        }),
        ..at(1)
    };
    given(history(Step::Folders))
        .when(load(), observed)
        .refused(Reason::CredentialsInvalid, &["Invalid vault credentials", "RSBackupVaultAADCreds"]);
}

#[test]
fn credentials_outside_their_validity_at_the_recorded_time_are_expired() {
    let load = || Command::LoadCredentials { file: "/tmp/v.VaultCredentials".into() };
    let mut late = credentials_seen("vault-a");
    late.now = t0() + Duration::hours(49);
    given(history(Step::Folders)).when(load(), late).refused(Reason::CredentialsExpired, &["has expired"]);
    let mut early = credentials_seen("vault-a");
    early.now = t0() - Duration::hours(1);
    given(history(Step::Folders))
        .when(load(), early)
        .refused(Reason::CredentialsExpired, &["not valid until", "clock"]);
}

#[test]
fn once_registered_only_credentials_of_the_same_vault_are_accepted() {
    let load = || Command::LoadCredentials { file: "/tmp/v.VaultCredentials".into() };
    given(history(Step::Register))
        .when(load(), credentials_seen("vault-b"))
        .refused(Reason::CredentialsWrongVault, &["vault-b", "vault-a"]);
    given(history(Step::Register)).when(load(), credentials_seen("vault-a")).accepted();
}

// ---- passphrase ----

#[test]
fn the_passphrase_needs_folders_and_credentials_first() {
    nothing()
        .when(Command::SetPassphrase { save_to: None }, passphrase_seen(20))
        .refused(Reason::StepOutOfOrder, &["folders"]);
    let refusal = given(history(Step::Folders))
        .when(Command::SetPassphrase { save_to: None }, passphrase_seen(20))
        .refused(Reason::StepOutOfOrder, &["credentials"]);
    assert_eq!(refusal.next, [Next::Run(Step::Credentials), Next::Run(Step::Passphrase)]);
}

#[test]
fn a_passphrase_shorter_than_16_characters_is_too_short() {
    given(history(Step::Credentials))
        .when(Command::SetPassphrase { save_to: None }, passphrase_seen(15))
        .refused(Reason::PassphraseTooShort, &["15 characters", "at least 16"]);
    given(history(Step::Credentials)).when(Command::SetPassphrase { save_to: None }, passphrase_seen(16)).accepted();
}

#[test]
fn a_passphrase_with_characters_outside_printable_ascii_is_invalid() {
    let mut observed = passphrase_seen(30);
    if let Some(p) = &mut observed.passphrase {
        p.printable_ascii = false;
        p.verifier_sealed = None;
    }
    given(history(Step::Credentials))
        .when(Command::SetPassphrase { save_to: None }, observed)
        .refused(Reason::PassphraseInvalid, &["printable ASCII"]);
}

#[test]
fn a_generated_passphrase_records_where_it_was_saved_and_warns_inside_the_folders() {
    let save = |path: &str| Command::SetPassphrase { save_to: Some(PathBuf::from(path)) };
    let saved = |path: &str| {
        let mut observed = passphrase_seen(40);
        if let Some(p) = &mut observed.passphrase {
            p.saved_to = Some(path.into());
        }
        observed
    };
    let (change, state) =
        given(history(Step::Credentials)).when(save("/root/safe/pp.txt"), saved("/root/safe/pp.txt")).accepted();
    let Change::PassphraseCreated(encryption) = change else { panic!() };
    assert_eq!(encryption.origin, PassphraseOrigin::Generated { saved_to: "/root/safe/pp.txt".into() });
    assert!(encryption.warnings.is_empty());
    assert_eq!(state.phase().name(), "passphrase_created");
    let (change, _) = given(history(Step::Credentials))
        .when(save("/var/cache/regent/pp.txt"), saved("/var/cache/regent/pp.txt"))
        .accepted();
    let Change::PassphraseCreated(encryption) = change else { panic!() };
    assert_eq!(encryption.warnings.len(), 1);
    assert!(encryption.warnings[0].contains("scratch folder"));
}

#[test]
fn a_generated_passphrase_that_could_not_be_saved_is_refused() {
    let mut observed = passphrase_seen(40);
    if let Some(p) = &mut observed.passphrase {
        p.save_problem = Some("the file exists; it is never overwritten".into());
        p.verifier_sealed = None;
    }
    given(history(Step::Credentials))
        .when(Command::SetPassphrase { save_to: Some("/root/pp.txt".into()) }, observed)
        .refused(Reason::PassphraseInvalid, &["could not be saved", "never overwritten"]);
}

// ---- register ----

#[test]
fn register_needs_every_earlier_step_naming_the_first_missing() {
    let register = || Command::Register { endpoint_override: None };
    nothing().when(register(), registered_seen()).refused(Reason::StepOutOfOrder, &["folders"]);
    given(history(Step::Folders)).when(register(), registered_seen()).refused(Reason::StepOutOfOrder, &["credentials"]);
    given(history(Step::Credentials))
        .when(register(), registered_seen())
        .refused(Reason::StepOutOfOrder, &["passphrase"]);
}

#[test]
fn a_registration_is_started_with_its_request_id_before_the_vault_is_asked() {
    let (change, state) =
        given(history(Step::Passphrase)).when(Command::Register { endpoint_override: None }, started_seen()).accepted();
    let Change::RegistrationAttempted(attempt) = change else { panic!("{change:?}") };
    assert_eq!((attempt.request_id.as_str(), attempt.thumbprint.as_str()), ("req-1", "ab".repeat(32).as_str()));
    assert_eq!(state.attempt.as_ref().map(|a| a.request_id.as_str()), Some("req-1"));
    assert_eq!(state.phase().name(), "passphrase_created", "started is not registered");
}

#[test]
fn a_registration_records_the_vault_machine_and_time() {
    let (change, state) = started().when(Command::Register { endpoint_override: None }, registered_seen()).accepted();
    let Change::Registered(registration) = change else { panic!() };
    assert_eq!((registration.vault.as_str(), registration.machine_id.as_str()), ("vault-a", "m-1"));
    assert_eq!(registration.thumbprint, "ab".repeat(32));
    assert_eq!(registration.request_id.as_deref(), Some("req-1"));
    assert_eq!(registration.private_key.as_ref().map(|k| k.id.as_str()), Some("key"));
    assert_eq!(state.phase().name(), "registered");
    assert_eq!(state.next_step(), None);
    assert_eq!(state.attempt, None, "the attempt ended with its outcome");
}

#[test]
fn a_log_written_before_registrations_were_started_still_decides_the_same() {
    // Schema 2: the vault's answer came with no recorded start and no request id.
    let observed = Observations { request_id: None, ..registered_seen() };
    let (change, _) =
        given(history(Step::Passphrase)).when(Command::Register { endpoint_override: None }, observed).accepted();
    let Change::Registered(registration) = change else { panic!() };
    assert_eq!((registration.private_key, registration.request_id), (None, None));
}

#[test]
fn the_vaults_refusals_are_recorded_with_their_codes() {
    for (reason, says) in [
        (Reason::CredentialsSuperseded, "no longer valid: detail."),
        (Reason::CredentialsExpired, "expired"),
        (Reason::CredentialsInvalid, "Invalid vault credentials"),
        (Reason::CredentialsWrongVault, "Quick Start"),
        (Reason::ProxyAuthFailed, "proxy refused"),
        (Reason::VaultUnreachable, "could not be reached"),
        (Reason::VaultError, "refused the registration"),
        (Reason::RequestIdConflict, "copied from another server"),
        (Reason::MachineRemoved, "removed the machine"),
    ] {
        started()
            .when(Command::Register { endpoint_override: None }, refused_by_vault(reason.clone()))
            .refused(reason, &[says]);
    }
}

#[test]
fn a_refusal_for_good_ends_the_attempt_and_any_other_keeps_its_request_id() {
    for reason in Reason::ALL {
        let then = started().when(Command::Register { endpoint_override: None }, refused_by_vault(reason.clone()));
        let kept = then.after.attempt.as_ref().map(|a| a.request_id.clone());
        let ends = matches!(
            reason,
            Reason::CredentialsUnreadable
                | Reason::CredentialsInvalid
                | Reason::CredentialsExpired
                | Reason::CredentialsSuperseded
                | Reason::CredentialsWrongVault
                | Reason::RequestIdConflict
                | Reason::MachineRemoved
                | Reason::AlreadyRegistered
        );
        assert_eq!(kept, (!ends).then(|| "req-1".to_string()), "{reason}");
        assert_eq!(then.after.attempt_answered, !ends, "{reason}");
    }
}

#[test]
fn other_credentials_start_a_new_registration_only_once_the_vault_answered_the_old_one() {
    let other = || (Command::LoadCredentials { file: "/tmp/w.VaultCredentials".into() }, other_credentials_seen());
    // No outcome recorded (a run killed while the vault was asked): the attempt keeps its own
    // credentials, and the machine it makes is registered with those.
    let (command, observed) = other();
    let state = started().when(command, observed).accepted().1;
    assert_eq!(state.attempt.as_ref().map(|a| a.thumbprint.clone()), Some("ab".repeat(32)));
    let (change, _) = Given { state }.when(Command::Register { endpoint_override: None }, registered_seen()).accepted();
    let Change::Registered(registration) = change else { panic!() };
    assert_eq!(registration.thumbprint, "ab".repeat(32), "registered with the attempt's credentials");
    // An outcome recorded (the vault unreachable): other credentials end the attempt.
    let state =
        started().when(Command::Register { endpoint_override: None }, refused_by_vault(Reason::VaultUnreachable)).after;
    assert!(state.attempt.is_some());
    let (command, observed) = other();
    let state = Given { state }.when(command, observed).accepted().1;
    assert_eq!(state.attempt, None);
}

#[test]
fn an_answer_for_another_request_than_the_open_one_is_not_taken() {
    let observed = Observations { request_id: Some("req-other".into()), ..registered_seen() };
    started()
        .when(Command::Register { endpoint_override: None }, observed)
        .refused(Reason::StepOutOfOrder, &["changed while the vault was asked"]);
}

#[test]
fn credentials_expired_by_registration_time_are_refused_without_the_vault() {
    let observed = Observations { now: t0() + Duration::hours(72), ..Observations::default() };
    given(history(Step::Passphrase))
        .when(Command::Register { endpoint_override: None }, observed)
        .refused(Reason::CredentialsExpired, &["expired"]);
}

#[test]
fn a_sealed_key_that_cannot_be_opened_is_reported_not_crashed_on() {
    let observed = Observations {
        unsealable: Some(Unsealable {
            secret: SecretKind::CredentialsPrivateKey,
            detail: "machine key missing".into(),
        }),
        request_id: Some("req-1".into()),
        ..at(3)
    };
    started()
        .when(Command::Register { endpoint_override: None }, observed)
        .refused(Reason::CredentialsUnreadable, &["machine key missing", "load the vault credentials file again"]);
}

#[test]
fn a_registered_machine_refuses_another_registration_until_unregistered() {
    let register = || Command::Register { endpoint_override: None };
    given(history(Step::Register))
        .when(register(), registered_seen())
        .refused(Reason::AlreadyRegistered, &["unregister"]);
    let mut steps = history(Step::Register);
    steps.push((Command::Unregister, at(5)));
    let state = given(steps).state;
    assert_eq!(state.attempt, None);
    // Registering again starts a new registration, with a new request id.
    let observed = Observations { request_id: Some("req-2".into()), ..at(6) };
    let (change, state) = Given { state }.when(register(), observed).accepted();
    assert!(matches!(change, Change::RegistrationAttempted(ref a) if a.request_id == "req-2"));
    let answer = Observations { request_id: Some("req-2".into()), ..registered_seen() };
    let (change, state) = Given { state }.when(register(), answer).accepted();
    assert!(matches!(change, Change::Registered(_)));
    assert_eq!(state.phase().name(), "registered");
}

#[test]
fn unregistering_an_unregistered_machine_is_out_of_order() {
    nothing().when(Command::Unregister, at(0)).refused(Reason::StepOutOfOrder, &["not registered"]);
}

#[test]
fn earlier_steps_after_registration_point_to_change_properties() {
    let refusal = given(history(Step::Register))
        .when(choose_folders(), folders_seen(100 * GIB))
        .refused(Reason::AlreadyRegistered, &["scratch folder can still be moved"]);
    assert_eq!(refusal.next, [Next::Run(Step::ScratchFolder)]);
    let refusal = given(history(Step::Register))
        .when(Command::SetPassphrase { save_to: None }, passphrase_seen(20))
        .refused(Reason::AlreadyRegistered, &["security PIN"]);
    assert_eq!(refusal.next, [Next::GetPin, Next::Run(Step::PassphraseChange)]);
}

// ---- change properties ----

#[test]
fn the_scratch_folder_moves_under_the_same_rules() {
    let moved = |free| Observations { scratch: Some(dir(free)), ..at(5) };
    let command = || Command::MoveScratch { scratch_dir: "/srv/scratch".into() };
    let (_, state) = given(history(Step::Register)).when(command(), moved(5 * GIB)).accepted();
    assert_eq!(state.folders.unwrap().scratch_dir, PathBuf::from("/srv/scratch"));
    given(history(Step::Register)).when(command(), moved(GIB)).refused(Reason::InsufficientScratchSpace, &[]);
    given(history(Step::Register))
        .when(Command::MoveScratch { scratch_dir: "/opt/regent/cache".into() }, moved(5 * GIB))
        .refused(Reason::InvalidFolder, &["inside"]);
    nothing().when(command(), moved(5 * GIB)).refused(Reason::StepOutOfOrder, &["folders"]);
}

fn throttle(start: (u32, u32), end: (u32, u32), work: u64, non_work: u64) -> Command {
    Command::SetThrottling {
        work_days: Weekday::parse_set("mon-fri").unwrap(),
        work_start: NaiveTime::from_hms_opt(start.0, start.1, 0).unwrap(),
        work_end: NaiveTime::from_hms_opt(end.0, end.1, 0).unwrap(),
        work_bps: work,
        non_work_bps: non_work,
    }
}

#[test]
fn throttling_within_range_is_set_and_outside_it_is_invalid() {
    let (_, state) = nothing().when(throttle((9, 0), (17, 0), 512_000, 1_023_000_000), at(0)).accepted();
    assert_eq!(state.throttling.as_ref().unwrap().work_days.len(), 5);
    let (_, state) = given(vec![]).when(Command::ThrottlingOff, at(1)).accepted();
    assert_eq!(state.throttling, None);
    for (command, says) in [
        (throttle((9, 0), (17, 0), 511_999, 1_000_000), "outside the allowed range"),
        (throttle((9, 0), (17, 0), 1_000_000, 1_023_000_001), "non-work bandwidth"),
        (throttle((17, 0), (9, 0), 1_000_000, 1_000_000), "start before"),
        (throttle((9, 0), (9, 0), 1_000_000, 1_000_000), "start before"),
    ] {
        nothing().when(command, at(0)).refused(Reason::InvalidThrottling, &[says]);
    }
}

#[test]
fn work_days_parse_ranges_and_lists() {
    assert_eq!(Weekday::parse_set("mon-fri").unwrap().len(), 5);
    assert_eq!(Weekday::parse_set("sat,sun").unwrap(), vec![Weekday::Sat, Weekday::Sun]);
    assert_eq!(Weekday::parse_set("Monday,wed-fri").unwrap().len(), 4);
    use Weekday::*;
    // A range over the weekend is the days it runs through, not the days outside it.
    assert_eq!(Weekday::parse_set("fri-mon").unwrap(), vec![Mon, Fri, Sat, Sun]);
    assert_eq!(Weekday::describe_set(&Weekday::parse_set("fri-mon").unwrap()), "Fri, Sat, Sun, Mon");
    assert_eq!(Weekday::parse_set("mon,tue,fri").unwrap(), vec![Mon, Tue, Fri]);
    assert_eq!(Weekday::describe_set(&[Mon, Tue, Fri]), "Mon, Tue, Fri");
    assert_eq!(Weekday::parse_set("sun-sat").unwrap().len(), 7);
    assert_eq!(Weekday::describe_set(&Weekday::ALL), "every day (Mon to Sun)");
    assert_eq!(Weekday::parse_set("wed-wed").unwrap(), vec![Wed]);
    assert_eq!(Weekday::parse_set("sat-sun,tue").unwrap(), vec![Tue, Sat, Sun]);
    assert_eq!(Weekday::describe_set(&[Tue, Sat, Sun]), "Tue, Sat, Sun");
    assert_eq!(Weekday::describe_set(&[Mon, Tue, Sat, Sun]), "Sat, Sun, Mon, Tue");
    assert_eq!(Weekday::describe_set(&Weekday::parse_set("thu-tue").unwrap()), "Thu, Fri, Sat, Sun, Mon, Tue");
    for bad in ["", ",", "funday", "mo", "fri-", "mon-xyz"] {
        assert!(Weekday::parse_set(bad).is_err(), "{bad}");
    }
}

fn pin(issued_minutes_before: i64) -> PinAnswer {
    PinAnswer::Valid { issued_at: t0() + Duration::minutes(10 - issued_minutes_before) }
}

#[test]
fn a_passphrase_change_needs_a_pin_issued_within_five_minutes() {
    let change = || Command::ChangePassphrase { save_to: None };
    let with_pin = |answer| {
        let mut observed = passphrase_seen(24);
        observed.now = t0() + Duration::minutes(10);
        observed.pin = Some(answer);
        observed
    };
    let (change_made, _) = given(history(Step::Register)).when(change(), with_pin(pin(4))).accepted();
    assert!(matches!(change_made, Change::PassphraseChanged(_)));
    given(history(Step::Register))
        .when(change(), with_pin(pin(6)))
        .refused(Reason::SecurityPinInvalid, &["more than 5 minutes"]);
    given(history(Step::Register))
        .when(
            change(),
            with_pin(PinAnswer::Refused { reason: Reason::SecurityPinInvalid, detail: "unknown PIN".into() }),
        )
        .refused(Reason::SecurityPinInvalid, &["unknown PIN", "5 minutes"]);
    given(history(Step::Passphrase))
        .when(change(), with_pin(pin(1)))
        .refused(Reason::StepOutOfOrder, &["once registered"]);
    given(history(Step::Register))
        .when(change(), with_pin(pin(-6)))
        .refused(Reason::SecurityPinInvalid, &["security PIN"]);
}

#[test]
fn a_passphrase_change_is_refused_for_local_reasons_before_the_vault_is_asked() {
    let change = || Command::ChangePassphrase { save_to: None };
    // A PIN that cannot be one: refused without asking the vault (no PIN answer observed).
    let observed = Observations { pin_problem: Some("a security PIN is 8 digits".into()), ..at(10) };
    given(history(Step::Register)).when(change(), observed).refused(Reason::SecurityPinInvalid, &["8 digits"]);
    // A passphrase too short, or not ASCII: refused on its own facts, with no PIN answer.
    given(history(Step::Register)).when(change(), passphrase_seen(5)).refused(Reason::PassphraseTooShort, &["16"]);
    let mut observed = passphrase_seen(30);
    if let Some(p) = &mut observed.passphrase {
        p.printable_ascii = false;
    }
    given(history(Step::Register)).when(change(), observed).refused(Reason::PassphraseInvalid, &["ASCII"]);
    // A file to save a generated one to that exists already.
    let mut observed = passphrase_seen(32);
    if let Some(p) = &mut observed.passphrase {
        p.save_problem = Some("it already exists".into());
    }
    given(history(Step::Register))
        .when(Command::ChangePassphrase { save_to: Some("/root/pp.txt".into()) }, observed)
        .refused(Reason::PassphraseInvalid, &["already exists"]);
}

#[test]
fn a_passphrase_of_whitespace_with_whitespace_at_its_ends_or_from_an_unusable_input_is_invalid() {
    let set = || Command::SetPassphrase { save_to: None };
    let with = |edit: fn(&mut PassphraseObserved)| {
        let mut observed = passphrase_seen(20);
        if let Some(p) = &mut observed.passphrase {
            edit(p);
        }
        observed
    };
    given(history(Step::Credentials))
        .when(set(), with(|p| p.blank = true))
        .refused(Reason::PassphraseInvalid, &["only whitespace"]);
    given(history(Step::Credentials))
        .when(set(), with(|p| p.edge_whitespace = true))
        .refused(Reason::PassphraseInvalid, &["starts or ends with whitespace"]);
    given(history(Step::Credentials))
        .when(set(), with(|p| p.input_problem = Some("it is more than one line".into())))
        .refused(Reason::PassphraseInvalid, &["more than one line", "1 KiB"]);
}

#[test]
fn a_proxy_password_from_an_unusable_input_is_refused() {
    let observed = Observations { proxy_password_problem: Some("it is more than 1024 bytes".into()), ..at(1) };
    nothing()
        .when(
            Command::SetProxy { host: "proxy".into(), port: 3128, username: Some("u".into()), password_given: true },
            observed,
        )
        .refused(Reason::InvalidProxy, &["more than 1024 bytes"]);
}

#[test]
fn paths_that_are_not_utf8_are_refused_as_the_step_they_name() {
    let folders = |install: &str| Command::ChooseFolders {
        install_dir: install.into(),
        scratch_dir: "/var/cache/regent".into(),
        backup_size_bytes: GIB,
    };
    nothing()
        .when(folders("/opt/not-\u{fffd}-utf8"), folders_seen(GIB))
        .refused(Reason::InvalidFolder, &["install folder's path", "UTF-8"]);
    // Control characters are the filesystem's to allow; views show them escaped.
    nothing().when(folders("/opt/re\ngent"), folders_seen(GIB)).accepted();
    given(history(Step::Folders))
        .when(Command::LoadCredentials { file: "/tmp/\u{fffd}.VaultCredentials".into() }, credentials_seen("v"))
        .refused(Reason::CredentialsUnreadable, &["not valid UTF-8"]);
    given(history(Step::Credentials))
        .when(Command::SetPassphrase { save_to: Some("/root/\u{fffd}".into()) }, passphrase_seen(32))
        .refused(Reason::PassphraseInvalid, &["UTF-8"]);
}

#[test]
fn a_missing_folder_is_accepted_only_where_it_can_be_created() {
    let missing =
        |creatable: bool| FolderFacts { existed: false, is_dir: false, writable: false, creatable, ..dir(GIB) };
    let observed =
        |creatable| Observations { install: Some(missing(creatable)), scratch: Some(dir(100 * GIB)), ..at(0) };
    nothing().when(choose_folders(), observed(true)).accepted();
    nothing().when(choose_folders(), observed(false)).refused(Reason::InvalidFolder, &["cannot be created"]);
}

// ---- state ----

#[test]
fn a_later_success_of_the_same_step_clears_the_failure_but_another_step_does_not() {
    let g = given(history(Step::Folders));
    let failed = g.when(
        Command::LoadCredentials { file: "/x.VaultCredentials".into() },
        Observations { credentials: Some(CredentialsObserved::Invalid { detail: "x".into() }), ..at(1) },
    );
    let state = failed.after;
    assert!(state.last_refusal.is_some());
    let state = Given { state }.when(set_proxy("p", 1, None, false), at(2)).accepted().1;
    assert!(state.last_refusal.is_some(), "a proxy change does not resolve a credentials failure");
    let state = Given { state }
        .when(Command::LoadCredentials { file: "/x.VaultCredentials".into() }, credentials_seen("vault-a"))
        .accepted()
        .1;
    assert_eq!(state.last_refusal, None);
}

#[test]
fn reason_codes_are_the_names_of_the_spec() {
    let spec = "invalid_folder insufficient_scratch_space invalid_proxy credentials_unreadable credentials_invalid \
        credentials_expired credentials_superseded credentials_wrong_vault passphrase_too_short passphrase_invalid \
        proxy_auth_failed vault_unreachable vault_tls_failed vault_error already_registered step_out_of_order security_pin_invalid \
        invalid_throttling request_id_conflict machine_removed";
    let codes: Vec<String> =
        Reason::ALL.iter().map(|r| serde_json::to_value(r).unwrap().as_str().unwrap().to_string()).collect();
    assert_eq!(codes, spec.split_whitespace().collect::<Vec<_>>());
    for reason in Reason::ALL {
        assert_eq!(serde_json::to_value(&reason).unwrap(), reason.code());
    }
}

#[test]
fn hostile_recorded_times_are_decided_without_panicking() {
    // A replayed log can carry any time; decide must refuse, never overflow.
    let extremes = [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC];
    for now in extremes {
        for issued_at in extremes {
            let mut observed = passphrase_seen(24);
            observed.now = now;
            observed.pin = Some(PinAnswer::Valid { issued_at });
            let state = &given(history(Step::Register)).state;
            let outcome = decide(state, &Command::ChangePassphrase { save_to: None }, &observed);
            assert_eq!(matches!(outcome, Outcome::Accepted(_)), now == issued_at, "{now} {issued_at}");
        }
        let mut late = credentials_seen("vault-a");
        late.now = now;
        let state = &given(history(Step::Folders)).state;
        let outcome = decide(state, &Command::LoadCredentials { file: "/v.VaultCredentials".into() }, &late);
        assert!(matches!(outcome, Outcome::Refused(ref r) if r.reason == Reason::CredentialsExpired));
    }
}

#[test]
fn a_scratch_folder_moved_onto_a_link_to_the_install_folder_is_refused() {
    let mut install = dir(GIB);
    install.resolved = Some("/opt/regent".into());
    let mut scratch = dir(100 * GIB);
    scratch.resolved = Some("/opt/regent".into());
    let observed = Observations { install: Some(install), scratch: Some(scratch), ..at(5) };
    given(history(Step::Register))
        .when(Command::MoveScratch { scratch_dir: "/srv/link-to-install".into() }, observed)
        .refused(Reason::InvalidFolder, &["symbolic links"]);
}

#[test]
fn no_refusal_message_holds_a_command_line_or_a_flag() {
    // Every reason decide can reach from these steps: the log records what happened and what to do
    // next as facts; the command lines and flags are the interface's (they change between builds).
    let mut messages = Vec::new();
    let mut push = |then: Then| {
        if let Outcome::Refused(r) = then.outcome {
            messages.push(r.message);
        }
    };
    for reason in Reason::ALL {
        push(started().when(Command::Register { endpoint_override: None }, refused_by_vault(reason)));
    }
    push(nothing().when(Command::Register { endpoint_override: None }, registered_seen()));
    push(given(history(Step::Register)).when(Command::Register { endpoint_override: None }, registered_seen()));
    push(given(history(Step::Register)).when(choose_folders(), folders_seen(GIB)));
    push(given(history(Step::Register)).when(Command::SetPassphrase { save_to: None }, passphrase_seen(20)));
    push(given(history(Step::Passphrase)).when(Command::ChangePassphrase { save_to: None }, passphrase_seen(20)));
    push(given(history(Step::Credentials)).when(Command::SetPassphrase { save_to: None }, passphrase_seen(3)));
    let observed = Observations { pin_problem: Some("a security PIN is 8 digits".into()), ..at(10) };
    push(given(history(Step::Register)).when(Command::ChangePassphrase { save_to: None }, observed));
    push(nothing().when(
        Command::SetProxy { host: "p".into(), port: 1, username: Some("u".into()), password_given: false },
        at(0),
    ));
    assert!(messages.len() > 20, "{messages:?}");
    for message in &messages {
        assert!(!message.contains("`regent") && !message.contains("regent ") && !message.contains(" --"), "{message}");
    }
}

proptest::proptest! {
    /// What the wizard offers as the largest backup for the free space it sees is the largest that
    /// the folders rule then accepts.
    #[test]
    fn the_largest_backup_for_free_space_is_the_largest_the_rule_accepts(free in 0u64..=u64::MAX / 20) {
        use regent_engine::decide::{largest_backup_bytes, required_scratch_bytes};
        let largest = largest_backup_bytes(free);
        proptest::prop_assert!(required_scratch_bytes(largest) <= free);
        proptest::prop_assert!(required_scratch_bytes(largest + 1) > free);
    }
}

// ---- issue 14: settings changed after registration, and a status that always answers ----

#[test]
fn a_pin_check_that_failed_before_the_vault_judged_it_is_never_security_pin_invalid() {
    let change = || Command::ChangePassphrase { save_to: None };
    let with_answer = |reason: Reason| {
        let mut observed = passphrase_seen(24);
        observed.pin = Some(PinAnswer::Refused { reason, detail: "cannot reach https://v: the certificate".into() });
        observed
    };
    let refusal = given(history(Step::Register))
        .when(change(), with_answer(Reason::VaultTlsFailed))
        .refused(Reason::VaultTlsFailed, &["TLS", "not sent", "stays good", "the certificate"]);
    assert!(!refusal.next.contains(&Next::GetPin), "a good PIN is not thrown away: {:?}", refusal.next);
    given(history(Step::Register))
        .when(change(), with_answer(Reason::VaultUnreachable))
        .refused(Reason::VaultUnreachable, &["could not be reached"]);
    given(history(Step::Register))
        .when(change(), with_answer(Reason::ProxyAuthFailed))
        .refused(Reason::ProxyAuthFailed, &["proxy refused"]);
    // The registration's TLS failure is its own reason too, and keeps the attempt open.
    let then = started().when(Command::Register { endpoint_override: None }, refused_by_vault(Reason::VaultTlsFailed));
    assert!(then.after.attempt.is_some());
    then.refused(Reason::VaultTlsFailed, &["TLS"]);
}

#[test]
fn a_new_proxy_the_vault_cannot_be_reached_through_for_its_password_is_not_set() {
    let with_probe = |probe: ProbeAnswer| Observations {
        proxy_password: Some(SealedRef { id: "new-pw".into() }),
        vault_probe: Some(probe),
        ..at(9)
    };
    let registered = given(history(Step::Register));
    let refused = registered.when(
        set_proxy("proxy.corp", 3128, Some("ops"), true),
        with_probe(ProbeAnswer::Failed { reason: Reason::ProxyAuthFailed, detail: "HTTP 407".into() }),
    );
    assert_eq!(refused.after.proxy, None, "the proxy setting is unchanged");
    refused.refused(Reason::ProxyAuthFailed, &["proxy.corp:3128", "HTTP 407", "unchanged"]);
    let (_, state) =
        registered.when(set_proxy("proxy.corp", 3128, Some("ops"), true), with_probe(ProbeAnswer::Reached)).accepted();
    assert_eq!(state.proxy.map(|p| p.password), Some(Some(SealedRef { id: "new-pw".into() })));
    // The vault down is not the proxy's fault: set (the interface warns).
    let down = ProbeAnswer::Failed { reason: Reason::VaultUnreachable, detail: "connection refused".into() };
    registered.when(set_proxy("proxy.corp", 3128, Some("ops"), true), with_probe(down)).accepted();
    // A log without a probe (before this build, or not registered) decides as before.
    registered.when(set_proxy("proxy.corp", 3128, None, false), at(9)).accepted();
}

#[test]
fn status_shows_the_vault_and_the_credentials_before_and_after_registration_and_what_the_vault_said_of_them() {
    use regent_engine::projections::{properties_at, status_at};
    let head = regent_store::Head::EMPTY;
    let loaded = given(history(Step::Credentials)).state;
    let status = status_at(&loaded, head, t0());
    let detail = status.vault_detail.clone().unwrap();
    assert_eq!((detail.name.as_str(), detail.registered, detail.from), ("vault-a", false, "credentials"));
    assert_eq!(status.vault, None, "`vault` stays the registered vault only");
    let credentials = status.credentials.unwrap();
    assert_eq!(credentials.state, "valid");
    let expires = credentials.expires_at;
    assert_eq!(status_at(&loaded, head, expires + Duration::seconds(1)).credentials.unwrap().state, "expired");
    let view = properties_at(&loaded, expires + Duration::seconds(1)).credentials.unwrap();
    assert!(view.expired && view.validity == "expired");
    assert!(!properties_at(&loaded, t0()).credentials.unwrap().expired);

    // The vault refused a registration with them: superseded, learned from that answer.
    let superseded = started()
        .when(Command::Register { endpoint_override: None }, refused_by_vault(Reason::CredentialsSuperseded))
        .after;
    let status = status_at(&superseded, head, t0());
    let credentials = status.credentials.unwrap();
    assert_eq!(credentials.state, "superseded");
    let said = credentials.vault_refused.unwrap();
    assert_eq!((said.reason, said.learned_from), (Reason::CredentialsSuperseded, "register"));
    // Other credentials loaded: the refusal was of the old ones.
    let reloaded = Given { state: superseded }
        .when(Command::LoadCredentials { file: "/tmp/w.VaultCredentials".into() }, other_credentials_seen());
    let (_, reloaded) = reloaded.accepted();
    assert_eq!(status_at(&reloaded, head, t0()).credentials.unwrap().state, "valid");

    let registered = given(history(Step::Register)).state;
    let detail = status_at(&registered, head, t0()).vault_detail.unwrap();
    assert_eq!((detail.registered, detail.from), (true, "registration"));
}

#[test]
fn a_failure_of_another_step_than_the_one_due_is_earlier_history() {
    use regent_engine::projections::status_at;
    let head = regent_store::Head::EMPTY;
    // The proxy refused while the credentials step is due: history.
    let then = given(history(Step::Folders)).when(set_proxy("bad host", 3128, None, false), at(2));
    let failure = status_at(&then.after, head, t0()).last_failure.unwrap();
    assert_eq!((failure.step, failure.current), ("proxy", false));
    // The step due refused: current.
    let then = given(history(Step::Folders)).when(
        Command::LoadCredentials { file: "/x.VaultCredentials".into() },
        Observations { credentials: Some(CredentialsObserved::Invalid { detail: "x".into() }), ..at(1) },
    );
    assert!(status_at(&then.after, head, t0()).last_failure.unwrap().current);
    // Registered: a change a registered machine makes is current.
    let then = given(history(Step::Register)).when(set_proxy("bad host", 3128, None, false), at(9));
    assert!(status_at(&then.after, head, t0()).last_failure.unwrap().current);
}

// ---- unregistering, telling the vault, moving ----

fn removal(answer: RemovalAnswer, minutes: i64) -> Observations {
    Observations {
        removal: Some(RemovalObserved { vault: "vault-a".into(), machine_id: "m-1".into(), answer }),
        ..at(minutes)
    }
}

fn unreachable() -> RemovalAnswer {
    RemovalAnswer::Refused { reason: Reason::VaultUnreachable, detail: "connection refused".into() }
}

fn registered() -> Given {
    given(history(Step::Register))
}

#[test]
fn an_unregistration_the_vault_was_told_of_leaves_nothing_pending() {
    let (change, state) =
        registered().when(Command::Unregister, removal(RemovalAnswer::Removed { removed_at: t0() }, 20)).accepted();
    assert!(matches!(change, Change::Unregistered { vault_told: Some(true), new_credentials: None, .. }), "{change:?}");
    assert!(state.registration.is_none() && state.pending_removals.is_empty());
    // A vault that lists the machine no more is as good as told.
    let (change, _) = registered()
        .when(Command::Unregister, removal(RemovalAnswer::NotFound { detail: "gone".into() }, 20))
        .accepted();
    assert!(matches!(change, Change::Unregistered { vault_told: Some(true), .. }));
    // A log from before the vault was told: no marker at all, nothing pending.
    let (change, state) = registered().when(Command::Unregister, at(20)).accepted();
    assert!(matches!(change, Change::Unregistered { vault_told: None, .. }));
    assert!(state.pending_removals.is_empty());
}

#[test]
fn an_unreachable_vault_leaves_the_unregistration_pending_with_its_key_until_it_is_told() {
    let (change, state) = registered().when(Command::Unregister, removal(unreachable(), 20)).accepted();
    assert!(matches!(change, Change::Unregistered { vault_told: Some(false), .. }), "{change:?}");
    assert!(state.registration.is_none());
    assert_eq!(state.pending_removals.len(), 1);
    let pending = &state.pending_removals[0];
    assert_eq!((pending.vault.as_str(), pending.machine_id.as_str()), ("vault-a", "m-1"));
    assert!(state.sealed_refs().unwrap().contains(&pending.private_key), "the key stays sealed to tell it later");

    let mut steps = history(Step::Register);
    steps.push((Command::Unregister, removal(unreachable(), 20)));
    let pending = given(steps.clone());
    let finish = Command::FinishUnregister { machine_id: "m-1".into() };
    // Still unreachable: refused with the vault's reason, still pending.
    let refusal =
        pending.when(finish.clone(), removal(unreachable(), 30)).refused(Reason::VaultUnreachable, &["vault-a"]);
    assert_eq!(refusal.next, vec![Next::Run(Step::Unregister)]);
    // Told: recorded, nothing pending.
    let (change, state) =
        pending.when(finish.clone(), removal(RemovalAnswer::Removed { removed_at: t0() }, 30)).accepted();
    assert!(matches!(change, Change::RemovalCompleted { ref machine_id, .. } if machine_id == "m-1"));
    assert!(state.pending_removals.is_empty());
    // Nothing pending: out of order, touching nothing.
    steps.push((finish.clone(), removal(RemovalAnswer::Removed { removed_at: t0() }, 30)));
    assert_eq!(precheck(&given(steps).state, &finish).map(|r| r.reason), Some(Reason::StepOutOfOrder));
}

#[test]
fn a_move_loads_the_other_vaults_credentials_with_the_unregistration_and_keeps_the_passphrase() {
    let file = PathBuf::from("/tmp/b.VaultCredentials");
    let mut observed = credentials_seen("vault-b");
    observed.removal = removal(RemovalAnswer::Removed { removed_at: t0() }, 20).removal;
    observed.now = t0() + Duration::minutes(20);
    let before = registered().state;
    let (change, state) = registered().when(Command::Move { file: file.clone() }, observed).accepted();
    let Change::Unregistered { vault_told: Some(true), new_credentials: Some(loaded), .. } = change else {
        panic!("{change:?}")
    };
    assert_eq!(loaded.facts.vault.name, "vault-b");
    assert_eq!(state.credentials.as_ref().map(|c| c.facts.vault.name.as_str()), Some("vault-b"));
    assert_eq!(state.encryption, before.encryption, "the passphrase is kept");
    assert_eq!(state.next_step(), Some(Step::Register));

    // The same vault's file: nothing to move, refused before the vault is told.
    let same = credentials_seen("vault-a");
    let refusal = registered().state;
    let checked = decide_mod::check_move(&refusal, &file, &same).unwrap_err();
    assert_eq!(checked.reason, Reason::AlreadyRegistered);
    // Not registered: nothing to move.
    let passphrase = given(history(Step::Passphrase));
    assert_eq!(precheck(&passphrase.state, &Command::Move { file }).map(|r| r.reason), Some(Reason::StepOutOfOrder));
}

#[test]
fn loading_another_vaults_credentials_on_a_registered_machine_says_to_move() {
    let refusal = registered()
        .when(Command::LoadCredentials { file: "/tmp/b.VaultCredentials".into() }, credentials_seen("vault-b"))
        .refused(Reason::CredentialsWrongVault, &["vault-b", "vault-a", "/tmp/b.VaultCredentials", "move"]);
    assert_eq!(refusal.next, vec![Next::Move]);
    assert!(!refusal.message.contains("regent ") && !refusal.message.contains(" --"), "{}", refusal.message);
}
