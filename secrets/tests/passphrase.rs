//! The passphrase verifier, generation, rules and the file written for the operator.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::mode_of;
use proptest::prelude::*;
use regent_secrets::{
    ExposeSecret, GENERATED_LEN, OsRandom, PassphraseRules, PassphraseVerifier, SecretString, SecretsError,
    generate_passphrase, write_new_secret_file,
};

const PASSPHRASE: &str = "correct horse battery staple 1729";

fn os_passphrase() -> SecretString {
    let mut failed = false;
    let p = generate_passphrase(|b| failed |= OsRandom.fill(b).is_err());
    assert!(!failed);
    p
}

fn assert_generated_shape(p: &SecretString) {
    let s = p.expose_secret();
    assert!(s.len() >= 32, "{} characters", s.len());
    assert_eq!(s.len(), GENERATED_LEN);
    assert!(s.bytes().all(|b| (33..=126).contains(&b)), "non-printable or space");
    let facts = PassphraseRules::check(p);
    assert_eq!(facts.length, s.len());
    assert!(facts.printable_ascii);
    assert!(facts.length >= 16);
}

/// The only test that runs Argon2id at full cost (three runs: slow in debug builds).
#[test]
fn the_verifier_accepts_the_passphrase_and_refuses_others() {
    let passphrase = SecretString::from(PASSPHRASE);
    let salt = [0x5a; 16];
    let verifier = PassphraseVerifier::create(&passphrase, &salt).unwrap();
    assert!(verifier.phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", verifier.phc());
    assert!(!verifier.phc().contains(PASSPHRASE));
    assert!(verifier.verify(&passphrase));
    assert!(!verifier.verify(&SecretString::from("correct horse battery staple 1728")));

    // It is what an event records: a bare string, parsed back the same.
    let json = serde_json::to_string(&verifier).unwrap();
    assert_eq!(json, format!("\"{}\"", verifier.phc()));
    let back: PassphraseVerifier = serde_json::from_str(&json).unwrap();
    assert_eq!(back, verifier);
    assert_eq!(PassphraseVerifier::from_phc(verifier.phc()).unwrap(), verifier);

    // Debug shows the costs only: no passphrase, salt or hash.
    let shown = format!("{verifier:?} {passphrase:?}");
    assert!(shown.contains("m=19456,t=2,p=1"), "{shown}");
    let salt_and_hash = verifier.phc().rsplit('$').take(2).collect::<Vec<_>>();
    for part in salt_and_hash {
        assert!(!shown.contains(part), "{shown}");
    }
    assert!(!shown.contains(PASSPHRASE), "{shown}");
}

/// A verifier made with weak costs, quickly, through the argon2 crate directly.
fn weak_phc(algorithm: argon2::Algorithm, m: u32, t: u32) -> String {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(m, t, 1, Some(32)).unwrap();
    argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
        .hash_password_with_salt(PASSPHRASE.as_bytes(), &[1u8; 16])
        .unwrap()
        .to_string()
}

#[test]
fn weak_or_foreign_verifiers_are_refused_on_parse_and_deserialize() {
    let refused = [
        weak_phc(argon2::Algorithm::Argon2id, 8, 1),
        weak_phc(argon2::Algorithm::Argon2id, 19_456, 1),
        weak_phc(argon2::Algorithm::Argon2id, 8, 2),
        weak_phc(argon2::Algorithm::Argon2i, 8, 1).replace("m=8,t=1", "m=19456,t=2"),
        "".into(),
        "not a phc string".into(),
        "$argon2id$v=19$m=19456,t=2,p=1".into(),
        "$argon2id$v=16$m=19456,t=2,p=1$AQEBAQEBAQEBAQEBAQEBAQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E".into(),
    ];
    for phc in refused {
        let err = PassphraseVerifier::from_phc(&phc).unwrap_err();
        assert!(matches!(err, SecretsError::BadVerifier { .. }), "{phc}: {err:?}");
        assert!(!err.to_string().contains('\n'));
        assert!(serde_json::from_str::<PassphraseVerifier>(&serde_json::to_string(&phc).unwrap()).is_err(), "{phc}");
    }
    // Stronger than the minimum is fine (parse only, no hashing).
    let stronger = weak_phc(argon2::Algorithm::Argon2id, 8, 1).replace("m=8,t=1", "m=65536,t=3");
    PassphraseVerifier::from_phc(&stronger).unwrap();
}

#[test]
fn generated_passphrases_are_32_printable_non_space_characters() {
    let a = os_passphrase();
    let b = os_passphrase();
    assert_generated_shape(&a);
    assert_generated_shape(&b);
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert!(!format!("{a:?}").contains(a.expose_secret()));
}

#[test]
fn generation_rejects_biased_bytes_and_always_ends() {
    // Bytes 188..=255 would bias the result; they are skipped.
    let mut stream = (0u8..=255).cycle();
    let p = generate_passphrase(|b| b.iter_mut().for_each(|x| *x = stream.next().unwrap()));
    let expected: String = (0u8..32).map(|b| char::from(33 + b)).collect();
    assert_eq!(p.expose_secret(), expected);

    let mut stream = (150u8..=255).cycle();
    let p = generate_passphrase(|b| b.iter_mut().for_each(|x| *x = stream.next().unwrap()));
    let expected: String = (150u8..182).map(|b| char::from(33 + b % 94)).collect();
    assert_eq!(p.expose_secret(), expected);

    // A source that never writes (failing) or only writes unusable bytes still returns.
    assert_generated_shape(&generate_passphrase(|_| {}));
    assert_generated_shape(&generate_passphrase(|b| b.fill(0xff)));
}

proptest! {
    #[test]
    fn generated_passphrases_always_satisfy_the_rules(stream in proptest::collection::vec(any::<u8>(), 1..600)) {
        let mut bytes = stream.iter().copied().cycle();
        let p = generate_passphrase(|b| b.iter_mut().for_each(|x| *x = bytes.next().unwrap_or(0)));
        let s = p.expose_secret();
        prop_assert_eq!(s.len(), GENERATED_LEN);
        prop_assert!(s.bytes().all(|b| (33..=126).contains(&b)));
        let facts = PassphraseRules::check(&p);
        prop_assert!(facts.printable_ascii && facts.length >= 32);
        // When 64 rounds of 64 bytes hold 32 usable bytes (always, for a real random source), the
        // result is exactly their mapping, in order: no byte is reused or skipped.
        let window: Vec<u8> = stream.iter().copied().cycle().take(64 * 64).collect();
        if window.iter().filter(|&&b| b < 188).count() >= 32 {
            let model: String = window.iter().filter(|&&b| b < 188).take(32).map(|&b| char::from(33 + b % 94)).collect();
            prop_assert_eq!(s, model);
        }
    }

    #[test]
    fn facts_never_panic_and_count_characters(s in ".{0,64}") {
        let facts = PassphraseRules::check(&SecretString::from(s.as_str()));
        prop_assert_eq!(facts.length, s.chars().count());
        prop_assert_eq!(facts.printable_ascii, s.bytes().all(|b| (32..=126).contains(&b)));
    }
}

#[test]
fn facts_describe_without_the_secret() {
    let facts = PassphraseRules::check(&SecretString::from("with spaces and ~!"));
    assert_eq!((facts.length, facts.printable_ascii), (18, true));
    assert!(!PassphraseRules::check(&SecretString::from("tab\there")).printable_ascii);
    assert!(!PassphraseRules::check(&SecretString::from("naïve")).printable_ascii);
    assert_eq!(PassphraseRules::check(&SecretString::from("naïve")).length, 5);
    assert_eq!(PassphraseRules::check(&SecretString::from("")).length, 0);
    assert!(!format!("{facts:?}").contains("spaces"));
}

#[test]
fn a_secret_file_is_new_0600_and_ends_with_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passphrase.txt");
    let p = os_passphrase();
    write_new_secret_file(&path, &p).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", p.expose_secret()));
}

#[test]
fn a_secret_file_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passphrase.txt");
    std::fs::write(&path, "keep me\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = SecretString::from(PASSPHRASE);
    let err = write_new_secret_file(&path, &p).unwrap_err();
    assert!(matches!(&err, SecretsError::AlreadyExists { path: e } if *e == path), "{err:?}");
    assert!(!err.to_string().contains(PASSPHRASE) && !format!("{err:?}").contains(PASSPHRASE));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me\n");
    assert_eq!(mode_of(&path), 0o644);

    // Nor through a link, dangling or not.
    let link = dir.path().join("link.txt");
    std::os::unix::fs::symlink(dir.path().join("target.txt"), &link).unwrap();
    assert!(matches!(write_new_secret_file(&link, &p), Err(SecretsError::AlreadyExists { .. })));
    assert!(!dir.path().join("target.txt").exists());
}

#[test]
fn a_secret_file_needs_an_existing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-folder").join("passphrase.txt");
    let err = write_new_secret_file(&path, &SecretString::from(PASSPHRASE)).unwrap_err();
    assert!(matches!(&err, SecretsError::DirMissing { path: p } if *p == dir.path().join("no-such-folder")), "{err:?}");
    assert!(!dir.path().join("no-such-folder").exists());
    assert!(err.to_string().contains("does not exist"), "{err}");

    // A file where the folder should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = write_new_secret_file(&file.join("passphrase.txt"), &SecretString::from(PASSPHRASE)).unwrap_err();
    assert!(matches!(err, SecretsError::DirMissing { .. }), "{err:?}");
}

#[test]
fn os_random_fills() {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    OsRandom.fill(&mut a).unwrap();
    OsRandom.fill(&mut b).unwrap();
    assert_ne!(a, b);
    OsRandom.fill(&mut []).unwrap();
}
