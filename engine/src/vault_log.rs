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
use regent_protocol::transparency::{self as tlog, Checkpoint, Hash, Leaf, NoteVerifier};
use regent_protocol::{Consistency, LoggedHead};
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
    /// The machine whose latest leaf was proved under it, and that leaf's index (absent in notes
    /// before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<u64>,
}

/// What did not hold. Each is [`INCONSISTENT`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("the vault's key {key:?} is not a C2SP verifier key: {detail}")]
    Key { key: String, detail: String },
    #[error("the vault's checkpoint does not verify with the key this agent trusts ({detail})")]
    Signature { detail: String },
    #[error("the vault's checkpoint is signed by another key than the one this agent trusts ({detail})")]
    OtherKey { detail: String },
    #[error("the vault's checkpoint is for {origin:?}, not for the key's name {name:?}")]
    Origin { origin: String, name: String },
    #[error("the leaf the vault proved is not this machine's head ({detail})")]
    OtherLeaf { detail: String },
    #[error("the leaf the vault proved is machine {machine_id:?}'s at vault {vault:?}, not this machine's")]
    OtherMachine { machine_id: String, vault: String },
    #[error("head {position} is not in the tree of {size} heads the vault's checkpoint signs ({detail})")]
    NotIncluded { position: u64, size: u64, detail: String },
    #[error("the vault's tree shrank: it now holds {size} heads, {seen} when checked before")]
    Shrank { size: u64, seen: u64 },
    #[error("the vault's chain of this machine's heads does not hold: {detail}")]
    Chain { detail: String },
    #[error(
        "the vault's tree of {size} heads does not extend the tree of {seen} heads checked before \
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

fn root_of(hex_root: &str) -> Option<Hash> {
    let mut root = [0u8; 32];
    hex::decode_to_slice(hex_root, &mut root).ok().map(|_| root)
}

/// A head of a machine the vault logged, proved: the checkpoint it is included under (signed by
/// the key checked with) and the leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proved {
    pub key: NoteVerifier,
    pub checkpoint: Checkpoint,
    pub index: u64,
    pub leaf: Leaf,
}

impl Proved {
    /// The head the leaf names.
    pub fn head(&self) -> Head {
        Head { position: self.leaf.position, hash: regent_store::Digest32(self.leaf.head) }
    }

    /// What to keep of it: the checkpoint as signed, and the machine's leaf.
    fn witnessed(&self, key_from: KeyFrom, note: &str) -> Witnessed {
        Witnessed {
            vault_key: self.key.to_string(),
            key_from,
            size: self.checkpoint.size,
            root: hex::encode(self.checkpoint.root),
            checkpoint: note.to_string(),
            machine_id: Some(self.leaf.machine_id.clone()),
            leaf: Some(self.index),
        }
    }
}

/// Checks that `logged` proves some head of `machine_id` at `vault`: its checkpoint signed by
/// `vault_key` for the key's own name, its leaf that machine's, included under the checkpoint.
pub fn prove(vault_key: &str, logged: &LoggedHead, vault: &str, machine_id: &str) -> Result<Proved, Inconsistency> {
    let key: NoteVerifier = vault_key
        .parse()
        .map_err(|e: tlog::NoteError| Inconsistency::Key { key: vault_key.into(), detail: e.to_string() })?;
    let checkpoint = key.verify(&logged.checkpoint).map_err(|e| match e {
        tlog::NoteError::NotSignedByKey { .. } => Inconsistency::OtherKey { detail: e.to_string() },
        e => Inconsistency::Signature { detail: e.to_string() },
    })?;
    if checkpoint.origin != key.name() {
        return Err(Inconsistency::Origin { origin: checkpoint.origin, name: key.name().into() });
    }
    let other = |detail: String| Inconsistency::OtherLeaf { detail };
    let bytes = STANDARD.decode(&logged.leaf).map_err(|_| other("its bytes are not base64".into()))?;
    let leaf = Leaf::decode(&bytes).map_err(|e| other(e.to_string()))?;
    if leaf.vault != vault || leaf.machine_id != machine_id {
        return Err(Inconsistency::OtherMachine { machine_id: leaf.machine_id, vault: leaf.vault });
    }
    let (position, size) = (leaf.position, checkpoint.size);
    let inclusion =
        hashes(&logged.inclusion).map_err(|detail| Inconsistency::NotIncluded { position, size, detail })?;
    tlog::verify_inclusion(&tlog::leaf_hash(&bytes), logged.index, size, &inclusion, &checkpoint.root)
        .map_err(|e| Inconsistency::NotIncluded { position, size, detail: e.to_string() })?;
    Ok(Proved { key, checkpoint, index: logged.index, leaf })
}

/// Checks that the tree `proved` is under extends the one `seen` (`consistency` proves it), and
/// that the machine's chain of leaves does not hide the leaf seen: a later leaf names it, or one
/// after it, as the machine's previous one.
fn extends(seen: &Witnessed, proved: &Proved, consistency: Option<&Consistency>) -> Result<(), Inconsistency> {
    let size = proved.checkpoint.size;
    if size < seen.size {
        return Err(Inconsistency::Shrank { size, seen: seen.size });
    }
    let forked = |detail: String| Inconsistency::Forked { size, seen: seen.size, detail };
    let seen_root = root_of(&seen.root).ok_or_else(|| forked("the root kept is not a hash".into()))?;
    let proof = match consistency {
        Some(c) if c.from == seen.size => hashes(&c.proof).map_err(forked)?,
        Some(c) => return Err(forked(format!("the proof is from {} heads", c.from))),
        None if size == seen.size => Vec::new(),
        None => return Err(forked("the vault sent no consistency proof".into())),
    };
    tlog::verify_consistency(seen.size, size, &seen_root, &proved.checkpoint.root, &proof)
        .map_err(|e| forked(e.to_string()))?;
    match seen.leaf {
        Some(seen_leaf) if seen.machine_id.as_deref() == Some(proved.leaf.machine_id.as_str()) => {
            chain_holds(seen_leaf, proved)
        }
        _ => Ok(()),
    }
}

/// Checks that the machine's leaf `proved` does not hide its leaf `seen_leaf` proved before: it is
/// that leaf, or a later one naming it (or one after it) as the machine's previous leaf.
fn chain_holds(seen_leaf: u64, proved: &Proved) -> Result<(), Inconsistency> {
    let chain = |detail: String| Inconsistency::Chain { detail };
    if proved.index < seen_leaf {
        return Err(chain(format!(
            "its latest leaf for this machine is {}, older than leaf {seen_leaf} it proved before: it hides a later head",
            proved.index
        )));
    }
    if proved.index > seen_leaf && proved.leaf.previous.is_none_or(|previous| previous < seen_leaf) {
        return Err(chain(format!(
            "its leaf {} names {} as this machine's previous leaf, skipping leaf {seen_leaf} it proved before",
            proved.index,
            proved.leaf.previous.map_or("none".to_string(), |p| format!("leaf {p}"))
        )));
    }
    Ok(())
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
    let proved = prove(vault_key, logged, vault, machine_id)?;
    if proved.head() != head {
        return Err(Inconsistency::OtherLeaf {
            detail: format!(
                "it names head {} where this machine reported head {}",
                proved.leaf.position, head.position
            ),
        });
    }
    if let Some(seen) = seen {
        extends(seen, &proved, logged.consistency.as_ref())?;
    }
    Ok(proved.witnessed(seen.map_or(key_from, |s| s.key_from), &logged.checkpoint))
}

/// Checks `logged`, the vault's answer to a read of this machine's anchor, as a proof of the
/// machine's latest logged head: the same checks as [`check`], the head being the leaf's. The
/// caller compares the log with [`Proved::head`].
pub fn check_latest(
    seen: Option<&Witnessed>,
    vault_key: &str,
    key_from: KeyFrom,
    logged: &LoggedHead,
    vault: &str,
    machine_id: &str,
) -> Result<(Witnessed, Proved), Inconsistency> {
    let proved = prove(vault_key, logged, vault, machine_id)?;
    if let Some(seen) = seen {
        extends(seen, &proved, logged.consistency.as_ref())?;
    }
    Ok((proved.witnessed(seen.map_or(key_from, |s| s.key_from), &logged.checkpoint), proved))
}

// ---------------------------------------------------------------------------------------------
// Proof bundles: a machine's latest logged head, to check offline

/// The format a bundle names, and the most bytes one may have (a checkpoint, a leaf and two
/// proofs of at most 64 hashes each take a few KiB).
pub const BUNDLE_FORMAT: &str = "regent-proof-bundle/1";
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// A machine's latest head as the vault logged it: the checkpoint, the leaf, its inclusion proof,
/// and a consistency proof from an earlier size when one was asked for. All public; whoever holds
/// the vault's key checks it without a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub vault: String,
    pub machine_id: String,
    pub proof: LoggedHead,
}

impl Bundle {
    pub fn new(vault: &str, machine_id: &str, proof: LoggedHead) -> Bundle {
        Bundle { format: BUNDLE_FORMAT.into(), vault: vault.into(), machine_id: machine_id.into(), proof }
    }

    /// A bundle from a file's bytes, or why they are not one.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, String> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(format!("it is {} bytes, over the {MAX_BUNDLE_BYTES} a bundle may have", bytes.len()));
        }
        let bundle: Bundle = serde_json::from_slice(bytes).map_err(|e| format!("it is not a proof bundle ({e})"))?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(format!(
                "its format is {:?}, not {BUNDLE_FORMAT:?}",
                bundle.format.chars().take(60).collect::<String>()
            ));
        }
        Ok(bundle)
    }

    /// Checks the bundle with the vault's key: the machine's head it names is included under a
    /// checkpoint that key signed.
    pub fn open(&self, vault_key: &str) -> Result<Proved, Inconsistency> {
        prove(vault_key, &self.proof, &self.vault, &self.machine_id)
    }

    /// The consistency proof it carries from `from` heads, if it carries one.
    pub fn consistency_from(&self, from: u64) -> Option<Result<Vec<Hash>, String>> {
        self.proof.consistency.as_ref().filter(|c| c.from == from).map(|c| hashes(&c.proof))
    }
}

/// Checks that two checkpoints sign views of one tree: equal roots at equal sizes, or `proof`
/// (from the smaller size to the larger) shows the smaller tree a prefix of the larger.
pub fn trees_meet(a: &Checkpoint, b: &Checkpoint, proof: Option<&[Hash]>) -> Result<(), Inconsistency> {
    let (small, large) = if a.size <= b.size { (a, b) } else { (b, a) };
    let (from, size) = (small.size, large.size);
    let forked = |detail: String| Inconsistency::Forked { size, seen: from, detail };
    match proof {
        _ if from == size => {
            if small.root != large.root {
                return Err(forked("two different roots for the same size".into()));
            }
        }
        Some(proof) => {
            tlog::verify_consistency(from, size, &small.root, &large.root, proof).map_err(|e| forked(e.to_string()))?
        }
        None => return Err(forked("no consistency proof between them was given".into())),
    }
    Ok(())
}

/// Checks that two checkpoints, each proving a machine's latest head, are views of one tree:
/// equal roots at equal sizes, or `proof` (from the smaller size to the larger) shows the smaller
/// tree a prefix of the larger. For the same machine, the larger tree's latest leaf must not hide
/// the other's: a leaf included in the smaller tree is in the larger one too, so the larger's
/// latest is that leaf or a later one naming it (or one after it) as previous.
pub fn views_meet(a: &Proved, b: &Proved, proof: Option<&[Hash]>) -> Result<(), Inconsistency> {
    let (small, large) = if a.checkpoint.size <= b.checkpoint.size { (a, b) } else { (b, a) };
    trees_meet(&small.checkpoint, &large.checkpoint, proof)?;
    if small.leaf.vault == large.leaf.vault && small.leaf.machine_id == large.leaf.machine_id {
        chain_holds(small.index, large)?;
        if large.index == small.index && large.leaf != small.leaf {
            return Err(Inconsistency::Chain { detail: format!("two different leaves at index {}", large.index) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use regent_protocol::transparency::{MemoryTree, NoteSigner, Subtrees as _};
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
            Err(Inconsistency::OtherKey { .. })
        ));
        let key = s.verifier().to_string();
        let elsewhere = Head { position: 4, hash: head.hash };
        assert!(matches!(
            check(None, &key, KeyFrom::Credentials, &logged, "v", "m", elsewhere),
            Err(Inconsistency::OtherLeaf { .. })
        ));
        assert!(matches!(
            check(None, &key, KeyFrom::Credentials, &logged, "v", "other", head),
            Err(Inconsistency::OtherMachine { .. })
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

    /// A tree of `leaves` ((machine, position, previous) each), signed by `signer`: the bundle of
    /// leaf `index`, with consistency from `from`.
    fn bundle(signer: &NoteSigner, leaves: &[(&str, u64, Option<u64>)], index: u64, from: Option<u64>) -> Bundle {
        let mut tree = MemoryTree::new();
        let encoded: Vec<Vec<u8>> = leaves
            .iter()
            .map(|&(machine, position, previous)| {
                let leaf = Leaf {
                    vault: "v".into(),
                    machine_id: machine.into(),
                    position,
                    head: [position as u8; 32],
                    previous,
                    accepted_at_micros: 0,
                };
                leaf.encode().unwrap()
            })
            .collect();
        for bytes in &encoded {
            tree.push(tlog::leaf_hash(bytes));
        }
        let size = leaves.len() as u64;
        let root = tlog::root(&tree, size).unwrap();
        let checkpoint = Checkpoint { origin: signer.name().into(), size, root, extensions: Vec::new() };
        let proof = LoggedHead {
            checkpoint: signer.sign(&checkpoint).unwrap(),
            index,
            leaf: STANDARD.encode(&encoded[index as usize]),
            inclusion: tlog::inclusion_proof(&tree, index, size).unwrap().iter().map(hex::encode).collect(),
            consistency: from.map(|from| Consistency {
                from,
                proof: tlog::consistency_proof(&tree, from, size).unwrap().iter().map(hex::encode).collect(),
            }),
        };
        Bundle::new("v", leaves[index as usize].0, proof)
    }

    fn carried(b: &Bundle, from: u64) -> Option<Vec<Hash>> {
        b.consistency_from(from).map(|p| p.unwrap())
    }

    #[test]
    fn bundles_are_checked_with_the_key_and_views_that_do_not_meet_are_caught() {
        let s = signer();
        let key = s.verifier().to_string();
        // a1, b1, a2, b2: b's latest is leaf 3.
        let honest = [("a", 1, None), ("b", 1, None), ("a", 2, Some(0)), ("b", 2, Some(1))];
        let b_view = bundle(&s, &honest, 3, None);
        let text = serde_json::to_vec(&b_view).unwrap();
        let b_view = Bundle::parse(&text).unwrap();
        let b = b_view.open(&key).unwrap();
        assert_eq!(b.head().position, 2);
        // The same tree grown by a3: a's view, with a proof from b's size.
        let grown = [honest.as_slice(), &[("a", 3, Some(2))]].concat();
        let a_view = bundle(&s, &grown, 4, Some(4));
        let a = a_view.open(&key).unwrap();
        views_meet(&a, &b, carried(&a_view, 4).as_deref()).unwrap();
        views_meet(&b, &a, carried(&a_view, 4).as_deref()).unwrap();

        // Two views: a is shown a tree without b2 (a3 where b2 was).
        let without_b2 = [("a", 1, None), ("b", 1, None), ("a", 2, Some(0)), ("a", 3, Some(2))];
        let a_forked = bundle(&s, &without_b2, 3, None);
        let forked = views_meet(&a_forked.open(&key).unwrap(), &b, None).unwrap_err();
        assert!(matches!(forked, Inconsistency::Forked { .. }), "{forked}");
        // ... and at a later size, a proof from b's size cannot hold.
        let later = [without_b2.as_slice(), &[("a", 4, Some(3))]].concat();
        let a_later = bundle(&s, &later, 4, Some(4));
        assert!(matches!(
            views_meet(&a_later.open(&key).unwrap(), &b, carried(&a_later, 4).as_deref()),
            Err(Inconsistency::Forked { .. })
        ));
        // Nor without any proof.
        assert!(views_meet(&a, &b, None).is_err());

        // The same machine: a larger tree whose "latest" for b is leaf 1 hides b2.
        let stale_b = bundle(&s, &grown, 1, Some(4));
        let hidden = views_meet(&stale_b.open(&key).unwrap(), &b, carried(&stale_b, 4).as_deref()).unwrap_err();
        assert!(matches!(hidden, Inconsistency::Chain { .. }), "{hidden}");
        // A later leaf of b that skips b2 in its chain.
        let skipping = [grown.as_slice(), &[("b", 3, Some(1))]].concat();
        let skip = bundle(&s, &skipping, 5, Some(4));
        let skipped = views_meet(&skip.open(&key).unwrap(), &b, carried(&skip, 4).as_deref()).unwrap_err();
        assert!(skipped.to_string().contains("skipping leaf 3"), "{skipped}");

        // Another key, a forged leaf, another format.
        let other = NoteSigner::from_seed("regent-vault-other", [5u8; 32]).unwrap().verifier().to_string();
        assert!(matches!(b_view.open(&other), Err(Inconsistency::OtherKey { .. })));
        let mut forged = b_view.clone();
        forged.proof.leaf = STANDARD.encode(
            Leaf {
                vault: "v".into(),
                machine_id: "b".into(),
                position: 9,
                head: [9; 32],
                previous: Some(1),
                accepted_at_micros: 0,
            }
            .encode()
            .unwrap(),
        );
        assert!(matches!(forged.open(&key), Err(Inconsistency::NotIncluded { .. })));
        let mut renamed = b_view.clone();
        renamed.machine_id = "a".into();
        assert!(matches!(renamed.open(&key), Err(Inconsistency::OtherMachine { .. })));
        let mut other_format = b_view.clone();
        other_format.format = "regent-proof-bundle/2".into();
        let refused = Bundle::parse(&serde_json::to_vec(&other_format).unwrap()).unwrap_err();
        assert!(refused.contains("regent-proof-bundle/2"), "{refused}");
        assert!(Bundle::parse(b"{}").is_err());
        assert!(Bundle::parse(&vec![b' '; MAX_BUNDLE_BYTES + 1]).unwrap_err().contains("over the"));
    }
}
