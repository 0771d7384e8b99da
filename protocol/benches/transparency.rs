//! The transparency log's costs at 1,000,000 leaves: what the vault pays to append and sign, what
//! it pays to prove, what an agent or an auditor pays to check.
//!
//! ```text
//! cargo bench -p regent-protocol --bench transparency                 # everything (about 1 minute on 2 cores)
//! cargo bench -p regent-protocol --bench transparency -- inclusion    # a criterion filter (a regex on the ids)
//! ```
//!
//! Benchmarks (criterion reports the time of one iteration; operations per second = 1 / time):
//! - `append_1m_and_sign`: one iteration builds the tree of 1M leaves, each leaf encoded, hashed
//!   and pushed (what the vault pays per accepted head), then computes the root and signs one
//!   checkpoint note.
//! - `inclusion_proof_generate`: one inclusion proof of a random leaf in the tree of 1M.
//! - `inclusion_proof_verify`: one signed checkpoint note verified (Ed25519 and parsing), then one
//!   inclusion proof checked against its root.
//! - `consistency_proof_generate` / `consistency_proof_verify`: one consistency proof from a random
//!   old size in 1..1M to 1M, made / checked.
//!
//! The leaves are realistic: vault `prod`, 1000 machines with UUID-text ids reporting round-robin,
//! each leaf's previous the same machine's leaf 1000 before it, positions growing, acceptance times
//! increasing. At setup the bench prints what a leaf takes as the vault stores it.
//!
//! Under `cargo test --benches` (criterion's test mode) the tree has 10,000 leaves.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use regent_protocol::transparency::{
    Checkpoint, Hash, Leaf, MemoryTree, NoteSigner, appended, consistency_proof, inclusion_proof, leaf_hash, root,
    verify_consistency, verify_inclusion,
};

/// Leaves in the tree when benchmarking.
const LEAVES: u64 = 1_000_000;
/// Leaves in the tree in criterion's test mode (one quick pass, unoptimised).
const TEST_LEAVES: u64 = 10_000;
/// Machines reporting, round-robin.
const MACHINES: u64 = 1000;
/// Proofs prepared for the verification benchmarks, taken in turn.
const POOL: usize = 1024;
const ORIGIN: &str = "vault.example.com/prod";
/// 2025-01-01T00:00:00Z, in Unix microseconds.
const START_MICROS: i64 = 1_735_689_600_000_000;

/// The bytes of the vault's sled keys: `n`, level, index (u64 BE) for a subtree, `l`, index for a leaf.
const SUBTREE_KEY_BYTES: u64 = 1 + 1 + 8;
const LEAF_KEY_BYTES: u64 = 1 + 8;

/// SplitMix64: a deterministic source of random indexes and stand-in head hashes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..hi` for a benchmark (the modulo bias is below 2^-40).
    fn below(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Machine `m`'s id: a version-4 UUID, as text.
fn machine_id(m: u64) -> String {
    let mut rng = Rng(m ^ 0x5eed);
    let bits = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    // The version nibble (4) and the variant bits (0b10).
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// One leaf per machine, rewritten in place for each of its heads: the vault has the leaf's fields
/// from the report, so building them is not the append's cost.
fn machines() -> Vec<Leaf> {
    (0..MACHINES)
        .map(|m| Leaf {
            vault: "prod".into(),
            machine_id: machine_id(m),
            position: 0,
            head: [0; 32],
            previous: None,
            accepted_at_micros: 0,
        })
        .collect()
}

/// Leaf `index` of the tree: machine `index % MACHINES`'s next head, 25 records after its last.
fn leaf(machines: &mut [Leaf], index: u64) -> &Leaf {
    let leaf = &mut machines[(index % MACHINES) as usize];
    let round = index / MACHINES;
    leaf.position = (round + 1) * 25;
    let mut rng = Rng(index);
    for chunk in leaf.head.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_be_bytes());
    }
    leaf.previous = index.checked_sub(MACHINES);
    leaf.accepted_at_micros = START_MICROS + index as i64 * 3_600;
    leaf
}

fn leaf_hash_at(machines: &mut [Leaf], index: u64) -> Hash {
    leaf_hash(&leaf(machines, index).encode().expect("the bench's leaves encode"))
}

fn checkpoint(tree: &MemoryTree, size: u64) -> Checkpoint {
    let root = root(tree, size).expect("the tree has its subtrees");
    Checkpoint { origin: ORIGIN.into(), size, root, extensions: Vec::new() }
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [7; 32]).expect("a valid key name")
}

/// The shared tree, built once, with what the vault would store for it.
struct Fixture {
    tree: MemoryTree,
    size: u64,
    leaves: Vec<Hash>,
}

fn fixture(size: u64) -> Fixture {
    let started = Instant::now();
    let mut machines = machines();
    let (mut tree, mut leaves) = (MemoryTree::new(), Vec::with_capacity(size as usize));
    let (mut leaf_bytes, mut subtrees) = (0u64, 0u64);
    for index in 0..size {
        let bytes = leaf(&mut machines, index).encode().expect("the bench's leaves encode");
        let hash = leaf_hash(&bytes);
        // What the vault writes for this leaf: its bytes, and each (level, index) subtree it completes.
        let written = appended(&tree, index, hash).expect("the tree has its subtrees");
        leaf_bytes += bytes.len() as u64;
        subtrees += written.len() as u64;
        tree.push(hash);
        leaves.push(hash);
    }
    let leaf_len = leaf_bytes as f64 / size as f64;
    let per_leaf = subtrees as f64 / size as f64;
    let subtree_bytes = per_leaf * (32 + SUBTREE_KEY_BYTES) as f64;
    let logical = leaf_len + LEAF_KEY_BYTES as f64 + subtree_bytes;
    // Logical bytes only: sled's own overhead (its page headers, per-key node overhead, log
    // segments and space not yet reclaimed) comes on top.
    eprintln!(
        "transparency bench: {size} leaves built in {:.2?}\n\
         - encoded leaf: {leaf_len:.1} bytes (+ {LEAF_KEY_BYTES}-byte key `l`+index), machine ids like {}\n\
         - subtrees stored: {subtrees} = {per_leaf:.4} a leaf, x (32-byte hash + {SUBTREE_KEY_BYTES}-byte key \
         `n`+level+index) = {subtree_bytes:.1} bytes a leaf\n\
         - logical bytes a leaf: {logical:.1} ({:.1} MB for the tree; sled's own overhead on top)",
        started.elapsed(),
        machines[0].machine_id,
        logical * size as f64 / 1e6,
    );
    Fixture { tree, size, leaves }
}

fn bench_append(c: &mut Criterion, size: u64) {
    let signer = signer();
    let mut machines = machines();
    let mut group = c.benchmark_group("transparency");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(12));
    group.bench_function("append_1m_and_sign", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let mut tree = MemoryTree::new();
                for index in 0..size {
                    tree.push(leaf_hash_at(&mut machines, index));
                }
                let note = signer.sign(&checkpoint(&tree, size)).expect("a valid checkpoint");
                black_box(&note);
                total += started.elapsed();
                // Freeing the tree is not the vault's cost: it keeps its tree.
                drop(black_box(tree));
            }
            total
        });
    });
    group.finish();
}

fn bench_proofs(c: &mut Criterion, f: &Fixture) {
    let (tree, size) = (&f.tree, f.size);
    let signer = signer();
    let verifier = signer.verifier();
    let checkpoint = checkpoint(tree, size);
    let note = signer.sign(&checkpoint).expect("a valid checkpoint");
    assert_eq!(verifier.verify(&note).as_ref(), Ok(&checkpoint));
    let mut group = c.benchmark_group("transparency");

    let mut rng = Rng(1);
    group.bench_function("inclusion_proof_generate", |b| {
        b.iter(|| {
            let index = rng.below(0, size);
            inclusion_proof(tree, black_box(index), size).expect("the tree has its subtrees")
        });
    });

    let mut rng = Rng(2);
    let inclusions: Vec<(u64, Hash, Vec<Hash>)> = (0..POOL)
        .map(|_| {
            let index = rng.below(0, size);
            let proof = inclusion_proof(tree, index, size).expect("the tree has its subtrees");
            (index, f.leaves[index as usize], proof)
        })
        .collect();
    let mut next = 0;
    group.bench_function("inclusion_proof_verify", |b| {
        b.iter(|| {
            let (index, leaf, proof) = &inclusions[next % POOL];
            next += 1;
            let checkpoint = verifier.verify(black_box(&note)).expect("the vault signed the note");
            verify_inclusion(leaf, *index, checkpoint.size, proof, &checkpoint.root).expect("the proof holds");
        });
    });

    let mut rng = Rng(3);
    group.bench_function("consistency_proof_generate", |b| {
        b.iter(|| {
            let old = rng.below(1, size);
            consistency_proof(tree, black_box(old), size).expect("the tree has its subtrees")
        });
    });

    let mut rng = Rng(4);
    let consistencies: Vec<(u64, Hash, Vec<Hash>)> = (0..POOL)
        .map(|_| {
            let old = rng.below(1, size);
            let old_root = root(tree, old).expect("the tree has its subtrees");
            (old, old_root, consistency_proof(tree, old, size).expect("the tree has its subtrees"))
        })
        .collect();
    let mut next = 0;
    group.bench_function("consistency_proof_verify", |b| {
        b.iter(|| {
            let (old, old_root, proof) = &consistencies[next % POOL];
            next += 1;
            verify_consistency(*old, size, old_root, &checkpoint.root, black_box(proof)).expect("the proof holds");
        });
    });
    group.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: benchmarks with `--bench`, a single quick pass (test mode) without it.
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let size = if benchmarking { LEAVES } else { TEST_LEAVES };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let fixture = fixture(size);
    bench_append(&mut c, size);
    bench_proofs(&mut c, &fixture);
    c.final_summary();
}
