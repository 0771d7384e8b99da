//! Proof bundles: a machine's latest head as the vault's transparency log proves it. Written on
//! the agent (`regent audit proof`: the head reported now, the answer's proof kept) or the
//! auditor's way (`regent vault proof`: from the vault, not from the machine under audit), and
//! checked by `regent audit verify --proof` (offline with `--file EXPORT --vault-key KEYFILE`).
//! The checks are the engine's (`regent_engine::vault_log`); this module reads and writes the
//! files, finds the consistency proofs the checks need, and says what came of them.

use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

use regent_engine::anchoring::{self, Witness};
use regent_engine::events;
use regent_engine::model::{Change, Outcome};
use regent_engine::vault_log::{self, Bundle, Inconsistency, MAX_BUNDLE_BYTES, Proved};
use regent_store::{Head, VerifyReport};
use regent_vault::AdminClient;
use regent_vault::protocol::transparency::{Checkpoint, Hash};
use serde_json::json;

use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, outln};

// ---------------------------------------------------------------------------------------------
// Writing bundles

/// `regent audit proof -o BUNDLE`: the head reported now, and the vault's proof of it written.
pub fn write_own(ctx: &Context, output: &Path, endpoint: Option<String>) -> Result<u8, Failure> {
    crate::views::new_file_only(output)?;
    // A report whose evidence moved the head (the vault's key taken at first contact) is made
    // once more, so that the bundle proves the log's head itself.
    for _ in 0..2 {
        let reported = crate::anchor::report(ctx, endpoint.as_deref())?;
        let (anchor, witness) = match &reported.result {
            Ok(answered) => answered,
            Err(e) => return Err(crate::anchor::report_failure(&reported, e, "regent audit proof")),
        };
        let vault = &reported.registration.vault;
        let proved = match (witness, &anchor.log) {
            (Some(Witness { checked: Ok(_), recorded: Some(_), .. }), _) => continue,
            (Some(Witness { checked: Ok(size), .. }), Some(log)) => (*size, log),
            (Some(Witness { checked: Err(problem), .. }), _) => {
                return Err(Failure::refused(format!(
                    "{}: vault {vault} anchored log head {}, but its proof does not hold: {problem}; no bundle was written (the evidence is in this machine's log)",
                    problem.code(),
                    reported.head.position
                )));
            }
            _ => return Err(no_log(vault)),
        };
        let bundle = Bundle::new(vault, &reported.registration.machine_id, proved.1.clone());
        write_bundle(output, &bundle)?;
        tell_written(ctx, output, &bundle, reported.head.position, proved.0);
        return Ok(0);
    }
    Err(Failure::refused(
        "vault_log_inconsistent: the vault's answers kept moving this log's head; run `regent audit proof` again",
    ))
}

/// `regent vault proof --vault V --machine ID -o BUNDLE`: the machine's latest logged head, as
/// the vault proves it, checked with `vault_key` when given.
pub fn write_for_auditor(
    ctx: &Context,
    client: &AdminClient,
    vault: &str,
    machine_id: &str,
    output: &Path,
    from: Option<u64>,
    vault_key: Option<&Path>,
) -> Result<u8, Failure> {
    crate::views::new_file_only(output)?;
    let proof = client.machine_proof(vault, machine_id, from).map_err(crate::vault::admin_failure)?;
    let bundle = Bundle::new(vault, machine_id, proof);
    let (key, given) = match vault_key {
        Some(path) => (crate::vault::read_vault_key(path)?.to_string(), true),
        None => (
            client
                .service_health()
                .map_err(crate::vault::admin_failure)?
                .checkpoint_key
                .ok_or_else(|| no_log(vault))?,
            false,
        ),
    };
    let proved = bundle.open(&key).map_err(|problem| {
        Failure::refused(format!(
            "vault_log_inconsistent: vault {vault}'s proof of machine {machine_id}'s latest head does not hold: {problem}; \
             no bundle was written: its transparency log is damaged or was altered: tell whoever runs the vault"
        ))
    })?;
    if let Some(consistency) = from.and_then(|from| bundle.consistency_from(from)) {
        let from = from.unwrap_or_default();
        consistency.map_err(|detail| {
            Failure::refused(format!(
                "vault_log_inconsistent: the vault's consistency proof from {from} heads: {detail}"
            ))
        })?;
    }
    write_bundle(output, &bundle)?;
    tell_written(ctx, output, &bundle, proved.leaf.position, proved.checkpoint.size);
    if !given && !ctx.json {
        terminal::errln!(
            "checked with the key the service names ({key}); whoever checks the bundle passes the key they trust (--vault-key KEYFILE)"
        );
    }
    Ok(0)
}

fn no_log(vault: &str) -> Failure {
    Failure::refused(format!(
        "checkpoint_unavailable: vault {vault}'s service keeps no transparency log (a build older than this one), so there is nothing to prove a head with"
    ))
}

/// Written whole to a new file, or not at all.
fn write_bundle(output: &Path, bundle: &Bundle) -> Result<(), Failure> {
    let cannot = |e: std::io::Error| {
        Failure::refused(format!("cannot write {}: {e}; check the folder and its free space", output.display()))
    };
    let mut text = serde_json::to_vec_pretty(bundle).map_err(|e| Failure::store(e.to_string()))?;
    text.push(b'\n');
    let folder = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(&folder).map_err(cannot)?;
    file.write_all(&text).map_err(cannot)?;
    file.as_file().sync_all().map_err(cannot)?;
    file.persist_noclobber(output).map_err(|e| cannot(e.error))?;
    Ok(())
}

fn tell_written(ctx: &Context, output: &Path, bundle: &Bundle, position: u64, size: u64) {
    if ctx.json {
        terminal::json_line(json!({
            "written": output, "vault": bundle.vault, "machine_id": bundle.machine_id,
            "position": position, "index": bundle.proof.index, "tree_size": size,
        }));
    } else {
        outln!(
            "proof bundle written to {}: head {position} of machine {} (vault {}), leaf {} of the vault's signed tree of {size} heads",
            output.display(),
            bundle.machine_id,
            bundle.vault,
            bundle.proof.index
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a log against bundles

fn read_bundle(path: &Path) -> Result<Bundle, Failure> {
    let unreadable = |detail: String| {
        Failure::usage(format!("the proof bundle {}: {detail}", path.display())).because("proof_bundle_unreadable")
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BUNDLE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| unreadable(format!("{e}; check the path")))?;
    Bundle::parse(&bytes).map_err(|detail| {
        unreadable(format!("{detail}; a bundle is what `regent audit proof` or `regent vault proof` writes"))
    })
}

/// A bundle that does not hold with the key: signed by another, or forged.
fn bundle_failure(path: &Path, problem: &Inconsistency) -> Failure {
    let path = path.display();
    let next = "get the bundle again from the vault (`regent vault proof`), and check that the key file is the vault's";
    Failure::refused(match problem {
        Inconsistency::OtherKey { .. } | Inconsistency::Origin { .. } => {
            format!("proof_other_key: the proof bundle {path} does not hold: {problem}; {next}")
        }
        _ => format!("proof_forged: the proof bundle {path} does not hold: {problem}; {next}"),
    })
}

/// The log checked: an export, or this machine's store (with what it trusts and saw last).
struct Subject {
    /// The machines the log shows registered (at which vault).
    machines: Vec<(String, String)>,
    /// The key the log trusts for its vault, and the vault's address (the store only).
    trusted_key: Option<String>,
    endpoint: Option<String>,
    /// The checkpoint this machine verified last (the store only).
    seen: Option<vault_log::Witnessed>,
    file: Option<PathBuf>,
}

impl Subject {
    fn export(file: &Path) -> Result<Subject, Failure> {
        let open = || {
            std::fs::File::open(file)
                .map(|f| BufReader::with_capacity(256 * 1024, f))
                .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", file.display())))
        };
        let (_, records) = regent_store::read_export_decoded(open()?, false, events::decode_step)
            .map_err(|e| Failure::refused(format!("log_unreadable: {} is not an exported log: {e}", file.display())))?;
        let mut machines = Vec::new();
        // A record that does not read is the chain check's to name; it registers no machine here.
        for (_, step) in records.flatten() {
            if let Some(Ok(step)) = step
                && let Outcome::Accepted(Change::Registered(r)) = step.outcome
            {
                machines.push((r.vault, r.machine_id));
            }
        }
        Ok(Subject { machines, trusted_key: None, endpoint: None, seen: None, file: Some(file.to_path_buf()) })
    }

    fn store(ctx: &Context) -> Result<Subject, Failure> {
        let store = ctx.open_existing_store()?.ok_or_else(|| {
            Failure::refused(format!(
                "not_registered: there is no log in {} to check against the bundles; pass the log with --file EXPORT",
                ctx.data_dir.display()
            ))
        })?;
        let (state, _) = regent_engine::projections::current_state(&store)?;
        let mut machines = Vec::new();
        for record in store.read_stream(events::STREAM, 1) {
            if let Ok(record) = record
                && let Ok(step) = events::decode(&record)
                && let Outcome::Accepted(Change::Registered(r)) = step.outcome
            {
                machines.push((r.vault, r.machine_id));
            }
        }
        let seen = crate::anchor::witnessed(ctx);
        let trusted_key = state.vault_key.map(|k| k.vault_key).or_else(|| seen.as_ref().map(|w| w.vault_key.clone()));
        let endpoint = state.registration.map(|r| r.endpoint);
        Ok(Subject { machines, trusted_key, endpoint, seen, file: None })
    }

    fn shows(&self, proved: &Proved) -> bool {
        self.machines.iter().any(|(vault, machine)| *vault == proved.leaf.vault && *machine == proved.leaf.machine_id)
    }

    /// The log's chain walked to `head`.
    fn verify(&self, ctx: &Context, head: Head) -> Result<VerifyReport, Failure> {
        match &self.file {
            Some(file) => {
                let input = std::fs::File::open(file)
                    .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", file.display())))?;
                Ok(regent_store::verify_export(BufReader::with_capacity(256 * 1024, input), Some(head))?.1)
            }
            None => Ok(ctx.open_store()?.verify(Some(head))?),
        }
    }
}

/// Where consistency proofs the bundles lack come from: the vault, when there is one to ask.
struct Proofs<'a> {
    bundles: &'a [(PathBuf, Bundle, Proved)],
    endpoint: Option<String>,
    ca_file: Option<PathBuf>,
}

impl Proofs<'_> {
    /// A proof that the tree of `from` heads is a prefix of the tree of `to`.
    fn between(&self, from: u64, to: u64) -> Result<Option<Vec<Hash>>, Failure> {
        if from == to {
            return Ok(None);
        }
        let carried = self
            .bundles
            .iter()
            .filter(|(_, _, p)| p.checkpoint.size == to)
            .find_map(|(_, bundle, _)| bundle.consistency_from(from));
        if let Some(carried) = carried {
            return carried.map(Some).map_err(|detail| {
                Failure::refused(format!(
                    "vault_log_inconsistent: a bundle's consistency proof from {from} heads: {detail}"
                ))
            });
        }
        let Some(endpoint) = &self.endpoint else {
            return Err(Failure::usage(format!(
                "proof_needed: the checkpoints of {from} and {to} heads need a consistency proof, which no bundle carries: pass --endpoint URL to ask the vault, or a bundle made with `regent vault proof --from {from}`"
            )));
        };
        let client =
            AdminClient::without_token(endpoint, self.ca_file.as_deref()).map_err(crate::vault::admin_failure)?;
        client.consistency(from, to).map(Some).map_err(crate::vault::admin_failure)
    }
}

/// `regent audit verify [--file EXPORT] --proof BUNDLE... [--vault-key KEYFILE]`.
pub fn verify(
    ctx: &Context,
    file: Option<&Path>,
    paths: &[PathBuf],
    vault_key: Option<&Path>,
    endpoint: Option<String>,
) -> Result<u8, Failure> {
    let bundles = paths.iter().map(|p| read_bundle(p).map(|b| (p.clone(), b))).collect::<Result<Vec<_>, _>>()?;
    let subject = match file {
        Some(file) => Subject::export(file)?,
        None => Subject::store(ctx)?,
    };
    let key = match vault_key {
        Some(path) => crate::vault::read_vault_key(path)?.to_string(),
        None => subject.trusted_key.clone().ok_or_else(|| {
            Failure::usage(
                "no key to check the bundles with: pass --vault-key KEYFILE (the vault's key, as `regent vault checkpoint --public-key` prints it)",
            )
            .because("vault_key_needed")
        })?,
    };
    let mut opened = Vec::new();
    for (path, bundle) in bundles {
        let proved = bundle.open(&key).map_err(|e| bundle_failure(&path, &e))?;
        opened.push((path, bundle, proved));
    }
    let proofs =
        Proofs { bundles: &opened, endpoint: endpoint.or(subject.endpoint.clone()), ca_file: ctx.ca_file.clone() };

    // The views meet: every two bundles, and each with the checkpoint this machine checked last.
    let views = |detail: String| {
        Failure::refused(format!(
            "vault_log_inconsistent: {detail}: the vault showed two parties two histories, or rewrote its log; keep the bundles as evidence and tell whoever audits the vault"
        ))
    };
    for (i, (a_path, _, a)) in opened.iter().enumerate() {
        for (b_path, _, b) in opened.iter().skip(i + 1) {
            let (small, large) = if a.checkpoint.size <= b.checkpoint.size { (a, b) } else { (b, a) };
            let proof = proofs.between(small.checkpoint.size, large.checkpoint.size)?;
            vault_log::views_meet(a, b, proof.as_deref())
                .map_err(|e| views(format!("{} and {} do not meet: {e}", a_path.display(), b_path.display())))?;
        }
    }
    // Checked with another key (another vault's, before a move), it is no view of this tree.
    let seen = match subject.seen.as_ref().filter(|seen| seen.vault_key == key) {
        Some(seen) => Some(checkpoint_seen(&key, seen)?),
        None => None,
    };
    if let Some(seen) = &seen {
        for (path, _, proved) in &opened {
            let (small, large) = ordered(seen, &proved.checkpoint);
            let proof = proofs.between(small.size, large.size)?;
            vault_log::trees_meet(seen, &proved.checkpoint, proof.as_deref()).map_err(|e| {
                views(format!(
                    "{} and the checkpoint this machine verified last ({} heads) do not meet: {e}",
                    path.display(),
                    seen.size
                ))
            })?;
        }
    }

    // The log's head is its machine's latest head the vault logged: the largest tree's, whose
    // chain of previous leaves the views checked.
    let latest = opened
        .iter()
        .filter(|(_, _, p)| subject.shows(p))
        .max_by_key(|(_, _, p)| (p.checkpoint.size, p.index))
        .map(|(_, _, p)| p);
    let Some(latest) = latest else {
        let machines: Vec<&str> = opened.iter().map(|(_, _, p)| p.leaf.machine_id.as_str()).collect();
        if file.is_some() || subject.machines.is_empty() {
            return Err(Failure::refused(format!(
                "proof_other_machine: the bundles prove heads of {}, and this log registers none of them; get the bundle of this log's machine (`regent vault proof --machine ID`)",
                machines.join(", ")
            )));
        }
        tell_views_only(ctx, &opened, seen.as_ref());
        return Ok(0);
    };
    let logged = latest.head();
    let report = subject.verify(ctx, logged)?;
    let (comparison, range) = anchoring::compare(&report, logged);
    let stale = comparison == anchoring::Comparison::Match && report.verified_head.position > logged.position;
    let outcome = match comparison {
        _ if stale => "stale",
        anchoring::Comparison::Match => "latest",
        anchoring::Comparison::TailCut => "tail_cut",
        anchoring::Comparison::Altered => "altered",
        anchoring::Comparison::ChainBroken => "chain_broken",
    };
    let machine = &latest.leaf.machine_id;
    let size = latest.checkpoint.size;
    if ctx.json {
        let mut value = serde_json::to_value(&report).map_err(|e| Failure::store(e.to_string()))?;
        value["proof"] = json!({
            "outcome": outcome, "vault": latest.leaf.vault, "machine_id": machine,
            "position": logged.position, "hash": logged.hash, "index": latest.index, "tree_size": size,
            "bundles": opened.len(), "seen_tree_size": seen.as_ref().map(|s| s.size),
        });
        terminal::json_line(value);
    } else {
        crate::views::print_report(&report, false);
        outln!(
            "the vault logged head {} as machine {machine}'s latest (leaf {} of its signed tree of {size} heads)",
            logged.position,
            latest.index
        );
        if opened.len() > 1 || seen.is_some() {
            outln!("{}", views_line(&opened, seen.as_ref()));
        }
    }
    let failed = |message: String| Err(Failure::refused(message).printed_if(ctx.json));
    match comparison {
        _ if stale => failed(format!(
            "proof_stale: the bundle proves head {} of machine {machine}, but this log goes on to {}: the records after it are not proved; get a fresh bundle (`regent vault proof`, or `regent audit proof` on the machine)",
            logged.position, report.verified_head.position
        )),
        anchoring::Comparison::Match => Ok(0),
        anchoring::Comparison::TailCut => failed(format!(
            "log_tail_cut: the vault logged head {} as machine {machine}'s latest, but this log ends at {}: {} missing (cut off, or an older copy)",
            logged.position,
            report.verified_head.position,
            range.map_or_else(String::new, |r| terminal::positions(r.from, r.to))
        )),
        anchoring::Comparison::Altered => failed(format!(
            "log_head_mismatch: record {} is not the head the vault logged for machine {machine}: the log was rewritten, or comes from a forked copy",
            logged.position
        )),
        anchoring::Comparison::ChainBroken => failed(format!(
            "chain_broken: the log fails its own check at {}; run `regent audit verify` for details",
            report.failure.as_ref().map_or_else(|| "an unknown record".to_string(), ToString::to_string)
        )),
    }
}

/// The checkpoint this machine verified last, checked again with the key.
fn checkpoint_seen(key: &str, seen: &vault_log::Witnessed) -> Result<Checkpoint, Failure> {
    let unverified = |detail: String| {
        Failure::refused(format!(
            "vault_log_inconsistent: the checkpoint this machine verified last (log-anchor.json) does not verify with the key: {detail}"
        ))
    };
    let key: regent_vault::protocol::transparency::NoteVerifier =
        key.parse().map_err(|e| unverified(format!("{e}")))?;
    key.verify(&seen.checkpoint).map_err(|e| unverified(e.to_string()))
}

fn ordered<'c>(a: &'c Checkpoint, b: &'c Checkpoint) -> (&'c Checkpoint, &'c Checkpoint) {
    if a.size <= b.size { (a, b) } else { (b, a) }
}

fn views_line(opened: &[(PathBuf, Bundle, Proved)], seen: Option<&Checkpoint>) -> String {
    let mut sizes: Vec<u64> = opened.iter().map(|(_, _, p)| p.checkpoint.size).collect();
    sizes.extend(seen.map(|s| s.size));
    let sizes: Vec<String> = sizes.iter().map(u64::to_string).collect();
    let with_seen = if seen.is_some() { ", with the one this machine verified last" } else { "" };
    format!("the checkpoints are views of one tree (of {} heads{with_seen})", sizes.join(", "))
}

fn tell_views_only(ctx: &Context, opened: &[(PathBuf, Bundle, Proved)], seen: Option<&Checkpoint>) {
    if ctx.json {
        terminal::json_line(json!({
            "proof": { "outcome": "views_meet", "bundles": opened.len(), "seen_tree_size": seen.map(|s| s.size) },
        }));
    } else {
        outln!("{}", views_line(opened, seen));
        outln!("no bundle proves a head of this log's machine: only the views were checked");
    }
}
