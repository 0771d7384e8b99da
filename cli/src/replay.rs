//! `regent replay FILE`: rebuild a customer's state from their exported log, on any machine,
//! touching no store, no disk beyond the file, and no network; `--check` re-decides every step.

use std::io::BufReader;

use regent_engine::events;
use regent_engine::projections;
use regent_engine::replay::replay;
use serde_json::json;

use crate::args::ReplayArgs;
use crate::context::Context;
use crate::failure::Failure;
use crate::terminal::{self, errln, outln};
use crate::views;

pub fn run(ctx: &Context, args: ReplayArgs) -> Result<u8, Failure> {
    let file = std::fs::File::open(&args.file)
        .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", args.file.display())))?;
    // Records are parsed, hashed and their steps decoded on worker threads; this thread walks the
    // chain's links, folds and re-decides.
    let input = BufReader::with_capacity(256 * 1024, file);
    let (header, records) = regent_store::read_export_decoded(input, !args.no_verify, events::decode_step)
        .map_err(|e| bad_log(e, &args))?;
    let json = ctx.json;
    let io = |e: std::io::Error| Failure::refused(format!("cannot write the replay: {e}"));
    // The timeline streams, as the audit does: under --json it is the document's first field,
    // written entry by entry, so a log of any size replays in bounded memory.
    let mut out = terminal::Lines::stdout();
    if json {
        out.json_part("{\"timeline\":[").map_err(io)?;
    } else {
        out.line(format_args!(
            "replaying {} (written by {}, head {})",
            args.file.display(),
            header.writer,
            header.head
        ))
        .map_err(io)?;
        out.line(format_args!("{}", views::audit_heading())).map_err(io)?;
    }
    let until = args.until;
    let bounded = records.take_while(move |r| match (r, until) {
        (Ok((record, _)), Some(until)) => record.position <= until,
        _ => true,
    });
    let mut written = 0u64;
    let mut write_error = None;
    let timeline = bounded.inspect(|item| {
        let Ok((record, Some(Ok(step)))) = item else { return };
        let entry = projections::audit_entry(record, step);
        let wrote = if json {
            let separator = if written == 0 { "" } else { "," };
            serde_json::to_string(&entry)
                .map_err(std::io::Error::other)
                .and_then(|line| out.json_part(&format!("{separator}{line}")))
        } else {
            out.line(format_args!("{}", views::audit_row(&entry)))
        };
        written += 1;
        if let Err(e) = wrote {
            write_error.get_or_insert(e);
        }
    });
    let replayed = replay(timeline, args.check, args.until).map_err(|e| match e {
        projections::ProjectionError::Store(e) => bad_log(e, &args),
        projections::ProjectionError::Decode(e) => Failure::refused(format!("{e}")),
    });
    if let Some(e) = write_error {
        return Err(io(e));
    }
    let replayed = match replayed {
        Ok(replayed) => replayed,
        // The document begun is ended with the failure in it, so that it still reads as JSON.
        Err(failure) if json => {
            let error = serde_json::json!({ "error": failure.json() });
            let rest = error.to_string();
            out.json(&format!("],{}", rest.strip_prefix('{').unwrap_or(&rest))).map_err(io)?;
            out.flush().map_err(io)?;
            return Err(failure.printed_if(true));
        }
        Err(failure) => {
            out.flush().map_err(io)?;
            return Err(failure);
        }
    };
    // An --until past the log's end replays the whole log: said, so it is not taken for a position.
    let past_end = until.filter(|until| *until > replayed.head.position);
    let until_json = until.map(|position| {
        json!({ "position": position, "past_end": past_end.is_some(), "last_position": replayed.head.position })
    });
    let status = projections::status(&replayed.state, replayed.head);
    let properties = projections::properties(&replayed.state);
    let check = args.check.then(|| match &replayed.divergence {
        None => json!({ "diverged": false, "position": null, "detail": "every recorded step is decided the same way by this build" }),
        Some(d) => json!({
            "diverged": true,
            "position": d.position,
            "detail": format!("recorded {}, this build decides {}", describe(&d.recorded), describe(&d.now_decides)),
            "recorded": d.recorded,
            "now_decides": d.now_decides,
        }),
    });
    if json {
        let rest = json!({ "status": status, "properties": properties, "check": check, "until": until_json });
        let rest = rest.to_string();
        out.json(&format!("],{}", rest.strip_prefix('{').unwrap_or(&rest))).map_err(io)?;
        out.flush().map_err(io)?;
    } else {
        out.flush().map_err(io)?;
    }
    if let Some(position) = past_end {
        errln!(
            "warning: --until {position} is past the end of the log, whose last record is {}; the whole log was replayed",
            replayed.head.position
        );
    }
    if !json {
        outln!();
        outln!("== Final status ==");
        views::print_status(&status, replayed.state.next_step());
        outln!();
        outln!("== Change Properties ==");
        views::print_properties(&properties);
        if let Some(check) = &check {
            outln!();
            outln!("== Check against this build ==");
            match &replayed.divergence {
                None => outln!("no divergence: {}", check["detail"].as_str().unwrap_or_default()),
                Some(d) => {
                    outln!("DIVERGED at record {}", d.position);
                    outln!("  recorded:            {}", describe(&d.recorded));
                    outln!("  this build decides:  {}", describe(&d.now_decides));
                }
            }
        }
    }
    match &replayed.divergence {
        None => Ok(0),
        Some(d) => Err(Failure::refused(format!(
            "replay_diverged: this build decides record {} differently from the build that recorded it; send the export and `regent --version` to support",
            d.position
        ))
        .printed_if(ctx.json)),
    }
}

fn describe(outcome: &regent_engine::model::Outcome) -> String {
    projections::summary(outcome)
}

fn bad_log(err: regent_store::StoreError, args: &ReplayArgs) -> Failure {
    match err {
        regent_store::StoreError::ChainBroken(failure) => {
            Failure::refused(format!("the log's hash chain is broken at {failure}; replay it anyway with --no-verify"))
        }
        other => Failure::refused(format!("{}: {other}", args.file.display())),
    }
}
