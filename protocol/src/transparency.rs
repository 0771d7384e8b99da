//! The pure parts of the vault's transparency log: a certificate-transparency-style Merkle tree
//! whose leaves are the log heads the vault accepted, and whose tree heads are checkpoints signed
//! with Ed25519. No I/O: the store keeps the complete subtrees ([`Subtrees`]) and the proofs are
//! made by reading them, so no proof needs the whole tree in memory.
//!
//! - Hashing is RFC 6962's, with SHA-256: [`leaf_hash`], [`node_hash`], [`empty_root`].
//! - Proofs are RFC 9162's: [`inclusion_proof`] and [`consistency_proof`] make them (§2.1.3.1,
//!   §2.1.4.1), [`verify_inclusion`] and [`verify_consistency`] check them (§2.1.3.2, §2.1.4.2).
//! - Tree heads are C2SP checkpoints (<https://c2sp.org/tlog-checkpoint>, [`Checkpoint`]) in C2SP
//!   signed notes (<https://c2sp.org/signed-note>, [`NoteSigner`], [`NoteVerifier`]), Ed25519
//!   only, so that off-the-shelf tlog tooling (witnesses, monitors) reads them.
//!
//! # Leaf encoding
//!
//! A [`Leaf`] goes into the tree as [`leaf_hash`] of these bytes, in this order, integers
//! big-endian ([`Leaf::encode`], [`Leaf::decode`]):
//!
//! | bytes | field | value |
//! | --- | --- | --- |
//! | 1 | version | `0x01` |
//! | 2 | vault name length | 1..=255 |
//! | that many | vault name | UTF-8 |
//! | 2 | machine id length | 1..=255 |
//! | that many | machine id | UTF-8 |
//! | 8 | position | the head's position in the machine's log, unsigned |
//! | 32 | head | the machine's log head hash |
//! | 1 | previous flag | `0x00`: the machine's first leaf; `0x01`: it has a previous leaf |
//! | 8 | previous | index in the tree of the machine's previous leaf; `0` when the flag is `0x00` |
//! | 8 | accepted at | when the vault accepted the head, signed Unix microseconds |
//!
//! Decoding refuses another version, a length outside 1..=255, a name that is not UTF-8, a flag
//! other than `0x00` or `0x01`, a non-zero previous index under flag `0x00`, missing bytes and
//! bytes after the last field, so every leaf has exactly one encoding.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// A SHA-256 hash: a leaf's, a node's or a tree's.
pub type Hash = [u8; 32];

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(data).finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

// ---- leaves ----------------------------------------------------------------------------------

/// One log head the vault accepted from one machine: what a leaf of the tree commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub vault: String,
    pub machine_id: String,
    /// The head's position in the machine's log.
    pub position: u64,
    pub head: Hash,
    /// The index in the tree of the same machine's previous leaf, if it has one.
    pub previous: Option<u64>,
    pub accepted_at_micros: i64,
}

/// Why bytes are not a leaf, or a leaf has no encoding.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LeafError {
    #[error("leaf version {0:#04x}, not 0x01")]
    UnknownVersion(u8),
    #[error("the leaf ends before its {0}")]
    Truncated(&'static str),
    #[error("the leaf's {field} is {len} bytes, not 1 to 255")]
    FieldLength { field: &'static str, len: usize },
    #[error("the leaf's {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("the leaf's previous-leaf flag is {0:#04x}, not 0x00 or 0x01")]
    PreviousFlag(u8),
    #[error("the leaf has no previous leaf but a previous index of {0}")]
    PreviousWithoutFlag(u64),
    #[error("{0} bytes after the end of the leaf")]
    TrailingBytes(usize),
}

const LEAF_VERSION: u8 = 0x01;

impl Leaf {
    /// The leaf's bytes, as the module documentation lays them out.
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        let vault = name_bytes("vault name", &self.vault)?;
        let machine = name_bytes("machine id", &self.machine_id)?;
        let mut out = Vec::with_capacity(1 + 2 + vault.len() + 2 + machine.len() + 8 + 32 + 1 + 8 + 8);
        out.push(LEAF_VERSION);
        for name in [vault, machine] {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
        }
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.head);
        out.push(u8::from(self.previous.is_some()));
        out.extend_from_slice(&self.previous.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.accepted_at_micros.to_be_bytes());
        Ok(out)
    }

    /// The leaf `bytes` encode, refusing anything but its one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafError> {
        let mut rest = bytes;
        let [version] = take::<1>(&mut rest, "version")?;
        if version != LEAF_VERSION {
            return Err(LeafError::UnknownVersion(version));
        }
        let vault = take_name(&mut rest, "vault name")?;
        let machine_id = take_name(&mut rest, "machine id")?;
        let position = u64::from_be_bytes(take(&mut rest, "position")?);
        let head = take(&mut rest, "head")?;
        let [flag] = take::<1>(&mut rest, "previous flag")?;
        let index = u64::from_be_bytes(take(&mut rest, "previous index")?);
        let previous = match (flag, index) {
            (0x00, 0) => None,
            (0x00, index) => return Err(LeafError::PreviousWithoutFlag(index)),
            (0x01, index) => Some(index),
            (flag, _) => return Err(LeafError::PreviousFlag(flag)),
        };
        let accepted_at_micros = i64::from_be_bytes(take(&mut rest, "accepted time")?);
        if !rest.is_empty() {
            return Err(LeafError::TrailingBytes(rest.len()));
        }
        Ok(Leaf { vault, machine_id, position, head, previous, accepted_at_micros })
    }

    /// The leaf's hash in the tree: [`leaf_hash`] of its encoding.
    pub fn hash(&self) -> Result<Hash, LeafError> {
        Ok(leaf_hash(&self.encode()?))
    }
}

fn name_bytes<'a>(field: &'static str, name: &'a str) -> Result<&'a [u8], LeafError> {
    match name.len() {
        1..=255 => Ok(name.as_bytes()),
        len => Err(LeafError::FieldLength { field, len }),
    }
}

fn take<const N: usize>(rest: &mut &[u8], field: &'static str) -> Result<[u8; N], LeafError> {
    let (head, tail) = rest.split_first_chunk::<N>().ok_or(LeafError::Truncated(field))?;
    *rest = tail;
    Ok(*head)
}

fn take_name(rest: &mut &[u8], field: &'static str) -> Result<String, LeafError> {
    let len = usize::from(u16::from_be_bytes(take(rest, field)?));
    if !(1..=255).contains(&len) {
        return Err(LeafError::FieldLength { field, len });
    }
    let (name, tail) = rest.split_at_checked(len).ok_or(LeafError::Truncated(field))?;
    *rest = tail;
    String::from_utf8(name.to_vec()).map_err(|_| LeafError::NotUtf8(field))
}

// ---- proof verification ------------------------------------------------------------------------

/// Why a proof does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the tree shrank from {old} to {new} leaves")]
    Shrank { old: u64, new: u64 },
    #[error("the proof has {got} hashes where {expected} are needed")]
    WrongLength { expected: usize, got: usize },
    /// The proof does not lead to the root it should (the new root, for a consistency proof).
    #[error("the proof does not lead to the tree's root")]
    RootMismatch,
    /// A consistency proof does not lead to the old tree's root.
    #[error("the proof does not lead to the old tree's root")]
    OldRootMismatch,
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = path(index, size).len();
    let wrong_length = ProofError::WrongLength { expected, got: proof.len() };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            // Up past the levels where this node has no right sibling (the tree's right edge).
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and
/// equal roots; the empty tree is a prefix of every tree, with an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Shrank { old: old_size, new: new_size });
    }
    let expected = if old_size == 0 || old_size == new_size { 0 } else { subproof(old_size, new_size).len() };
    let wrong_length = ProofError::WrongLength { expected, got: proof.len() };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if old_size == 0 {
        return Ok(());
    }
    if old_size == new_size {
        return if old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    // An old tree that is a complete subtree is left out of the proof: start from its root.
    let (first, rest) =
        if old_size.is_power_of_two() { (old_root, proof) } else { proof.split_first().ok_or(wrong_length)? };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

// ---- proof generation over stored subtrees -----------------------------------------------------

/// Where the complete subtrees of a tree are kept. `(level, index)` is the subtree over leaves
/// `[index << level, (index + 1) << level)`; level 0 holds the leaf hashes.
pub trait Subtrees {
    type Error;
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be made.
#[derive(Debug, Error)]
pub enum ProveError<E> {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from {old} leaves to fewer, {new}")]
    Shrank { old: u64, new: u64 },
    #[error("reading a stored subtree")]
    Subtrees(#[source] E),
}

/// The root of the tree of the first `size` leaves: the complete subtrees of `size`'s binary
/// decomposition, composed right to left.
pub fn root<S: Subtrees + ?Sized>(s: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 { Ok(empty_root()) } else { range_hash(s, 0, size) }
}

/// RFC 9162 §2.1.3.1 PATH: the hashes that prove leaf `index` is in the tree of `size` leaves,
/// from the leaf's sibling up.
pub fn inclusion_proof<S: Subtrees + ?Sized>(s: &S, index: u64, size: u64) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    hashes(s, path(index, size))
}

/// RFC 9162 §2.1.4.1 PROOF: the hashes that prove the tree of `old_size` leaves is a prefix of the
/// tree of `new_size` leaves; empty when `old_size` is 0 or `new_size`.
pub fn consistency_proof<S: Subtrees + ?Sized>(
    s: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if old_size > new_size {
        return Err(ProveError::Shrank { old: old_size, new: new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    hashes(s, subproof(old_size, new_size))
}

/// The subtrees that become complete when `leaf` is appended at index `size`: the leaf at
/// `(0, size)`, then each parent whose right child it completes, as `(level, index, hash)`. The
/// left siblings are read through `s`, which must therefore see every subtree of the first `size`
/// leaves, including those of leaves appended earlier in the same batch: layer an [`Overlay`] over
/// the store to append several.
pub fn appended<S: Subtrees + ?Sized>(s: &S, size: u64, leaf: Hash) -> Result<Vec<(u8, u64, Hash)>, S::Error> {
    let (mut level, mut index, mut hash) = (0u8, size, leaf);
    let mut out = vec![(level, index, hash)];
    while index & 1 == 1 {
        hash = node_hash(&s.subtree(level, index - 1)?, &hash);
        level += 1;
        index >>= 1;
        out.push((level, index, hash));
    }
    Ok(out)
}

/// MTH(D[lo:hi]) of a non-empty range that starts at a multiple of its largest power of two, as
/// every range PATH and SUBPROOF reach does: its aligned complete subtrees, folded right to left.
fn range_hash<S: Subtrees + ?Sized>(s: &S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    debug_assert!(lo < hi && lo & ((1 << (63 - (hi - lo).leading_zeros())) - 1) == 0, "[{lo}, {hi})");
    let (mut rest, mut end) = (hi - lo, hi);
    let mut acc: Option<Hash> = None;
    while rest != 0 {
        let level = rest.trailing_zeros();
        end -= 1 << level;
        let hash = s.subtree(level as u8, end >> level)?;
        acc = Some(match acc {
            Some(right) => node_hash(&hash, &right),
            None => hash,
        });
        rest &= rest - 1;
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The largest power of two below `n` (n >= 2): where RFC 9162 splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The leaf ranges whose MTH make PATH(index, D[0:size]), in proof order (index < size).
fn path(index: u64, size: u64) -> Vec<(u64, u64)> {
    let (mut lo, mut hi) = (0, size);
    let mut out = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// The leaf ranges whose MTH make SUBPROOF(old, D[0:new], true), in proof order (0 < old < new).
fn subproof(old: u64, new: u64) -> Vec<(u64, u64)> {
    let (mut lo, mut hi, mut m, mut whole) = (0, new, old, true);
    let mut out = Vec::new();
    loop {
        if m == hi - lo {
            // The old tree's own subtree: the verifier has it already only if it is the old root.
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    out
}

fn hashes<S: Subtrees + ?Sized>(s: &S, ranges: Vec<(u64, u64)>) -> Result<Vec<Hash>, ProveError<S::Error>> {
    ranges.into_iter().map(|(lo, hi)| range_hash(s, lo, hi).map_err(ProveError::Subtrees)).collect()
}

/// Subtrees not yet stored, layered over a store: appends a batch of leaves so that each sees the
/// ones before it, then hands over what to write.
pub struct Overlay<'a, S: ?Sized> {
    base: &'a S,
    pending: HashMap<(u8, u64), Hash>,
}

impl<'a, S: Subtrees + ?Sized> Overlay<'a, S> {
    pub fn new(base: &'a S) -> Self {
        Overlay { base, pending: HashMap::new() }
    }

    /// Appends `leaf` at index `size` (the tree's size, counting leaves appended through `self`).
    pub fn append(&mut self, size: u64, leaf: Hash) -> Result<(), S::Error> {
        for (level, index, hash) in appended(self, size, leaf)? {
            self.pending.insert((level, index), hash);
        }
        Ok(())
    }

    /// The subtrees appended, as `(level, index, hash)` in that order, for the store to write.
    pub fn into_pending(self) -> Vec<(u8, u64, Hash)> {
        let mut pending: Vec<_> = self.pending.into_iter().map(|((level, index), hash)| (level, index, hash)).collect();
        pending.sort_unstable();
        pending
    }
}

impl<S: Subtrees + ?Sized> Subtrees for Overlay<'_, S> {
    type Error = S::Error;

    fn subtree(&self, level: u8, index: u64) -> Result<Hash, S::Error> {
        match self.pending.get(&(level, index)) {
            Some(hash) => Ok(*hash),
            None => self.base.subtree(level, index),
        }
    }
}

/// A tree held in memory, level by level, for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

/// A subtree a [`MemoryTree`] does not have (yet).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("no complete subtree at level {level}, index {index}")]
pub struct MissingSubtree {
    pub level: u8,
    pub index: u64,
}

impl MemoryTree {
    pub fn new() -> Self {
        MemoryTree::default()
    }

    /// Appends a leaf hash and every subtree it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        for level in 0.. {
            if level == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            if row.len() % 2 == 1 {
                return;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
        }
    }

    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subtrees for MemoryTree {
    type Error = MissingSubtree;

    fn subtree(&self, level: u8, index: u64) -> Result<Hash, MissingSubtree> {
        let row = self.levels.get(usize::from(level));
        let hash = row.and_then(|row| row.get(usize::try_from(index).ok()?));
        hash.copied().ok_or(MissingSubtree { level, index })
    }
}

// ---- checkpoints and signed notes --------------------------------------------------------------

/// A note larger than this is refused unread.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// A note with more signature lines than this is refused.
pub const MAX_NOTE_SIGNATURES: usize = 100;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a checkpoint, a note or a key text does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NoteError {
    #[error("the note is {len} bytes, over the {MAX_NOTE_BYTES} allowed")]
    TooLarge { len: usize },
    #[error("the note has over {MAX_NOTE_SIGNATURES} signature lines")]
    TooManySignatures,
    #[error("the text has a control character")]
    ControlCharacter,
    #[error("the text does not end in a newline")]
    Unterminated,
    #[error("the note has no blank line before a signature block ending in a newline")]
    NoSignatureBlock,
    #[error("a signature line does not start with an em dash and a space")]
    NotASignatureLine,
    #[error("a signature line is malformed")]
    MalformedSignatureLine,
    #[error("the note has no signature by {key}")]
    NotSignedByKey { key: String },
    #[error("the note's signature by {key} does not verify")]
    BadSignature { key: String },
    #[error("{0:?} is not a key name: empty, or with a '+', a space or a control character")]
    InvalidKeyName(String),
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("signature type {0:#04x}, not Ed25519's 0x01")]
    UnknownAlgorithm(u8),
    #[error("the key's id is {stated:08x} but its name and public key make {computed:08x}")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// A C2SP checkpoint: the log's origin, its size and root, and any extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: origin, decimal size and base64 root, then each extension, each line ending
    /// in a newline. Only a [`valid`](Self::validate) checkpoint's body reads back as itself.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root));
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Checks what the types do not: origin and extensions are non-empty lines without control
    /// characters (a newline in one would make its body say another checkpoint).
    pub fn validate(&self) -> Result<(), NoteError> {
        check_line(&self.origin, "empty origin")?;
        self.extensions.iter().try_for_each(|line| check_line(line, "empty extension line"))
    }

    /// The checkpoint a note text states, strictly: the size without sign or leading zeros, the
    /// root exactly 32 bytes of canonical base64, no empty line.
    pub fn parse(body: &str) -> Result<Checkpoint, NoteError> {
        let body = body.strip_suffix('\n').ok_or(NoteError::Unterminated)?;
        let mut lines = body.split('\n');
        let mut line = |missing| lines.next().ok_or(NoteError::MalformedCheckpoint(missing));
        let (origin, size, root) = (line("no origin")?, line("no size")?, line("no root")?);
        check_line(origin, "empty origin")?;
        // u64's parser alone would take a '+' and leading zeros.
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.starts_with('0') && size != "0") {
            return Err(NoteError::MalformedCheckpoint("size is not a decimal number without leading zeros"));
        }
        let size = size.parse().map_err(|_| NoteError::MalformedCheckpoint("size is over 2^64 - 1"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|root| Hash::try_from(root).ok())
            .ok_or(NoteError::MalformedCheckpoint("root is not 32 bytes of base64"))?;
        let extensions = lines
            .map(|line| check_line(line, "empty extension line").map(|()| line.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint { origin: origin.to_string(), size, root, extensions })
    }
}

fn check_line(line: &str, empty: &'static str) -> Result<(), NoteError> {
    if line.is_empty() {
        return Err(NoteError::MalformedCheckpoint(empty));
    }
    if line.chars().any(|c| c < ' ') {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

/// A key name: non-empty, without '+', spaces (Unicode's too) or control characters.
fn is_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c == '+' || c.is_whitespace() || c < ' ')
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_key_name(name) { Ok(()) } else { Err(NoteError::InvalidKeyName(name.to_string())) }
}

/// The first four bytes of SHA-256(name || 0x0A || 0x01 || public key), big-endian.
fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let digest = Sha256::new().chain_update(name).chain_update([b'\n', ED25519]).chain_update(public_key).finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `<name>+<8 lowercase hex>+<base64>` (the base64 may hold '+'; the name may not).
fn split_key(text: &str) -> Result<(&str, u32, &str), NoteError> {
    let (name, rest) = text.split_once('+').ok_or(NoteError::MalformedKey("no '+' after the name"))?;
    let (id, key) = rest.split_once('+').ok_or(NoteError::MalformedKey("no '+' after the key id"))?;
    check_key_name(name)?;
    let not_hex = NoteError::MalformedKey("the key id is not 8 lowercase hex digits");
    if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(not_hex);
    }
    Ok((name, u32::from_str_radix(id, 16).map_err(|_| not_hex)?, key))
}

/// Signs checkpoints as a C2SP signed note with an Ed25519 key. The key is zeroized on drop.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// The signer named `name` whose Ed25519 key is made from `seed`.
    pub fn from_seed(name: &str, mut seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        check_key_name(name)?;
        Ok(NoteSigner { name: name.to_string(), key_id: key_id(name, &key.verifying_key()), key })
    }

    /// Reads the private key text `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
    pub fn parse(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text.strip_prefix(PRIVATE_KEY_PREFIX).ok_or(NoteError::MalformedKey("no PRIVATE+KEY+ prefix"))?;
        let (name, stated, key) = split_key(rest)?;
        // 44 base64 characters are the 33 bytes of type and seed; checked first so that the
        // decoding never reallocates (leaving a copy of the seed) or reads much.
        if key.len() != 44 {
            return Err(NoteError::MalformedKey("the private key is not 33 bytes of base64"));
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(48));
        BASE64.decode_vec(key, &mut raw).map_err(|_| NoteError::MalformedKey("the private key is not base64"))?;
        let Some((&kind, seed)) = raw.split_first() else {
            return Err(NoteError::MalformedKey("the private key is empty"));
        };
        if kind != ED25519 {
            return Err(NoteError::UnknownAlgorithm(kind));
        }
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.try_into().map_err(|_| NoteError::MalformedKey("the private key is not 33 bytes of base64"))?,
        );
        let signer = NoteSigner::from_seed(name, *seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch { stated, computed: signer.key_id });
        }
        Ok(signer)
    }

    /// The private key text [`parse`](Self::parse) reads.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[0] = ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        let mut b64 = Zeroizing::new([0u8; 44]);
        // Into a fixed buffer, so that no intermediate copy outlives this call.
        let written = BASE64.encode_slice(raw.as_slice(), b64.as_mut_slice()).expect("44 bytes hold the base64 of 33");
        let mut text = Zeroizing::new(String::with_capacity(PRIVATE_KEY_PREFIX.len() + self.name.len() + 10 + 44));
        text.push_str(PRIVATE_KEY_PREFIX);
        text.push_str(&self.name);
        text.push_str(&format!("+{:08x}+", self.key_id));
        text.extend(b64[..written].iter().map(|&b| char::from(b)));
        text
    }

    /// The verifier of this signer's signatures.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key_id: self.key_id, key: self.key.verifying_key() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signed note of `checkpoint`: its body, a blank line and this key's signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        checkpoint.validate()?;
        self.sign_text(&checkpoint.body())
    }

    /// The signed note of any note text: `text` (ending in a newline, without other control
    /// characters), a blank line, then `— <name> base64(key id || signature over text)`.
    pub fn sign_text(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::Unterminated);
        }
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::ControlCharacter);
        }
        let mut signature = self.key_id.to_be_bytes().to_vec();
        signature.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        Ok(format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(signature)))
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// Verifies C2SP signed notes signed by one Ed25519 key; its text is
/// `<name>+<8 lowercase hex key id>+<base64(0x01 || public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The checkpoint `note` states, if this key signed it. The caller checks the origin and that
    /// the size and root are consistent with what it saw before.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(self.open(note)?)
    }

    /// The text of `note`, if this key signed it (what Go's `note.Open` does for one key). Every
    /// signature line must be well-formed; those of other keys are ignored, and each of this
    /// key's must verify, strictly (no malleable or small-order encodings).
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::ControlCharacter);
        }
        // The text is separated from the signatures by the note's last blank line.
        let split = note.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        let signatures = signatures.strip_suffix('\n').filter(|s| !s.is_empty()).ok_or(NoteError::NoSignatureBlock)?;
        let mut signed = false;
        for (count, line) in signatures.split('\n').enumerate() {
            if count == MAX_NOTE_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let line = line.strip_prefix(SIGNATURE_PREFIX).ok_or(NoteError::NotASignatureLine)?;
            let (name, signature) = line.split_once(' ').ok_or(NoteError::MalformedSignatureLine)?;
            let signature = BASE64.decode(signature).map_err(|_| NoteError::MalformedSignatureLine)?;
            if !is_key_name(name) || signature.len() < 5 {
                return Err(NoteError::MalformedSignatureLine);
            }
            let (id, signature) = signature.split_at(4);
            if name != self.name || id != self.key_id.to_be_bytes() {
                continue;
            }
            let valid = Signature::from_slice(signature)
                .is_ok_and(|signature| self.key.verify_strict(text.as_bytes(), &signature).is_ok());
            if !valid {
                return Err(NoteError::BadSignature { key: self.key_label() });
            }
            signed = true;
        }
        if !signed {
            return Err(NoteError::NotSignedByKey { key: self.key_label() });
        }
        Ok(text)
    }

    fn key_label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 33];
        raw[0] = ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(raw))
    }
}

impl FromStr for NoteVerifier {
    type Err = NoteError;

    fn from_str(text: &str) -> Result<NoteVerifier, NoteError> {
        let (name, stated, key) = split_key(text)?;
        let raw = BASE64.decode(key).map_err(|_| NoteError::MalformedKey("the public key is not base64"))?;
        let Some((&kind, key)) = raw.split_first() else {
            return Err(NoteError::MalformedKey("the public key is empty"));
        };
        if kind != ED25519 {
            return Err(NoteError::UnknownAlgorithm(kind));
        }
        let key = <&[u8; 32]>::try_from(key).map_err(|_| NoteError::MalformedKey("the public key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(key).map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(NoteError::MalformedKey("a small-order Ed25519 public key"));
        }
        let computed = key_id(name, &key);
        if computed != stated {
            return Err(NoteError::KeyIdMismatch { stated, computed });
        }
        Ok(NoteVerifier { name: name.to_string(), key_id: stated, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    type Oracle = MemoryBackedTree<Sha256, Vec<u8>>;

    fn data(i: u64) -> Vec<u8> {
        format!("leaf {i}").into_bytes()
    }

    fn flip(hash: &Hash, byte: usize) -> Hash {
        let mut hash = *hash;
        hash[byte % 32] ^= 0x01;
        hash
    }

    #[test]
    fn hashes_are_rfc_6962s() {
        assert_eq!(hex::encode(empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(node_hash(&a, &b), Hash::from(Sha256::digest([&[1u8][..], &a, &b].concat())));
        assert_eq!(root(&MemoryTree::new(), 0), Ok(empty_root()));
    }

    /// Every root and proof of every tree up to 70 leaves is ct-merkle's.
    #[test]
    fn roots_and_proofs_match_ct_merkle() {
        let (mut ours, mut oracle) = (MemoryTree::new(), Oracle::new());
        for size in 1..=70u64 {
            ours.push(leaf_hash(&data(size - 1)));
            oracle.push(data(size - 1));
            assert_eq!(root(&ours, size).unwrap()[..], oracle.root().as_bytes()[..], "root of {size}");
            for index in 0..size {
                let proof = inclusion_proof(&ours, index, size).unwrap();
                assert_eq!(proof.concat(), oracle.prove_inclusion(index as usize).as_bytes(), "PATH({index}, {size})");
            }
            for old in 1..size {
                let proof = consistency_proof(&ours, old, size).unwrap();
                let theirs = oracle.prove_consistency((size - old) as usize);
                assert_eq!(proof.concat(), theirs.as_bytes(), "PROOF({old}, {size})");
            }
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_tampered_ones_do_not() {
        let tree = tree(71);
        let roots: Vec<Hash> = (0..=71).map(|size| root(&tree, size).unwrap()).collect();
        for size in 1..=70u64 {
            let root = &roots[size as usize];
            for index in 0..size {
                let leaf = leaf_hash(&data(index));
                let proof = inclusion_proof(&tree, index, size).unwrap();
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, root), Ok(()));

                assert_eq!(verify_inclusion(&flip(&leaf, 3), index, size, &proof, root), Err(ProofError::RootMismatch));
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, &flip(root, 5)), Err(ProofError::RootMismatch));
                for i in 0..proof.len() {
                    let mut tampered = proof.clone();
                    tampered[i] = flip(&tampered[i], i);
                    assert_eq!(verify_inclusion(&leaf, index, size, &tampered, root), Err(ProofError::RootMismatch));
                }
                // Another index, with this leaf or with that index's own leaf.
                for other in [index ^ 1, (index + 1) % size, size / 2] {
                    if other != index && other < size {
                        assert!(verify_inclusion(&leaf, other, size, &proof, root).is_err(), "{index} as {other}");
                        let other_leaf = leaf_hash(&data(other));
                        assert!(verify_inclusion(&other_leaf, other, size, &proof, root).is_err());
                    }
                }
                // Another size, against that size's root: the proof does not show the leaf there.
                for other in [size - 1, size + 1, 2 * size] {
                    if other != size && other > index && other <= 71 {
                        assert!(verify_inclusion(&leaf, index, other, &proof, &roots[other as usize]).is_err());
                    }
                }
                assert_eq!(
                    verify_inclusion(&leaf, size, size, &proof, root),
                    Err(ProofError::IndexOutOfRange { index: size, size })
                );
                let expected = proof.len();
                let mut extended = proof.clone();
                extended.push(leaf);
                assert_eq!(
                    verify_inclusion(&leaf, index, size, &extended, root),
                    Err(ProofError::WrongLength { expected, got: expected + 1 })
                );
                if let Some((_, truncated)) = proof.split_last() {
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, truncated, root),
                        Err(ProofError::WrongLength { expected, got: expected - 1 })
                    );
                }
            }
        }
        assert_eq!(
            verify_inclusion(&empty_root(), 0, 0, &[], &empty_root()),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
    }

    #[test]
    fn consistency_proofs_verify_and_tampered_ones_do_not() {
        let tree = tree(71);
        let roots: Vec<Hash> = (0..=71).map(|size| root(&tree, size).unwrap()).collect();
        for new in 0..=70u64 {
            let new_root = &roots[new as usize];
            for old in 0..=new {
                let old_root = &roots[old as usize];
                let proof = consistency_proof(&tree, old, new).unwrap();
                assert_eq!(verify_consistency(old, new, old_root, new_root, &proof), Ok(()), "{old} to {new}");
                if old == 0 || old == new {
                    assert!(proof.is_empty());
                }
                if old == 0 {
                    // The empty tree is a prefix of any tree, whatever the roots say.
                    assert_eq!(verify_consistency(0, new, &flip(old_root, 0), &flip(new_root, 0), &[]), Ok(()));
                } else {
                    assert!(verify_consistency(old, new, &flip(old_root, 1), new_root, &proof).is_err());
                }
                if old != 0 {
                    assert!(verify_consistency(old, new, old_root, &flip(new_root, 2), &proof).is_err());
                }
                for i in 0..proof.len() {
                    let mut tampered = proof.clone();
                    tampered[i] = flip(&tampered[i], i + 7);
                    assert!(
                        verify_consistency(old, new, old_root, new_root, &tampered).is_err(),
                        "{old} to {new}, {i}"
                    );
                }
                // Other sizes, against those sizes' roots.
                for (o, n) in [(old + 1, new), (old.wrapping_sub(1), new), (old, new + 1), (old, new.wrapping_sub(1))] {
                    // (Equal sizes with equal roots are consistent with an empty proof whatever it proved.)
                    if (o, n) != (old, new) && o < n && n <= 71 && o != 0 {
                        let result = verify_consistency(o, n, &roots[o as usize], &roots[n as usize], &proof);
                        assert!(result.is_err(), "the proof of {old} to {new} taken for {o} to {n}");
                    }
                }
                let expected = proof.len();
                let mut extended = proof.clone();
                extended.push(*old_root);
                assert_eq!(
                    verify_consistency(old, new, old_root, new_root, &extended),
                    Err(ProofError::WrongLength { expected, got: expected + 1 })
                );
                if let Some((_, truncated)) = proof.split_last() {
                    assert_eq!(
                        verify_consistency(old, new, old_root, new_root, truncated),
                        Err(ProofError::WrongLength { expected, got: expected - 1 })
                    );
                }
            }
            if new > 0 {
                assert_eq!(
                    verify_consistency(new, new - 1, new_root, &roots[new as usize - 1], &[]),
                    Err(ProofError::Shrank { old: new, new: new - 1 })
                );
                // Same size, other root: a fork.
                assert_eq!(
                    verify_consistency(new, new, new_root, &flip(new_root, 0), &[]),
                    Err(ProofError::RootMismatch)
                );
            }
        }
    }

    #[test]
    fn proofs_out_of_range_are_errors() {
        let tree = tree(10);
        assert!(matches!(inclusion_proof(&tree, 10, 10), Err(ProveError::IndexOutOfRange { index: 10, size: 10 })));
        assert!(matches!(inclusion_proof(&tree, 0, 0), Err(ProveError::IndexOutOfRange { index: 0, size: 0 })));
        assert!(matches!(consistency_proof(&tree, 5, 4), Err(ProveError::Shrank { old: 5, new: 4 })));
        // Beyond what the store holds: its error, not a panic.
        let missing = inclusion_proof(&tree, 3, 11).unwrap_err();
        assert!(matches!(missing, ProveError::Subtrees(MissingSubtree { .. })), "{missing:?}");
        assert!(matches!(consistency_proof(&tree, 3, 12), Err(ProveError::Subtrees(_))));
        assert!(root(&tree, 11).is_err());
        assert_eq!(tree.subtree(0, u64::MAX), Err(MissingSubtree { level: 0, index: u64::MAX }));
        assert_eq!(tree.subtree(200, 0), Err(MissingSubtree { level: 200, index: 0 }));
        // The largest sizes split without overflowing.
        assert_eq!(split(u64::MAX), 1 << 63);
        assert_eq!(path(u64::MAX - 2, u64::MAX).len(), 64);
        assert_eq!(path(u64::MAX - 1, u64::MAX).len(), 63, "the last leaf hangs one level higher");
        assert_eq!(subproof(u64::MAX - 1, u64::MAX).len(), 64);
    }

    #[test]
    fn appending_a_batch_through_an_overlay_writes_what_pushing_makes() {
        for (before, batch) in [(0u64, 1u64), (0, 9), (1, 1), (3, 5), (7, 1), (8, 8), (13, 20)] {
            let base = tree(before);
            let full = tree(before + batch);
            let mut overlay = Overlay::new(&base);
            for size in before..before + batch {
                overlay.append(size, leaf_hash(&data(size))).unwrap();
            }
            assert_eq!(root(&overlay, before + batch), root(&full, before + batch));
            let pending = overlay.into_pending();
            let count = |t: &MemoryTree| t.levels.iter().map(Vec::len).sum::<usize>();
            assert_eq!(pending.len(), count(&full) - count(&base), "{before} + {batch}");
            for (level, index, hash) in pending {
                assert_eq!(full.subtree(level, index), Ok(hash));
                assert!(base.subtree(level, index).is_err(), "({level}, {index}) was complete before");
            }
        }
        // One leaf: the leaf, then each parent it completes.
        let tree = tree(7);
        let leaf = leaf_hash(&data(7));
        let added = appended(&tree, 7, leaf).unwrap();
        assert_eq!(added.iter().map(|&(l, i, _)| (l, i)).collect::<Vec<_>>(), [(0, 7), (1, 3), (2, 1), (3, 0)]);
        assert_eq!(added[3].2, root(&self::tree(8), 8).unwrap());
        // Appending past what the store holds reads a missing sibling.
        assert_eq!(appended(&tree, 9, leaf), Err(MissingSubtree { level: 0, index: 8 }));
    }

    fn tree(size: u64) -> MemoryTree {
        let mut tree = MemoryTree::new();
        (0..size).for_each(|i| tree.push(leaf_hash(&data(i))));
        assert_eq!(tree.len(), size);
        tree
    }

    const LARGE: u64 = 3000;
    static LARGE_TREE: LazyLock<MemoryTree> = LazyLock::new(|| tree(LARGE));

    /// The naive MTH of RFC 6962 §2.1, straight from its definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn large_trees_match_ct_merkle(size in 1..=LARGE, a in any::<u64>(), b in any::<u64>()) {
            let (index, old) = (a % size, b % (size + 1));
            let mut oracle = Oracle::new();
            (0..size).for_each(|i| oracle.push(data(i)));
            let tree = &*LARGE_TREE;
            let new_root = root(tree, size).unwrap();
            prop_assert_eq!(new_root.to_vec(), oracle.root().as_bytes().to_vec());
            let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&data(i))).collect();
            prop_assert_eq!(new_root, mth(&leaves));

            let proof = inclusion_proof(tree, index, size).unwrap();
            prop_assert_eq!(proof.concat(), oracle.prove_inclusion(index as usize).as_bytes().to_vec());
            prop_assert_eq!(verify_inclusion(&leaves[index as usize], index, size, &proof, &new_root), Ok(()));
            let mut tampered = proof.clone();
            if let Some(last) = tampered.last_mut() {
                *last = flip(last, a as usize);
                prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &tampered, &new_root).is_err());
            }

            let old_root = root(tree, old).unwrap();
            let proof = consistency_proof(tree, old, size).unwrap();
            if old > 0 && old < size {
                prop_assert_eq!(proof.concat(), oracle.prove_consistency((size - old) as usize).as_bytes().to_vec());
            }
            prop_assert_eq!(verify_consistency(old, size, &old_root, &new_root, &proof), Ok(()));
            let mut tampered = proof.clone();
            if let Some(first) = tampered.first_mut() {
                *first = flip(first, b as usize);
                prop_assert!(verify_consistency(old, size, &old_root, &new_root, &tampered).is_err());
            }
        }
    }

    // ---- leaves ----

    fn leaf() -> Leaf {
        Leaf {
            vault: "prod".into(),
            machine_id: "m-1".into(),
            position: 0x0102_0304_0506_0708,
            head: [0xab; 32],
            previous: Some(41),
            accepted_at_micros: -2,
        }
    }

    #[test]
    fn a_leaf_encodes_as_the_table_says_and_reads_back() {
        let bytes = leaf().encode().unwrap();
        let mut expected = vec![0x01, 0x00, 0x04];
        expected.extend_from_slice(b"prod");
        expected.extend_from_slice(&[0x00, 0x03]);
        expected.extend_from_slice(b"m-1");
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, 0, 41]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(bytes, expected);
        assert_eq!(Leaf::decode(&bytes), Ok(leaf()));
        assert_eq!(leaf().hash(), Ok(leaf_hash(&bytes)));

        let first = Leaf { previous: None, vault: "v".repeat(255), machine_id: "é".into(), ..leaf() };
        let bytes = first.encode().unwrap();
        assert_eq!(bytes[bytes.len() - 17..bytes.len() - 8], [0; 9]);
        assert_eq!(Leaf::decode(&bytes), Ok(first));
    }

    #[test]
    fn malformed_leaves_are_refused() {
        let too_long = Leaf { machine_id: "m".repeat(256), ..leaf() };
        assert_eq!(too_long.encode(), Err(LeafError::FieldLength { field: "machine id", len: 256 }));
        assert_eq!(
            Leaf { vault: String::new(), ..leaf() }.hash(),
            Err(LeafError::FieldLength { field: "vault name", len: 0 })
        );

        let good = leaf().encode().unwrap();
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] = byte;
            Leaf::decode(&bytes)
        };
        assert_eq!(with(0, 0x02), Err(LeafError::UnknownVersion(0x02)));
        assert_eq!(with(2, 0), Err(LeafError::FieldLength { field: "vault name", len: 0 }));
        assert_eq!(with(1, 1), Err(LeafError::FieldLength { field: "vault name", len: 260 }));
        assert_eq!(with(3, 0xff), Err(LeafError::NotUtf8("vault name")));
        let flag = 3 + 4 + 2 + 3 + 8 + 32;
        assert_eq!(with(flag, 0x02), Err(LeafError::PreviousFlag(0x02)));
        assert_eq!(with(flag, 0x00), Err(LeafError::PreviousWithoutFlag(41)));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Leaf::decode(&trailing), Err(LeafError::TrailingBytes(1)));
        for len in 0..good.len() {
            assert!(matches!(Leaf::decode(&good[..len]), Err(LeafError::Truncated(_))), "{len} bytes");
        }
        // A length of 256 is refused even when that many bytes follow.
        let mut long = vec![0x01, 0x01, 0x00];
        long.extend_from_slice(&[b'v'; 256]);
        assert_eq!(Leaf::decode(&long), Err(LeafError::FieldLength { field: "vault name", len: 256 }));
    }

    // ---- notes ----

    // The example of golang.org/x/mod/sumdb/note (its package documentation and example_test.go).
    const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n\
                           \n\
                           \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_go_note_example_signs_and_verifies_byte_for_byte() {
        let signer = NoteSigner::parse(GO_SKEY).unwrap();
        assert_eq!((signer.name(), signer.key_id()), ("PeterNeumann", 0xc74f20a3));
        assert_eq!(*signer.encode(), GO_SKEY);
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        assert_eq!(signer.sign_text(GO_TEXT).unwrap(), GO_NOTE);

        let verifier: NoteVerifier = GO_VKEY.parse().unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.open(GO_NOTE), Ok(GO_TEXT));
        // Signed, but not a checkpoint.
        assert!(matches!(verifier.verify(GO_NOTE), Err(NoteError::MalformedCheckpoint(_))));
        assert!(!format!("{signer:?}").contains("AYEKFALV"));
    }

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("example.com/vault", [7; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/vault".into(),
            size: 20852163,
            root: leaf_hash(b"r"),
            extensions: vec!["x y".into()],
        }
    }

    #[test]
    fn a_checkpoint_round_trips_through_a_signed_note() {
        let (signer, checkpoint) = (signer(), checkpoint());
        let body = checkpoint.body();
        assert_eq!(body, format!("example.com/vault\n20852163\n{}\nx y\n", BASE64.encode(checkpoint.root)));
        assert_eq!(Checkpoint::parse(&body), Ok(checkpoint.clone()));
        let note = signer.sign(&checkpoint).unwrap();
        assert!(note.starts_with(&format!("{body}\n\u{2014} example.com/vault ")));
        assert_eq!(signer.verifier().verify(&note), Ok(checkpoint));

        let verifier: NoteVerifier = signer.verifier().to_string().parse().unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(NoteSigner::parse(&signer.encode()).unwrap().verifier(), verifier);

        let empty = Checkpoint { origin: "o".into(), size: 0, root: empty_root(), extensions: vec![] };
        assert_eq!(signer.verifier().verify(&signer.sign(&empty).unwrap()), Ok(empty));
        // The spec's example body.
        let example =
            Checkpoint::parse("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n");
        assert_eq!(example.map(|c| (c.origin, c.size)), Ok(("example.com/behind-the-sofa".to_string(), 20852163)));
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = BASE64.encode([9u8; 32]);
        for body in [
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 1\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("\n1\n{root}\n"),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\next\n\n"),
            format!("o\n1\n{}\n", BASE64.encode([9u8; 31])),
            format!("o\n1\n{}\n", BASE64.encode([9u8; 33])),
            format!("o\n1\n{}\n", &root[..43]),
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".into(),
            "o\n1\n".into(),
        ] {
            assert!(matches!(Checkpoint::parse(&body), Err(NoteError::MalformedCheckpoint(_))), "{body:?}");
        }
        assert_eq!(Checkpoint::parse(&format!("o\n1\n{root}")), Err(NoteError::Unterminated));
        assert_eq!(Checkpoint::parse(&format!("o\n1\n{root}\ne\tx\n")), Err(NoteError::ControlCharacter));
        assert_eq!(Checkpoint::parse(&format!("o\n0\n{root}\n")).map(|c| c.size), Ok(0));
        assert_eq!(Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n")).map(|c| c.size), Ok(u64::MAX));

        // A checkpoint whose body would say another checkpoint is not signed.
        let forged = Checkpoint { origin: "o\n999".into(), ..checkpoint() };
        assert_eq!(signer().sign(&forged), Err(NoteError::ControlCharacter));
        let empty_line = Checkpoint { extensions: vec![String::new()], ..checkpoint() };
        assert!(signer().sign(&empty_line).is_err());
        assert_eq!(signer().sign_text("no newline"), Err(NoteError::Unterminated));
    }

    #[test]
    fn notes_not_signed_by_the_key_are_refused() {
        let (signer, verifier) = (signer(), signer().verifier());
        let note = signer.sign(&checkpoint()).unwrap();
        let key = "example.com/vault+".to_string() + &format!("{:08x}", verifier.key_id());

        let tampered_body = note.replacen("20852163", "20852164", 1);
        assert_eq!(verifier.verify(&tampered_body), Err(NoteError::BadSignature { key: key.clone() }));

        let (body, line) = note.rsplit_once("\n\u{2014} example.com/vault ").unwrap();
        let mut signature = BASE64.decode(line.trim_end()).unwrap();
        signature[40] ^= 0x01;
        let tampered = format!("{body}\n\u{2014} example.com/vault {}\n", BASE64.encode(&signature));
        assert_eq!(verifier.verify(&tampered), Err(NoteError::BadSignature { key: key.clone() }));
        signature.pop();
        let short = format!("{body}\n\u{2014} example.com/vault {}\n", BASE64.encode(&signature));
        assert_eq!(verifier.verify(&short), Err(NoteError::BadSignature { key: key.clone() }));

        // Another key, under the same name or another; the same key under another name.
        let other = NoteSigner::from_seed("example.com/vault", [8; 32]).unwrap();
        let renamed = NoteSigner::from_seed("example.com/other", [7; 32]).unwrap();
        for signer in [&other, &renamed] {
            let note = signer.sign(&checkpoint()).unwrap();
            assert_eq!(verifier.verify(&note), Err(NoteError::NotSignedByKey { key: key.clone() }));
        }
        // Others' signatures beside this key's are ignored.
        let cosigned = other.sign(&checkpoint()).unwrap() + note.split_once("\n\n").unwrap().1;
        assert_eq!(verifier.verify(&cosigned), Ok(checkpoint()));
        assert!(renamed.verifier().verify(&cosigned).is_err());

        let dashed = note.replace("\u{2014} ", "- ");
        assert_eq!(verifier.verify(&dashed), Err(NoteError::NotASignatureLine));
        assert_eq!(verifier.verify(&note.replace("\n\n", "\n")), Err(NoteError::NoSignatureBlock));
        assert_eq!(verifier.verify(note.trim_end()), Err(NoteError::NoSignatureBlock));
        assert_eq!(verifier.verify(&format!("{body}\n\n")), Err(NoteError::NoSignatureBlock));
        assert_eq!(verifier.verify(&note.replacen("x y", "x\ty", 1)), Err(NoteError::ControlCharacter));
        let no_space = format!("{body}\n\u{2014} example.com/vault\n");
        assert_eq!(verifier.verify(&no_space), Err(NoteError::MalformedSignatureLine));
        let not_base64 = format!("{body}\n\u{2014} example.com/vault !!!!\n");
        assert_eq!(verifier.verify(&not_base64), Err(NoteError::MalformedSignatureLine));
    }

    #[test]
    fn oversized_notes_are_refused() {
        let verifier = signer().verifier();
        let huge = format!("{}\n\n\u{2014} a AAAAAAA=\n", "a".repeat(MAX_NOTE_BYTES));
        assert_eq!(verifier.verify(&huge), Err(NoteError::TooLarge { len: huge.len() }));

        let note = signer().sign(&checkpoint()).unwrap();
        let other = NoteSigner::from_seed("someone.else", [9; 32]).unwrap().sign(&checkpoint()).unwrap();
        let other_line = other.split_once("\n\n").unwrap().1;
        let with_others = |n: usize| note.clone() + &other_line.repeat(n);
        assert_eq!(verifier.verify(&with_others(MAX_NOTE_SIGNATURES - 1)), Ok(checkpoint()));
        assert_eq!(verifier.verify(&with_others(MAX_NOTE_SIGNATURES)), Err(NoteError::TooManySignatures));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(GO_VKEY.to_uppercase().parse::<NoteVerifier>().is_err());
        let upper_id = GO_VKEY.replace("c74f20a3", "C74F20A3");
        assert!(matches!(upper_id.parse::<NoteVerifier>(), Err(NoteError::MalformedKey(_))));
        assert_eq!(
            GO_VKEY.replace("c74f20a3", "c74f20a4").parse::<NoteVerifier>(),
            Err(NoteError::KeyIdMismatch { stated: 0xc74f20a4, computed: 0xc74f20a3 })
        );
        assert!(matches!(
            GO_VKEY.replace("PeterNeumann", "PeterNeumanm").parse::<NoteVerifier>(),
            Err(NoteError::KeyIdMismatch { .. })
        ));
        assert!(matches!(GO_VKEY.replace("+ARpc", "+Apc").parse::<NoteVerifier>(), Err(NoteError::MalformedKey(_))));
        let mut raw = BASE64.decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").unwrap();
        raw[0] = 0x02;
        let other_type = format!("PeterNeumann+c74f20a3+{}", BASE64.encode(&raw));
        assert_eq!(other_type.parse::<NoteVerifier>(), Err(NoteError::UnknownAlgorithm(0x02)));
        assert!(matches!("PeterNeumann".parse::<NoteVerifier>(), Err(NoteError::MalformedKey(_))));

        for name in ["", "a+b", "a b", "a\u{2003}b", "a\u{a0}b", "a\u{1}b"] {
            assert_eq!(NoteSigner::from_seed(name, [1; 32]).err(), Some(NoteError::InvalidKeyName(name.into())));
        }
        assert!(matches!(NoteSigner::parse(&GO_SKEY[8..]), Err(NoteError::MalformedKey(_))));
        assert!(matches!(NoteSigner::parse(GO_VKEY), Err(NoteError::MalformedKey(_))));
        assert!(matches!(
            NoteSigner::parse(&GO_SKEY.replace("c74f20a3", "00000000")),
            Err(NoteError::KeyIdMismatch { stated: 0, computed: 0xc74f20a3 })
        ));
        assert!(matches!(NoteSigner::parse(&GO_SKEY.replace("+AYEK", "+AYE")), Err(NoteError::MalformedKey(_))));
    }
}
