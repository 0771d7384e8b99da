//! `regent vault ...`: the service and its admin commands.

use std::net::ToSocketAddrs;
use std::path::Path;

use regent_vault::{AdminClient, ServeConfig};

use crate::args::{AdminArgs, VaultCommand};
use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};

pub fn run(ctx: &Context, command: VaultCommand) -> Result<u8, Failure> {
    match command {
        VaultCommand::Serve { listen, tls_cert, tls_key, public_url } => {
            let address =
                listen.to_socket_addrs().ok().and_then(|mut addresses| addresses.next()).ok_or_else(|| {
                    Failure::usage(format!("--listen: '{listen}' is not an address like 127.0.0.1:8443"))
                })?;
            let mut config = ServeConfig::new(&ctx.data_dir, address);
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                config = config.with_tls(cert, key);
            }
            if let Some(url) = public_url {
                config = config.with_public_url(url);
            }
            let json = ctx.json;
            regent_vault::run_until_signal(config, |info| {
                if json {
                    terminal::json_line(serde_json::json!({ "url": info.url, "admin_token": info.admin_token_path }));
                } else {
                    outln!("listening on {}", info.url);
                    outln!("admin token in {}", info.admin_token_path.display());
                }
            })
            .map_err(|e| Failure::store(e.to_string()))?;
            Ok(0)
        }
        VaultCommand::Create { name, admin } => {
            let vault = admin_client(&admin)?.create_vault(&name).map_err(admin_failure)?;
            print(ctx, &vault, || format!("created vault {} (subscription {})", vault.name, vault.subscription_id));
            Ok(0)
        }
        VaultCommand::Credentials { vault, admin, output, validity } => {
            if !output.to_string_lossy().to_ascii_lowercase().ends_with(".vaultcredentials") {
                return Err(Failure::usage("--output must end in .VaultCredentials, as the agent insists"));
            }
            let file = admin_client(&admin)?.download_credentials(&vault, validity).map_err(admin_failure)?;
            write_new_private_file(&output, file.xml.as_bytes())?;
            let summary = serde_json::json!({
                "file": output, "thumbprint": file.thumbprint, "not_before": file.not_before, "not_after": file.not_after,
            });
            print(ctx, &summary, || {
                format!(
                    "wrote {} (valid until {}; any earlier download is no longer valid)",
                    output.display(),
                    file.not_after
                )
            });
            Ok(0)
        }
        VaultCommand::Pin { vault, admin } => {
            let pin = admin_client(&admin)?.issue_pin(&vault).map_err(admin_failure)?;
            if ctx.json {
                terminal::json_line(serde_json::json!({ "pin": pin.pin, "expires_at": pin.expires_at }));
            } else {
                outln!("{}", pin.pin);
                errln!("valid until {} (5 minutes), once", pin.expires_at);
            }
            Ok(0)
        }
        VaultCommand::Machines { vault, admin } => {
            let machines = admin_client(&admin)?.machines(&vault).map_err(admin_failure)?;
            if ctx.json {
                terminal::json_line(serde_json::to_string(&machines).map_err(|e| Failure::store(e.to_string()))?);
            } else {
                outln!("{:<40}  {:<20}  {:<19}  LOG HEAD", "MACHINE ID", "NAME", "REGISTERED (UTC)");
                for m in &machines {
                    outln!(
                        "{:<40}  {:<20}  {:<19}  {}",
                        m.machine_id,
                        m.machine_name,
                        m.registered_at.format("%Y-%m-%d %H:%M:%S"),
                        log_head_cell(m.log_head.as_ref())
                    );
                }
            }
            Ok(0)
        }
    }
}

/// The anchored head as `POSITION:HASH… at TIME`, with the refused reports (evidence that a copy of
/// the machine's log was cut or rewritten) when there were any.
fn log_head_cell(head: Option<&regent_vault::LogHead>) -> String {
    let Some(head) = head else { return "-".into() };
    let mut cell = format!(
        "{}:{}… at {}",
        head.position,
        head.hash.chars().take(12).collect::<String>(),
        head.anchored_at.format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(last) = &head.last_refusal {
        cell.push_str(&format!(
            "  REFUSED {} report(s), last {} for position {} at {}",
            head.refusals,
            last.error,
            last.position,
            last.refused_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    cell
}

fn admin_client(args: &AdminArgs) -> Result<AdminClient, Failure> {
    AdminClient::from_token_file(&args.server, &args.token_file, args.ca_file.as_deref()).map_err(admin_failure)
}

fn admin_failure(err: regent_vault::AdminError) -> Failure {
    Failure::refused(err.to_string())
}

fn print<T: serde::Serialize>(ctx: &Context, value: &T, human: impl FnOnce() -> String) {
    if ctx.json {
        terminal::json_line(serde_json::to_string(value).unwrap_or_default());
    } else {
        outln!("{}", human());
    }
}

/// Credentials files can register machines: written 0600, never over another file.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| Failure::refused(format!("cannot write {}: {e}; name a new file", path.display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}
