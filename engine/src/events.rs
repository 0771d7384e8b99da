//! Reading recorded steps back, whatever schema version wrote them.
//!
//! Upcasters are keyed by schema version and work on the JSON before it is typed, so old events
//! never need old Rust types. Version 1 recorded the backup size as the operator typed it
//! (`"backup_size": "750GiB"`); version 2 records bytes (`backup_size_bytes`). Version 3 adds
//! fields only (a registration is started before the vault is asked; the passphrase verifier is
//! sealed beside the log, not recorded), so a version 2 payload reads as it is. Version 4 names
//! the build that recorded each step (`build`); an older step gets `"build": null`, since nothing
//! in it says which build wrote it (the audit shows it as unknown; none is made up).

use regent_store::{NewEvent, Record};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{SCHEMA_VERSION, StepRecord};
use crate::units::parse_size;

/// The stream every registration event is appended to.
pub const STREAM: &str = "registration";

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "record {position} ({kind}) has schema version {schema}, newer than this build reads ({SCHEMA_VERSION}); upgrade regent"
    )]
    NewerSchema { position: u64, kind: String, schema: u32 },
    #[error("record {position} ({kind}) cannot be read: {detail}")]
    Malformed { position: u64, kind: String, detail: String },
}

/// The step recorded in a log record, upcast to the current schema.
pub fn decode(record: &Record) -> Result<StepRecord, DecodeError> {
    let malformed =
        |detail: String| DecodeError::Malformed { position: record.position, kind: record.kind.clone(), detail };
    if record.schema > SCHEMA_VERSION {
        return Err(DecodeError::NewerSchema {
            position: record.position,
            kind: record.kind.clone(),
            schema: record.schema,
        });
    }
    if record.schema == SCHEMA_VERSION {
        return serde_json::from_str(record.payload.get()).map_err(|e| malformed(e.to_string()));
    }
    let mut payload: Value = serde_json::from_str(record.payload.get()).map_err(|e| malformed(e.to_string()))?;
    for from in record.schema..SCHEMA_VERSION {
        upcast(from, &mut payload).map_err(&malformed)?;
    }
    serde_json::from_value(payload).map_err(|e| malformed(e.to_string()))
}

/// The step a record holds, if it is a record of the registration stream; None for other streams.
pub fn decode_step(record: &Record) -> Option<Result<StepRecord, DecodeError>> {
    (record.stream == STREAM).then(|| decode(record))
}

/// Turns a payload of schema `from` into one of `from + 1`.
fn upcast(from: u32, payload: &mut Value) -> Result<(), String> {
    match from {
        1 => {
            // The size is in the command, and in the change when the folders were accepted.
            let command = payload.get_mut("command");
            if let Some(command) = command.filter(|c| c["command"] == "choose_folders") {
                size_text_to_bytes(command)?;
            }
            let outcome = payload.get_mut("outcome");
            if let Some(change) = outcome.filter(|o| o["change"] == "folders_chosen") {
                size_text_to_bytes(change)?;
            }
            Ok(())
        }
        // Every field version 3 added is optional; the verifier of version 2 stays where it was
        // (`audit export` names the records that hold one).
        2 => Ok(()),
        // No build is known for a step recorded before version 4; one a payload carries anyway
        // (a hand-edited log) is not believed either.
        3 => {
            let map = payload.as_object_mut().ok_or("the payload is not an object")?;
            map.insert("build".into(), Value::Null);
            Ok(())
        }
        // Version 5 only added commands, changes and optional fields: a step of 4 reads as it is.
        4 => Ok(()),
        // Version 6 too (the vault's transparency log).
        5 => Ok(()),
        other => Err(format!("no upcaster from schema version {other}")),
    }
}

fn size_text_to_bytes(object: &mut Value) -> Result<(), String> {
    let Some(map) = object.as_object_mut() else {
        return Err("expected an object".into());
    };
    let text = map.remove("backup_size").ok_or("schema 1 folders without backup_size")?;
    let text = text.as_str().ok_or("backup_size is not text")?;
    let bytes = parse_size(text).map_err(|e| format!("backup_size: {e}"))?;
    map.insert("backup_size_bytes".into(), bytes.into());
    Ok(())
}

/// The event to append for a step, under `event_id` (the service draws it through its ports).
pub fn encode(record: &StepRecord, event_id: Uuid) -> Result<NewEvent, serde_json::Error> {
    NewEvent::with_id(event_id, record.outcome.kind(), SCHEMA_VERSION, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BuildId, Command, Outcome};

    fn record(schema: u32, payload: &str) -> Record {
        Record {
            position: 7,
            stream: STREAM.into(),
            version: 7,
            event_id: Uuid::nil(),
            kind: "ThrottlingOff".into(),
            schema,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            actor: regent_store::Actor { user: "ops".into(), host: "srv".into() },
            correlation_id: Uuid::nil(),
            prev_hash: regent_store::Digest32::GENESIS,
            payload: serde_json::value::RawValue::from_string(payload.into()).unwrap(),
            hash: regent_store::Digest32::GENESIS,
        }
    }

    const STEP: &str = r#"{"command":{"command":"throttling_off"},"observed":{"now":"2026-11-24T23:39:08.261227344Z"},"outcome":{"outcome":"accepted","change":"throttling_off"}"#;

    #[test]
    fn a_schema_3_step_upcasts_to_4_with_no_build_and_a_claimed_one_is_not_believed() {
        let step = decode(&record(3, &format!("{STEP}}}"))).unwrap();
        assert_eq!(step.command, Command::ThrottlingOff);
        assert!(matches!(step.outcome, Outcome::Accepted(_)));
        assert_eq!(step.build, None, "a schema 3 step says no build: none is made up");
        // Version 3 wrote no build; one found in such a payload was put there by someone else.
        let claimed = format!(r#"{STEP},"build":{{"version":"9.9.9","commit":"0123456789ab","date":"2030-01-01"}}}}"#);
        assert_eq!(decode(&record(3, &claimed)).unwrap().build, None);
        // Older schemas go through the same upcaster on their way.
        assert_eq!(decode(&record(2, &format!("{STEP}}}"))).unwrap().build, None);
    }

    #[test]
    fn a_schema_4_step_reads_its_build_and_encodes_as_this_builds_schema() {
        let build = BuildId { version: "0.1.0".into(), commit: "a5271b4c0d1e-dirty".into(), date: "2026-12-01".into() };
        let payload =
            format!(r#"{STEP},"build":{{"version":"0.1.0","commit":"a5271b4c0d1e-dirty","date":"2026-12-01"}}}}"#);
        let step = decode(&record(4, &payload)).unwrap();
        assert_eq!(step.build.as_ref(), Some(&build));
        assert_eq!(decode(&record(5, &payload)).unwrap(), step, "schema 5 added nothing a schema 4 step holds");
        assert_eq!(decode(&record(6, &payload)).unwrap(), step, "nor did schema 6");
        let event = encode(&step, Uuid::nil()).unwrap();
        assert_eq!(event.schema, 6);
        assert!(
            event
                .payload()
                .get()
                .ends_with(r#","build":{"version":"0.1.0","commit":"a5271b4c0d1e-dirty","date":"2026-12-01"}}"#)
        );
        assert!(matches!(decode(&record(7, &payload)), Err(DecodeError::NewerSchema { schema: 7, .. })));
    }
}
