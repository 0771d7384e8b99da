//! status, properties and audit: projections of the log, as text or JSON.

use std::io::{BufReader, Write};
use std::path::Path;

use regent_engine::model::SealedRef;
use regent_engine::projections::{self, AuditFilter, Properties, Status};
use regent_engine::{Reason, State, Step};
use regent_secrets::{MachineKey, SecretsArea};
use regent_store::{EventStore, Head, VerifyReport};
use serde_json::json;

use crate::context::{Context, OpenError};
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};

/// The state, for a command that only reads: nothing recorded yet is the empty state, and nothing
/// is created to find that out.
fn read_state(ctx: &Context) -> Result<(State, Head, Option<EventStore>), Failure> {
    match ctx.open_existing_store()? {
        Some(store) => {
            let (state, head) = projections::current_state(&store)?;
            Ok((state, head, Some(store)))
        }
        None => Ok((State::default(), Head::EMPTY, None)),
    }
}

pub fn status(ctx: &Context) -> Result<u8, Failure> {
    let opened = ctx.open_existing_store_as_is().map_err(|e| match e {
        OpenError::Failure(failure) => failure,
        OpenError::Store(err) => crate::damage::status_unreadable(ctx.json, err),
    })?;
    let Some(store) = opened else {
        return print_status_of(ctx, &State::default(), Head::EMPTY, None);
    };
    // A damaged store is shown with its damage, then exits 3: what it holds cannot be trusted.
    let damaged = store.damage().map(|damage| (damage.to_string(), crate::damage::of_store(&store, damage, None)));
    let (state, head) = projections::current_state(&store)?;
    print_status_of(ctx, &state, head, damaged)
}

/// `damaged`: the damage in words, and the failure the command ends with.
fn print_status_of(
    ctx: &Context,
    state: &State,
    head: Head,
    damaged: Option<(String, Failure)>,
) -> Result<u8, Failure> {
    let (damage, damaged) = damaged.unzip();
    let status = projections::status_at(state, head, chrono::Utc::now());
    let sealed = sealed_health(ctx, state);
    let ca_file = crate::anchor::vault_ca_file(ctx);
    if ctx.json {
        let mut value = serde_json::to_value(&status).map_err(|e| Failure::store(e.to_string()))?;
        if let Some(detail) = value.get_mut("vault_detail").filter(|d| d.is_object()) {
            detail["ca_file"] = json!(ca_file);
        }
        value["sealed_secrets"] = json!(sealed);
        value["store_damage"] = json!(damaged.as_ref().map(|failure| &failure.message));
        value["log_anchor"] = crate::anchor::status_json(ctx, state, head);
        terminal::json_line(value);
        return damaged.map_or(Ok(0), |failure| Err(Failure { reported: true, ..failure }));
    }
    print_status(&status, state.next_step());
    if let (Some(ca_file), Some(_)) = (&ca_file, &status.vault_detail) {
        outln!("{:<14}{} (given with --ca-file; used unless another is given)", "vault CA", ca_file.display());
    }
    if let Some(anchor) = crate::anchor::status_line(ctx, state, head) {
        outln!("{:<14}{anchor}", "anchor");
    }
    outln!("{:<14}{sealed}", "secrets");
    if let Some(damage) = &damage {
        outln!("{:<14}DAMAGED: {damage}", "store");
    }
    damaged.map_or(Ok(0), Err)
}

pub fn print_status(status: &Status, next: Option<Step>) {
    let row = |label: &str, value: &str| outln!("{label:<14}{value}");
    row("phase", status.phase);
    row(
        "next step",
        &next.map_or("none: registered".into(), |s| format!("{}  ({})", s.name(), crate::guidance::command_line(s))),
    );
    match &status.vault_detail {
        None => row("vault", "(not registered; no credentials loaded)"),
        Some(v) if v.registered => row("vault", &format!("{} at {} (registered)", v.name, v.endpoint)),
        Some(v) => row(
            "vault",
            &format!(
                "{} at {} (not registered; from {})",
                v.name,
                v.endpoint,
                match v.from {
                    "registration_started" => "the registration started",
                    _ => "the loaded credentials",
                }
            ),
        ),
    }
    if let Some(c) = &status.credentials {
        let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        let judged = match c.state {
            "expired" => format!("EXPIRED at {}", at(c.expires_at)),
            "not_yet_valid" => format!("NOT VALID until {} (check this machine's clock)", at(c.not_before)),
            "superseded" => format!("SUPERSEDED (expires {})", at(c.expires_at)),
            "refused_by_vault" => format!("REFUSED by the vault (expires {})", at(c.expires_at)),
            _ => format!("valid, expires {}", at(c.expires_at)),
        };
        let mut line = format!("{judged}: {} (vault {})", c.file.display(), c.vault);
        match &c.vault_refused {
            Some(r) => line.push_str(&format!(
                "; the vault refused a registration with them ({}) at {}: load the newest download",
                r.reason,
                r.at.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            // Only the vault knows of a newer download; the log learns of one at a registration.
            None if status.vault.is_none() => line.push_str(
                "; superseded only if a newer file was downloaded since (the vault says so at `regent register`)",
            ),
            None if c.state == "expired" => {
                line.push_str("; the registration is not affected, but they cannot register again")
            }
            None => {}
        }
        row("credentials", &line);
    }
    match &status.last_failure {
        None => row("last failure", "none"),
        Some(f) => row(
            if f.current { "last failure" } else { "earlier" },
            &format!(
                "{}{} {} at {}: {}",
                if f.current { "" } else { "(history, not the step now due) " },
                f.step,
                f.reason,
                f.at.format("%Y-%m-%d %H:%M:%S UTC"),
                crate::guidance::with_next(&f.message, &f.next)
            ),
        ),
    }
    if let Some(started) = &status.registration_started {
        row(
            "registration",
            &format!(
                "started with vault {} at {} (request {}); `regent register` asks again",
                started.vault,
                started.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                started.request_id
            ),
        );
    }
    for pending in &status.pending_unregistrations {
        row(
            "not yet told",
            &format!(
                "vault {} at {} still lists machine {} (unregistered {}); `regent unregister` or the next `regent register` tells it",
                pending.vault,
                pending.endpoint,
                pending.machine_id,
                pending.unregistered_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        );
    }
    row("events", &status.events.to_string());
    row("head", &status.head.to_string());
}

/// Whether the sealed values the state refers to can still be opened: losing the machine key
/// makes them unreadable, which the operator must hear about before registering.
pub(crate) fn sealed_health(ctx: &Context, state: &State) -> String {
    let mut refs: Vec<(&str, regent_secrets::SecretKind, &SealedRef)> = Vec::new();
    if let Some(sealed) = state.proxy.as_ref().and_then(|p| p.password.as_ref()) {
        refs.push(("proxy password", regent_secrets::SecretKind::ProxyPassword, sealed));
    }
    if let Some(c) = &state.credentials {
        refs.push(("credentials key", regent_secrets::SecretKind::CredentialsPrivateKey, &c.private_key));
    }
    if let Some(sealed) = state.encryption.as_ref().and_then(|e| e.sealed.as_ref()) {
        refs.push(("passphrase", regent_secrets::SecretKind::Passphrase, sealed));
    }
    if refs.is_empty() {
        return "none kept".into();
    }
    // Not opened when missing: opening the area would create it (a log imported here refers to
    // sealed values this data dir never held).
    if !ctx.data_dir.join(SecretsArea::DIR_NAME).is_dir() {
        let names: Vec<&str> = refs.iter().map(|(what, _, _)| *what).collect();
        return format!("UNREADABLE: {}; set them again (this data dir keeps no sealed values)", names.join(", "));
    }
    let key = match MachineKey::load(&ctx.data_dir) {
        Ok(key) => key,
        Err(e) => return format!("UNREADABLE: {e}"),
    };
    let area = match SecretsArea::open_dir(&ctx.data_dir, key) {
        Ok(area) => area,
        Err(e) => return format!("UNREADABLE: {e}"),
    };
    let broken: Vec<&str> = refs
        .iter()
        .filter(|(_, kind, sealed)| area.open(*kind, &regent_secrets::SecretRef { id: sealed.id.clone() }).is_err())
        .map(|(what, _, _)| *what)
        .collect();
    if broken.is_empty() {
        format!("ok ({} sealed)", refs.len())
    } else {
        format!("UNREADABLE: {}; set them again (the machine key or sealed files were lost)", broken.join(", "))
    }
}

pub fn properties(ctx: &Context) -> Result<u8, Failure> {
    let (state, _, _) = read_state(ctx)?;
    let properties = projections::properties_at(&state, chrono::Utc::now());
    if ctx.json {
        terminal::json_line(serde_json::to_string(&properties).map_err(|e| Failure::store(e.to_string()))?);
    } else {
        print_properties(&properties);
    }
    Ok(0)
}

pub fn print_properties(p: &Properties) {
    let section = |title: &str| {
        outln!();
        outln!("{title}");
    };
    let row = |label: &str, value: &str| outln!("  {label:<20}{value}");
    let not_set = "(not set)";
    section("Proxy");
    match &p.proxy {
        None => row("proxy", "none: direct connection"),
        Some(proxy) => {
            row("server", &format!("{}:{}", proxy.host, proxy.port));
            row("user", proxy.username.as_deref().unwrap_or("(none)"));
            row("password", if proxy.password_set { "set" } else { "not set" });
        }
    }
    section("Throttling");
    match &p.throttling {
        None => row("throttling", "off"),
        Some(t) => {
            row("work days", &regent_engine::model::Weekday::describe_set(&t.work_days));
            row("work hours", &t.work_hours);
            row("work bandwidth", &t.work_bandwidth);
            row("non-work bandwidth", &t.non_work_bandwidth);
        }
    }
    section("Encryption");
    match &p.encryption {
        None => row("passphrase", not_set),
        Some(e) => {
            row("passphrase", &format!("set ({}) at {}", e.how, e.set_at.format("%Y-%m-%d %H:%M UTC")));
            if let Some(saved) = &e.saved_to {
                row("saved to", &saved.display().to_string());
            }
            for warning in &e.warnings {
                row("warning", warning);
            }
        }
    }
    section("Scratch folder");
    match &p.folders {
        None => row("folders", not_set),
        Some(f) => {
            row("install folder", &f.install_dir.display().to_string());
            row("scratch folder", &f.scratch_dir.display().to_string());
            row("backup size", &regent_engine::units::format_bytes(f.backup_size_bytes));
            row(
                "scratch free",
                &format!("{} ({})", regent_engine::units::format_bytes(f.scratch_free_bytes), f.scratch_filesystem),
            );
        }
    }
    section("Vault");
    match &p.vault {
        None => row("vault", "(no credentials loaded)"),
        Some(v) => {
            row("name", &v.name);
            if let Some(s) = &v.subscription_id {
                row("subscription", s);
            }
            if let (Some(g), Some(l)) = (&v.resource_group, &v.location) {
                row("resource group", &format!("{g} ({l})"));
            }
            row("registered", if v.registered { "yes" } else { "no" });
            if let Some(id) = &v.machine_id {
                row("machine id", id);
            }
            if let Some(at) = v.registered_at {
                row("registered at", &at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
            }
        }
    }
    if let Some(c) = &p.credentials {
        let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        let validity = match c.validity {
            "expired" => format!("EXPIRED at {}", at(c.expires_at)),
            "not_yet_valid" => format!("not valid until {}, expires {}", at(c.not_before), at(c.expires_at)),
            _ => format!("expires {}", at(c.expires_at)),
        };
        row("credentials", &format!("{} ({validity})", c.file.display()));
        row("certificate", &c.thumbprint);
    }
}

/// The audit table's columns, for `audit` and `replay`'s timeline (the build is 24 wide: a
/// version and a commit marked `-dirty`).
fn audit_columns(cells: [&dyn std::fmt::Display; 7]) -> String {
    let [position, at, actor, build, outcome, reason, summary] = cells;
    format!("{position:>5}  {at:<20}  {actor:<18}  {build:<24}  {outcome:<10}  {reason:<28}  {summary}")
}

pub fn audit_heading() -> String {
    audit_columns([&"POS", &"WHEN (UTC)", &"WHO", &"BUILD", &"OUTCOME", &"REASON", &"SUMMARY"])
}

pub fn audit_row(entry: &projections::AuditEntry) -> String {
    audit_columns([
        &entry.position,
        &entry.at.format("%Y-%m-%d %H:%M:%S"),
        &entry.actor,
        &entry.build_text(),
        &entry.outcome,
        &entry.reason.as_ref().map_or("", Reason::code),
        &entry.summary,
    ])
}

pub fn audit(ctx: &Context, filter: AuditFilter) -> Result<u8, Failure> {
    let store = ctx.open_existing_store()?;
    let mut out = terminal::Lines::stdout();
    let io = |e: std::io::Error| Failure::refused(format!("cannot write the audit trail: {e}"));
    if !ctx.json {
        out.line(format_args!("{}", audit_heading())).map_err(io)?;
    }
    let Some(store) = store else {
        out.flush().map_err(io)?;
        return Ok(0);
    };
    for entry in projections::audit(store.read_all(1), &filter) {
        let entry = entry?;
        if ctx.json {
            let line = serde_json::to_string(&entry).map_err(|e| Failure::store(e.to_string()))?;
            out.json(&line).map_err(io)?;
        } else {
            out.line(format_args!("{}", audit_row(&entry))).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(0)
}

pub fn verify(ctx: &Context, file: Option<&Path>, head: Option<Head>) -> Result<u8, Failure> {
    let report = match file {
        Some(file) => {
            let input = std::fs::File::open(file)
                .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", file.display())))?;
            regent_store::verify_export(BufReader::with_capacity(256 * 1024, input), head)?.1
        }
        None => match ctx.open_existing_store_as_is() {
            Ok(Some(store)) => {
                let report = store.verify(head)?;
                if let Some(damage) = store.damage() {
                    let failure =
                        crate::damage::failure(store.path(), damage, crate::damage::Reads::Walked(&report), None);
                    return Err(crate::damage::print_damaged_report(Some((&report, "")), damage, failure, ctx.json));
                }
                if let Some(failure) = crate::damage::unreadable_record(store.path(), &report) {
                    print_report(&report, ctx.json);
                    return Err(failure.printed_if(ctx.json));
                }
                report
            }
            Ok(None) if head.is_none() => VerifyReport { records: 0, verified_head: Head::EMPTY, failure: None },
            Ok(None) => {
                return Err(Failure::refused(format!(
                    "log_tail_cut: there is no log in {} at all, but it was to reach head {}; restore it from an export with `regent import FILE`",
                    ctx.data_dir.display(),
                    head.map(|h| h.to_string()).unwrap_or_default()
                )));
            }
            Err(OpenError::Failure(failure)) => return Err(failure),
            Err(OpenError::Store(err)) => return Err(crate::damage::verify_unreadable(err, ctx.json)),
        },
    };
    print_report(&report, ctx.json);
    match &report.failure {
        None => Ok(0),
        // The report went to stdout; stderr gets the one line every failing command ends with.
        Some(failure) => Err(Failure::refused(format!(
            "verification failed at {failure}; only records up to {} can be trusted",
            report.verified_head.position
        ))
        .because("chain_broken")
        .printed_if(ctx.json)),
    }
}

pub(crate) fn print_report(report: &VerifyReport, json: bool) {
    if json {
        terminal::json_line(serde_json::to_string(report).unwrap_or_else(|_| "{}".into()));
        return;
    }
    match &report.failure {
        None => outln!(
            "ok: {} verified; head {}",
            terminal::count(report.records, "record", "records"),
            report.verified_head
        ),
        Some(failure) => {
            outln!("FAILED at {failure}");
            outln!(
                "verified up to head {} ({})",
                report.verified_head,
                terminal::count(report.records, "record", "records")
            );
        }
    }
}

pub fn export(ctx: &Context, output: Option<&Path>) -> Result<u8, Failure> {
    let store = ctx.open_existing_store()?.ok_or_else(|| {
        Failure::refused(format!(
            "nothing_recorded: there is no log in {} yet, so there is nothing to export",
            ctx.data_dir.display()
        ))
    })?;
    let writer = &crate::build::writer();
    match output {
        Some(path) => {
            let head = export_to_file(&store, path, writer)?;
            errln!(
                "exported {} to {} (head {head})",
                terminal::count(head.position, "record", "records"),
                path.display()
            );
        }
        None => {
            store.export(&mut terminal::machine_stdout().lock(), writer)?;
        }
    }
    let holding = projections::records_holding_verifier(store.read_all(1))?;
    if !holding.is_empty() {
        let shown: Vec<String> = holding.iter().take(20).map(u64::to_string).collect();
        let more = if holding.len() > 20 { format!(" and {} more", holding.len() - 20) } else { String::new() };
        let (records, were) = if holding.len() == 1 { ("record", "was") } else { ("records", "were") };
        errln!(
            "warning: {records} {}{more} {were} written before regent sealed the passphrase verifier, and hold it: with this export a weak passphrase can be guessed offline; hand it only to someone you would trust with the passphrase, or change the passphrase first (`regent properties passphrase change`) so that the one in use is not among them",
            shown.join(", ")
        );
    }
    Ok(0)
}

/// Refuses a path where something is already (a file, a link, a folder): what a command writes
/// goes to a new file, never over one.
pub(crate) fn new_file_only(path: &Path) -> Result<(), Failure> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::refused(format!("cannot write {}: {e}; choose a writable location", path.display()))),
        Ok(_) => {
            Err(Failure::refused(format!("{} already exists; choose another file or remove it first", path.display())))
        }
    }
}

/// Writes to a temporary file beside the target, then renames it without overwriting, so a failed
/// export never leaves a truncated file where a good one is expected.
fn export_to_file(store: &EventStore, path: &Path, writer: &str) -> Result<Head, Failure> {
    let io = |e: std::io::Error| {
        Failure::refused(format!("cannot write {}: {e}; choose a writable location", path.display()))
    };
    new_file_only(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let head = {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        let head = store.export(&mut out, writer)?;
        out.flush().map_err(io)?;
        head
    };
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist_noclobber(path).map_err(|e| io(e.error))?;
    Ok(head)
}
