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
use crate::terminal::{self, outln};
use crate::views;

pub fn run(ctx: &Context, args: ReplayArgs) -> Result<u8, Failure> {
    let file = std::fs::File::open(&args.file)
        .map_err(|e| Failure::refused(format!("cannot read {}: {e}; check the path", args.file.display())))?;
    // Records are parsed, hashed and their steps decoded on worker threads; this thread walks the
    // chain's links, folds and re-decides.
    let input = BufReader::with_capacity(256 * 1024, file);
    let (header, records) = regent_store::read_export_decoded(input, !args.no_verify, events::decode_step)
        .map_err(|e| bad_log(e, &args))?;
    if !ctx.json {
        outln!("replaying {} (written by {}, head {})", args.file.display(), header.writer, header.head);
        outln!("{}", views::audit_heading());
    }
    let json = ctx.json;
    let until = args.until;
    let bounded = records.take_while(move |r| match (r, until) {
        (Ok((record, _)), Some(until)) => record.position <= until,
        _ => true,
    });
    let timeline = bounded.inspect(move |item| {
        if json {
            return;
        }
        if let Ok((record, Some(Ok(step)))) = item {
            let entry = projections::audit_entry(record, step);
            outln!("{}", views::audit_row(&entry));
        }
    });
    let replayed = replay(timeline, args.check, args.until).map_err(|e| match e {
        projections::ProjectionError::Store(e) => bad_log(e, &args),
        projections::ProjectionError::Decode(e) => Failure::refused(format!("{e}")),
    })?;
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
    if ctx.json {
        terminal::json_line(json!({ "status": status, "properties": properties, "check": check }));
    } else {
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
