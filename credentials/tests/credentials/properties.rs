//! `parse` must return, never panic, whatever it is given.

use std::sync::LazyLock;

use proptest::prelude::*;
use regent_credentials::parse;

use crate::common::*;

/// Valid documents to mutate: ours (P-256, PBES2) and OpenSSL's (RSA; modern, legacy, unencrypted and
/// null-password bundles).
static SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        valid_xml().into_bytes(),
        fixture("openssl-rsa2048.VaultCredentials"),
        fixture("openssl-rsa2048-legacy.VaultCredentials"),
        fixture("openssl-rsa2048-plain.VaultCredentials"),
        fixture("openssl-rsa2048-nullpass-3des.VaultCredentials"),
    ]
});

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b ^= mask;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(FILE_NAME, &bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,512}", name in "\\PC{0,40}") {
        let _ = parse(&name, text.as_bytes());
        let _ = parse(FILE_NAME, text.as_bytes());
    }

    #[test]
    fn arbitrary_bundles_never_panic(bundle in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(FILE_NAME, with_bundle(&valid_xml(), &bundle).as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(seed in 0..5usize, mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = SEEDS[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = parse(FILE_NAME, &bytes);
    }

    /// Mutating the decoded PKCS#12 (re-encoded as valid base64) reaches the DER, PKCS#12, key and X.509
    /// decoders; the unencrypted, MAC-less seed lets mutations get past the MAC into the certificate and key.
    #[test]
    fn mutated_bundles_never_panic(seed in 0..5usize, mutations in proptest::collection::vec(mutation(), 1..3)) {
        let xml = String::from_utf8(SEEDS[seed].clone()).unwrap();
        let mut bundle = bundle_of(&xml);
        for m in &mutations {
            apply(&mut bundle, m);
        }
        let _ = parse(FILE_NAME, with_bundle(&xml, &bundle).as_bytes());
    }
}
