//! The service's transparency log: one append-only Merkle tree (RFC 6962 hashing) whose leaves are
//! the heads it accepts, and the key that signs its checkpoints (C2SP signed notes).
//!
//! The tree is derived from the log: every `LogHeadAnchored` event marked `logged` is a leaf, and
//! its index is the number of logged heads before it in the service's log. The storage keeps each
//! leaf's bytes and every complete subtree's hash, written with the events that log them (sled:
//! before the append, in the side tree, read only below the folded size; PostgreSQL: in the same
//! transaction). A proof reads only the subtrees it needs, never the whole tree.
//!
//! Checkpoints are not stored: Ed25519 signatures are deterministic, so the checkpoint of a size is
//! the same bytes whenever it is signed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regent_protocol::transparency::{
    self as tlog, Checkpoint, Hash, Leaf, MissingSubtree, NoteSigner, NoteVerifier, Subtrees,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::api::ApiError;
use crate::error::VaultError;
use crate::events::{LogHeadAnchored, VaultEvent};
use crate::protocol::{Consistency, ConsistencyProof, LoggedHead};
use crate::storage::{Backend, Storage as _};

/// The checkpoint key's file in the service's data directory (mode 0600): its C2SP private key.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";

/// A private key text is about 100 bytes; anything much longer is not one.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// The leaf of a logged head, if `event` logs one.
pub(crate) fn leaf_of(vault: &str, event: &VaultEvent) -> Result<Option<Leaf>, String> {
    let VaultEvent::LogHeadAnchored(e @ LogHeadAnchored { logged: true, .. }) = event else {
        return Ok(None);
    };
    let mut head = [0u8; 32];
    hex::decode_to_slice(&e.hash, &mut head)
        .map_err(|_| format!("head {} of {} is not a hash", e.hash, e.machine_id))?;
    Ok(Some(Leaf {
        vault: vault.to_string(),
        machine_id: e.machine_id.clone(),
        position: e.position,
        head,
        previous: e.previous_leaf,
        accepted_at_micros: e.anchored_at.timestamp_micros(),
    }))
}

/// The complete subtrees of a tree of `size` leaves that a leaf appended to it may pair with: one
/// per set bit of `size`, left to right.
pub(crate) fn frontier(size: u64) -> Vec<(u8, u64)> {
    (0..64u8).rev().filter(|level| size >> level & 1 == 1).map(|level| (level, (size >> level) - 1)).collect()
}

/// Subtrees held in a map: those a computation asked for, fetched beforehand.
#[derive(Default)]
pub(crate) struct Fetched(pub HashMap<(u8, u64), Hash>);

impl Subtrees for Fetched {
    type Error = MissingSubtree;
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, MissingSubtree> {
        // Missing though the tree's size says it is there: the tree was damaged or altered.
        self.0.get(&(level, index)).copied().ok_or(MissingSubtree { level, index })
    }
}

/// Answers every lookup with zeros and remembers which were asked: which subtrees a proof needs
/// depends only on the sizes and indexes, never on the hashes, so one dry run lists what to fetch
/// in one read.
#[derive(Default)]
struct Wanted(std::cell::RefCell<HashSet<(u8, u64)>>);

impl Subtrees for Wanted {
    type Error = std::convert::Infallible;
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        self.0.borrow_mut().insert((level, index));
        Ok([0u8; 32])
    }
}

/// What a proof of a leaf, and of consistency from an earlier size, needs from the storage.
pub(crate) fn subtrees_for(size: u64, leaf: Option<u64>, from: Option<u64>) -> Vec<(u8, u64)> {
    let wanted = Wanted::default();
    // Errors (a leaf or size out of range) show again, with their words, when the proof is made.
    let _ = tlog::root(&wanted, size);
    if let Some(index) = leaf {
        let _ = tlog::inclusion_proof(&wanted, index, size);
    }
    if let Some(old) = from {
        let _ = tlog::consistency_proof(&wanted, old, size);
    }
    wanted.0.into_inner().into_iter().collect()
}

/// What a consistency proof between two sizes needs from the storage: no root, since whoever asks
/// holds both checkpoints.
pub(crate) fn subtrees_for_consistency(from: u64, to: u64) -> Vec<(u8, u64)> {
    let wanted = Wanted::default();
    // As in `subtrees_for`: sizes out of order show again when the proof is made.
    let _ = tlog::consistency_proof(&wanted, from, to);
    wanted.0.into_inner().into_iter().collect()
}

/// The subtrees that become complete as `leaves` are appended to a tree of `size`, given its
/// [`frontier`].
pub(crate) fn appended(frontier: Fetched, size: u64, leaves: &[Leaf]) -> Result<Vec<(u8, u64, Hash)>, String> {
    let mut overlay = tlog::Overlay::new(&frontier);
    for (index, leaf) in (size..).zip(leaves) {
        let bytes = leaf.encode().map_err(|e| e.to_string())?;
        overlay.append(index, tlog::leaf_hash(&bytes)).map_err(|e| e.to_string())?;
    }
    Ok(overlay.into_pending())
}

/// The key that signs the service's checkpoints, and the last checkpoint it signed.
pub(crate) struct Notary {
    signer: NoteSigner,
    last: Mutex<Option<(u64, Hash, String)>>,
}

impl Notary {
    pub(crate) fn new(signer: NoteSigner) -> Notary {
        Notary { signer, last: Mutex::new(None) }
    }

    /// The checkpoints' origin line: the key's name.
    pub(crate) fn origin(&self) -> &str {
        self.signer.name()
    }

    pub(crate) fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The signed checkpoint of a tree of `size` leaves with `root`.
    pub(crate) fn checkpoint(&self, size: u64, root: Hash) -> Result<String, String> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, at_root, note)) = last.as_ref()
            && *at == size
            && *at_root == root
        {
            return Ok(note.clone());
        }
        let checkpoint = Checkpoint { origin: self.origin().to_string(), size, root, extensions: Vec::new() };
        let note = self.signer.sign(&checkpoint).map_err(|e| e.to_string())?;
        *last = Some((size, root, note.clone()));
        Ok(note)
    }
}

/// The latest checkpoint and its root, read from the storage and signed.
pub(crate) async fn checkpoint(storage: &Backend, notary: &Notary) -> Result<(u64, Hash, String), ApiError> {
    let size = storage.tree_size().await?;
    let fetched = storage.subtrees(subtrees_for(size, None, None)).await?;
    let root = tlog::root(&fetched, size).map_err(damaged)?;
    let note = notary.checkpoint(size, root).map_err(ApiError::internal)?;
    Ok((size, root, note))
}

/// Leaf `index` proved under the latest checkpoint, and that checkpoint proved consistent with the
/// tree of `from` leaves when asked (a size past the latest gets no consistency proof: the agent
/// then sees the tree shrank).
pub(crate) async fn logged_head(
    storage: &Backend,
    notary: &Notary,
    index: u64,
    from: Option<u64>,
) -> Result<LoggedHead, ApiError> {
    let size = storage.tree_size().await?;
    let from = from.filter(|&from| from <= size);
    let fetched = storage.subtrees(subtrees_for(size, Some(index), from)).await?;
    let root = tlog::root(&fetched, size).map_err(damaged)?;
    let proved = |e: tlog::ProveError<MissingSubtree>| match e {
        tlog::ProveError::Subtrees(missing) => damaged(missing),
        other => ApiError::internal(format!("the transparency log cannot prove leaf {index}: {other}")),
    };
    let inclusion = tlog::inclusion_proof(&fetched, index, size).map_err(proved)?;
    let consistency = match from {
        Some(from) => Some(Consistency {
            from,
            proof: tlog::consistency_proof(&fetched, from, size).map_err(proved)?.iter().map(hex::encode).collect(),
        }),
        None => None,
    };
    let leaf = storage.leaf(index).await?.ok_or_else(|| damaged(MissingSubtree { level: 0, index }))?;
    Ok(LoggedHead {
        checkpoint: notary.checkpoint(size, root).map_err(ApiError::internal)?,
        index,
        leaf: STANDARD.encode(leaf),
        inclusion: inclusion.iter().map(hex::encode).collect(),
        consistency,
    })
}

/// The proof that the tree of `from` leaves is a prefix of the tree of `to` leaves (RFC 9162
/// §2.1.4), for anyone holding both checkpoints; empty when the sizes are equal. Reads only the
/// subtrees the proof needs, in one read, all below the size the storage says it holds.
pub(crate) async fn consistency(storage: &Backend, from: u64, to: u64) -> Result<ConsistencyProof, ApiError> {
    // RFC 9162 §2.1.4.1 defines PROOF(m, D[n]) for 0 < m only.
    if from == 0 {
        return Err(ApiError::bad_request(
            "from must be 1 or more: RFC 9162 defines no consistency proof from the empty tree, which every tree \
             extends (nothing to check)",
        ));
    }
    if from > to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) is larger than to ({to}): a proof goes from the older, smaller checkpoint to the newer \
             one; swap them"
        )));
    }
    let size = storage.tree_size().await?;
    if to > size {
        return Err(ApiError::bad_request(format!(
            "to ({to}) is past the transparency log's size ({size}): ask with the sizes of checkpoints the vault \
             signed (GET /v1/checkpoint is the latest)"
        )));
    }
    let fetched = storage.subtrees(subtrees_for_consistency(from, to)).await?;
    let proof = tlog::consistency_proof(&fetched, from, to).map_err(|e| match e {
        tlog::ProveError::Subtrees(missing) => damaged(missing),
        other => ApiError::internal(format!("the transparency log cannot prove {from} consistent with {to}: {other}")),
    })?;
    Ok(ConsistencyProof { from, to, proof: proof.iter().map(hex::encode).collect() })
}

fn damaged(missing: MissingSubtree) -> ApiError {
    tracing::error!(%missing, "the transparency log is damaged");
    ApiError::internal(format!("the vault's transparency log is damaged: {missing}"))
}

/// Loads the checkpoint key of `dir`, creating it on first start. The key's name (the checkpoints'
/// origin) is made from the key itself, so two services never share an origin by accident.
pub(crate) fn load_or_create(dir: &Path) -> Result<NoteSigner, VaultError> {
    let path = dir.join(CHECKPOINT_KEY_FILE);
    if let Some(signer) = load_existing(dir)? {
        return Ok(signer);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| VaultError::KeyFile {
        action: "create",
        path: path.clone(),
        source: io::Error::other(format!("the OS random source failed: {e}")),
    })?;
    let unnamed = NoteSigner::from_seed("regent-vault", *seed).map_err(|e| bad_key(&path, e))?;
    let id = hex::encode(&Sha256::digest(unnamed.verifier().to_string().as_bytes())[..8]);
    let signer = NoteSigner::from_seed(&format!("regent-vault-{id}"), *seed).map_err(|e| bad_key(&path, e))?;
    match crate::token::write_new(dir, &path, &signer.encode()) {
        Ok(()) => Ok(signer),
        // Another process started on the same directory at the same moment: its key wins.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            load_existing(dir)?.ok_or_else(|| bad_key(&path, "it is empty"))
        }
        Err(source) => Err(VaultError::KeyFile { action: "write", path, source }),
    }
}

/// Loads the checkpoint key of `dir` if it has one.
pub(crate) fn load_existing(dir: &Path) -> Result<Option<NoteSigner>, VaultError> {
    let path = dir.join(CHECKPOINT_KEY_FILE);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VaultError::KeyFile { action: "open", path, source }),
    };
    crate::token::warn_if_shared(&file, &path);
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_LEN).read_to_string(&mut text).map_err(|source| VaultError::KeyFile {
        action: "read",
        path: path.clone(),
        source,
    })?;
    NoteSigner::parse(text.trim()).map(Some).map_err(|e| bad_key(&path, e))
}

fn bad_key(path: &Path, detail: impl std::fmt::Display) -> VaultError {
    VaultError::BadKeyFile { path: PathBuf::from(path), detail: detail.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regent_protocol::transparency::MemoryTree;

    fn leaf(n: u64) -> Leaf {
        Leaf {
            vault: "v".into(),
            machine_id: format!("m-{}", n % 3),
            position: n + 1,
            head: [n as u8; 32],
            previous: n.checked_sub(3),
            accepted_at_micros: 1_700_000_000_000_000 + n as i64,
        }
    }

    #[test]
    fn appending_in_batches_from_the_frontier_makes_the_tree_a_whole_build_makes() {
        let leaves: Vec<Leaf> = (0..70).map(leaf).collect();
        let mut whole = MemoryTree::new();
        for l in &leaves {
            whole.push(tlog::leaf_hash(&l.encode().unwrap()));
        }
        // Batches of 1..=5 leaves, each from only the frontier of what came before.
        let mut stored = Fetched::default();
        let (mut size, mut step) = (0u64, 1usize);
        while (size as usize) < leaves.len() {
            let end = (size as usize + step).min(leaves.len());
            let frontier = Fetched(frontier(size).into_iter().map(|k| (k, stored.0[&k])).collect());
            for (level, index, hash) in appended(frontier, size, &leaves[size as usize..end]).unwrap() {
                assert!(stored.0.insert((level, index), hash).is_none(), "a subtree is written once");
            }
            size = end as u64;
            step = step % 5 + 1;
            assert_eq!(tlog::root(&stored, size).unwrap(), tlog::root(&whole, size).unwrap(), "size {size}");
        }
    }

    #[test]
    fn a_proof_needs_only_the_subtrees_listed_for_it() {
        let mut whole = MemoryTree::new();
        for n in 0..37 {
            whole.push(tlog::leaf_hash(&leaf(n).encode().unwrap()));
        }
        for (size, index, from) in [(37u64, 0u64, 1u64), (37, 36, 20), (32, 5, 31), (1, 0, 1)] {
            let fetched = Fetched(
                subtrees_for(size, Some(index), Some(from))
                    .into_iter()
                    .map(|(l, i)| ((l, i), whole.subtree(l, i).unwrap()))
                    .collect(),
            );
            assert_eq!(tlog::root(&fetched, size).unwrap(), tlog::root(&whole, size).unwrap());
            assert_eq!(
                tlog::inclusion_proof(&fetched, index, size).unwrap(),
                tlog::inclusion_proof(&whole, index, size).unwrap()
            );
            assert_eq!(
                tlog::consistency_proof(&fetched, from, size).unwrap(),
                tlog::consistency_proof(&whole, from, size).unwrap()
            );
        }
    }

    #[test]
    fn a_consistency_proof_needs_only_the_subtrees_listed_for_it_and_never_the_whole_tree() {
        let mut whole = MemoryTree::new();
        for n in 0..70 {
            whole.push(tlog::leaf_hash(&leaf(n).encode().unwrap()));
        }
        for to in 1..=70u64 {
            for from in 1..=to {
                let wanted = subtrees_for_consistency(from, to);
                // At most two subtrees a level: the proof's path, not the tree.
                assert!(wanted.len() <= 2 * (64 - to.leading_zeros() as usize), "{from}..{to}: {}", wanted.len());
                let fetched =
                    Fetched(wanted.into_iter().map(|(l, i)| ((l, i), whole.subtree(l, i).unwrap())).collect());
                let proof = tlog::consistency_proof(&fetched, from, to).unwrap();
                assert_eq!(proof, tlog::consistency_proof(&whole, from, to).unwrap(), "{from}..{to}");
                let (old, new) = (tlog::root(&whole, from).unwrap(), tlog::root(&whole, to).unwrap());
                tlog::verify_consistency(from, to, &old, &new, &proof).unwrap();
            }
        }
        assert!(subtrees_for_consistency(9, 9).is_empty(), "equal sizes need nothing");
    }

    #[test]
    fn the_key_is_made_once_named_after_itself_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(made.verifier().to_string(), again.verifier().to_string());
        assert!(made.name().starts_with("regent-vault-"), "{}", made.name());
        let notary = Notary::new(again);
        let note = notary.checkpoint(3, [7u8; 32]).unwrap();
        assert_eq!(made.verifier().verify(&note).unwrap().size, 3);
        fs::write(dir.path().join(CHECKPOINT_KEY_FILE), "PRIVATE+KEY+x+00000000+AAAA\n").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(VaultError::BadKeyFile { .. })));
    }
}
