//! The vault's transparency log, as the agent checks it. A report's answer carries the vault's
//! latest checkpoint, the inclusion proof of the head just reported, and a consistency proof from
//! the tree size the agent verified last ([`regent_protocol::LoggedHead`]). The agent checks the
//! signature with the key it trusts (not the TLS connection), that the leaf is its own head, that
//! the leaf is in the tree the checkpoint signs, and that this tree extends the one it saw before;
//! then it keeps the new checkpoint. A vault whose tree forked or shrank, or that answers with a
//! checkpoint or proof that does not hold, is `vault_log_inconsistent`, and the checkpoint kept is
//! not replaced: it is the evidence.
//!
//! Pure: the caller brings the answer and the key, and keeps what this returns.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regent_protocol::LoggedHead;
use regent_protocol::transparency::{self as tlog, Hash, Leaf, NoteVerifier};
use regent_store::Head;
use serde::{Deserialize, Serialize};

/// The stable code of every failed check.
pub const INCONSISTENT: &str = "vault_log_inconsistent";

/// Where the agent got the vault's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFrom {
    /// The credentials file the machine registered with.
    Credentials,
    /// The vault itself, at the first answer that carried a checkpoint (trust on first use).
    FirstContact,
}

/// The last checkpoint the agent verified, and the key it verified it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    /// The vault's C2SP verifier key.
    pub vault_key: String,
    pub key_from: KeyFrom,
    pub size: u64,
    /// The tree's root, lowercase hex.
    pub root: String,
    /// The checkpoint as signed (a C2SP signed note).
    pub checkpoint: String,
}

/// What did not hold. Each is [`INCONSISTENT`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("the vault's key {key:?} is not a C2SP verifier key: {detail}")]
    Key { key: String, detail: String },
    #[error("the vault's checkpoint is not signed by the key this agent trusts ({detail})")]
    Signature { detail: String },
    #[error("the vault's checkpoint is for {origin:?}, not for the key's name {name:?}")]
    Origin { origin: String, name: String },
    #[error("the leaf the vault proved is not this machine's head {position} ({detail})")]
    OtherLeaf { position: u64, detail: String },
    #[error("head {position} is not in the tree of {size} heads the vault's checkpoint signs ({detail})")]
    NotIncluded { position: u64, size: u64, detail: String },
    #[error("the vault's tree shrank: it now holds {size} heads, {seen} when this agent checked it last")]
    Shrank { size: u64, seen: u64 },
    #[error(
        "the vault's tree of {size} heads does not extend the tree of {seen} heads this agent checked last \
         ({detail}): the vault rewrote its log, or shows another party another history"
    )]
    Forked { size: u64, seen: u64, detail: String },
}

impl Inconsistency {
    pub fn code(&self) -> &'static str {
        INCONSISTENT
    }
}

fn hashes(hex_hashes: &[String]) -> Result<Vec<Hash>, String> {
    hex_hashes
        .iter()
        .map(|h| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(h, &mut hash)
                .map_err(|_| format!("{:?} is not a hash", h.chars().take(70).collect::<String>()))?;
            Ok(hash)
        })
        .collect()
}

/// Checks `logged`, the vault's answer for this machine's `head`, with the key `vault_key`, against
/// `seen` (the checkpoint verified last, if any). Returns the checkpoint to keep.
pub fn check(
    seen: Option<&Witnessed>,
    vault_key: &str,
    key_from: KeyFrom,
    logged: &LoggedHead,
    vault: &str,
    machine_id: &str,
    head: Head,
) -> Result<Witnessed, Inconsistency> {
    let key: NoteVerifier = vault_key
        .parse()
        .map_err(|e: tlog::NoteError| Inconsistency::Key { key: vault_key.into(), detail: e.to_string() })?;
    let checkpoint = key.verify(&logged.checkpoint).map_err(|e| Inconsistency::Signature { detail: e.to_string() })?;
    if checkpoint.origin != key.name() {
        return Err(Inconsistency::Origin { origin: checkpoint.origin, name: key.name().into() });
    }
    let position = head.position;
    let other = |detail: String| Inconsistency::OtherLeaf { position, detail };
    let bytes = STANDARD.decode(&logged.leaf).map_err(|_| other("its bytes are not base64".into()))?;
    let leaf = Leaf::decode(&bytes).map_err(|e| other(e.to_string()))?;
    if leaf.vault != vault
        || leaf.machine_id != machine_id
        || leaf.position != head.position
        || leaf.head != head.hash.0
    {
        return Err(other(format!(
            "it is head {} of machine {} at vault {}",
            leaf.position, leaf.machine_id, leaf.vault
        )));
    }
    let size = checkpoint.size;
    let inclusion =
        hashes(&logged.inclusion).map_err(|detail| Inconsistency::NotIncluded { position, size, detail })?;
    tlog::verify_inclusion(&tlog::leaf_hash(&bytes), logged.index, size, &inclusion, &checkpoint.root)
        .map_err(|e| Inconsistency::NotIncluded { position, size, detail: e.to_string() })?;
    if let Some(seen) = seen {
        if size < seen.size {
            return Err(Inconsistency::Shrank { size, seen: seen.size });
        }
        let forked = |detail: String| Inconsistency::Forked { size, seen: seen.size, detail };
        let mut seen_root = [0u8; 32];
        hex::decode_to_slice(&seen.root, &mut seen_root).map_err(|_| forked("the root kept is not a hash".into()))?;
        let proof = match &logged.consistency {
            Some(c) if c.from == seen.size => hashes(&c.proof).map_err(forked)?,
            Some(c) => return Err(forked(format!("the proof is from {} heads", c.from))),
            None if size == seen.size => Vec::new(),
            None => return Err(forked("the vault sent no consistency proof".into())),
        };
        tlog::verify_consistency(seen.size, size, &seen_root, &checkpoint.root, &proof)
            .map_err(|e| forked(e.to_string()))?;
    }
    Ok(Witnessed {
        vault_key: key.to_string(),
        key_from: seen.map_or(key_from, |s| s.key_from),
        size,
        root: hex::encode(checkpoint.root),
        checkpoint: logged.checkpoint.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use regent_protocol::Consistency;
    use regent_protocol::transparency::{Checkpoint, MemoryTree, NoteSigner, Subtrees as _};
    use regent_store::Digest32;

    /// A vault's tree of `leaves` heads of machine `m` (positions 1, 2, ...), signed by `signer`,
    /// answering for the last head with consistency from `from`.
    fn answer(
        signer: &NoteSigner,
        leaves: u64,
        from: Option<u64>,
        tamper: impl Fn(&mut MemoryTree),
    ) -> (LoggedHead, Head) {
        let mut tree = MemoryTree::new();
        let mut last = Vec::new();
        for n in 0..leaves {
            let leaf = Leaf {
                vault: "v".into(),
                machine_id: "m".into(),
                position: n + 1,
                head: [n as u8; 32],
                previous: n.checked_sub(1),
                accepted_at_micros: 0,
            };
            last = leaf.encode().unwrap();
            tree.push(tlog::leaf_hash(&last));
        }
        tamper(&mut tree);
        let root = tlog::root(&tree, leaves).unwrap();
        let checkpoint = Checkpoint { origin: signer.name().into(), size: leaves, root, extensions: Vec::new() };
        let logged = LoggedHead {
            checkpoint: signer.sign(&checkpoint).unwrap(),
            index: leaves - 1,
            leaf: STANDARD.encode(&last),
            inclusion: tlog::inclusion_proof(&tree, leaves - 1, leaves).unwrap().iter().map(hex::encode).collect(),
            consistency: from.map(|from| Consistency {
                from,
                proof: tlog::consistency_proof(&tree, from, leaves).unwrap().iter().map(hex::encode).collect(),
            }),
        };
        (logged, Head { position: leaves, hash: Digest32([leaves as u8 - 1; 32]) })
    }

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("regent-vault-test", [3u8; 32]).unwrap()
    }

    #[test]
    fn a_tree_that_extends_the_one_seen_is_kept_and_one_that_forked_or_shrank_is_not() {
        let s = signer();
        let key = s.verifier().to_string();
        let (first, head) = answer(&s, 3, None, |_| {});
        let seen = check(None, &key, KeyFrom::FirstContact, &first, "v", "m", head).unwrap();
        assert_eq!((seen.size, seen.key_from), (3, KeyFrom::FirstContact));
        let (later, head) = answer(&s, 7, Some(3), |_| {});
        let now = check(Some(&seen), &key, KeyFrom::Credentials, &later, "v", "m", head).unwrap();
        assert_eq!((now.size, now.key_from), (7, KeyFrom::FirstContact), "where the key came from stays");

        // The same leaves with leaf 1 rewritten: another tree, caught against the one seen.
        let (forked, head) = answer(&s, 7, Some(3), |tree| {
            let mut rebuilt = MemoryTree::new();
            for n in 0..7u64 {
                rebuilt.push(if n == 1 { [0xEE; 32] } else { tree.subtree(0, n).unwrap() });
            }
            *tree = rebuilt;
        });
        let caught = check(Some(&seen), &key, KeyFrom::Credentials, &forked, "v", "m", head).unwrap_err();
        assert!(matches!(caught, Inconsistency::Forked { size: 7, seen: 3, .. }), "{caught}");
        assert_eq!(caught.code(), "vault_log_inconsistent");
        // A shorter tree than the one seen.
        let (short, head) = answer(&s, 2, None, |_| {});
        assert!(matches!(
            check(Some(&now), &key, KeyFrom::Credentials, &short, "v", "m", head),
            Err(Inconsistency::Shrank { size: 2, seen: 7 })
        ));
        // No consistency proof where one is needed.
        let (bare, head) = answer(&s, 9, None, |_| {});
        assert!(matches!(
            check(Some(&now), &key, KeyFrom::Credentials, &bare, "v", "m", head),
            Err(Inconsistency::Forked { .. })
        ));
    }

    #[test]
    fn another_key_another_head_and_a_broken_proof_are_each_named() {
        let s = signer();
        let (logged, head) = answer(&s, 5, None, |_| {});
        let other = NoteSigner::from_seed("regent-vault-test", [4u8; 32]).unwrap().verifier().to_string();
        assert!(matches!(
            check(None, &other, KeyFrom::Credentials, &logged, "v", "m", head),
            Err(Inconsistency::Signature { .. })
        ));
        let key = s.verifier().to_string();
        let elsewhere = Head { position: 4, hash: head.hash };
        assert!(matches!(
            check(None, &key, KeyFrom::Credentials, &logged, "v", "m", elsewhere),
            Err(Inconsistency::OtherLeaf { .. })
        ));
        assert!(matches!(
            check(None, &key, KeyFrom::Credentials, &logged, "v", "other", head),
            Err(Inconsistency::OtherLeaf { .. })
        ));
        let mut broken = logged.clone();
        broken.inclusion[0] = "00".repeat(32);
        assert!(matches!(
            check(None, &key, KeyFrom::Credentials, &broken, "v", "m", head),
            Err(Inconsistency::NotIncluded { .. })
        ));
        assert!(matches!(
            check(None, "not a key", KeyFrom::Credentials, &logged, "v", "m", head),
            Err(Inconsistency::Key { .. })
        ));
        assert!(check(None, &key, KeyFrom::Credentials, &logged, "v", "m", head).is_ok());
    }
}
