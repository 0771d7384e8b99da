//! The fleet's audit: the events of every machine's log the vault keeps, in one place, each as the
//! agent's own `regent audit` shows it (the engine's audit entry and its filter), with the machine
//! it is of. The storage gives kept records in audit order (the time the agent recorded them, then
//! machine, then position) within a time range; this module reads them, filters and pages.

use chrono::{DateTime, Utc};
use regent_engine::projections::{self, AuditFilter};

use crate::api::ApiError;
use crate::protocol::FleetAuditEntry;

/// Where a page of the audit starts: after this record. Written `<RFC 3339 time>/<machine id>/<position>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuditCursor {
    pub at: DateTime<Utc>,
    pub machine_id: String,
    pub position: u64,
}

impl AuditCursor {
    pub(crate) fn to_text(&self) -> String {
        format!("{}/{}/{}", regent_store::utc_time::format(&self.at), self.machine_id, self.position)
    }

    pub(crate) fn parse(text: &str) -> Option<AuditCursor> {
        let (rest, position) = text.rsplit_once('/')?;
        let (at, machine_id) = rest.rsplit_once('/')?;
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        let position = position.parse().ok()?;
        (!machine_id.is_empty()).then(|| AuditCursor { at, machine_id: machine_id.to_string(), position })
    }
}

/// What the storage is asked for: kept records in audit order, after `after`, at or after `since`
/// and before `until`, of one machine or all, at most `limit`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditScan {
    pub machine: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: Option<AuditCursor>,
    pub limit: usize,
}

/// A kept record as the storage gives it.
#[derive(Clone, Debug)]
pub(crate) struct KeptRecord {
    pub machine_id: String,
    pub position: u64,
    pub at: DateTime<Utc>,
    pub line: Vec<u8>,
}

impl KeptRecord {
    pub(crate) fn cursor(&self) -> AuditCursor {
        AuditCursor { at: self.at, machine_id: self.machine_id.clone(), position: self.position }
    }
}

/// The filters a storage cannot apply by its indexes: the engine's own (kind, step or outcome; the
/// time range again, to the microsecond) and the actor and outcome.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryFilter {
    pub engine: AuditFilter,
    pub actor: Option<String>,
    pub outcome: Option<String>,
}

/// The entry a kept record shows, if it passes `filter`. A record this build cannot read (a newer
/// agent's) shows its kind and no step or outcome.
pub(crate) fn entry(kept: &KeptRecord, filter: &EntryFilter) -> Result<Option<FleetAuditEntry>, ApiError> {
    let record = regent_store::decode_record(&kept.line)
        .map_err(|e| ApiError::internal(format!("a kept record cannot be read: {e}")))?;
    let decoded =
        (record.stream == regent_engine::events::STREAM).then(|| regent_engine::events::decode(&record).ok()).flatten();
    let entry = match &decoded {
        Some(step) => {
            let entry = projections::audit_entry(&record, step);
            if !filter.engine.matches(&entry) {
                return Ok(None);
            }
            FleetAuditEntry {
                machine_id: kept.machine_id.clone(),
                position: entry.position,
                at: entry.at,
                actor: entry.actor,
                kind: entry.kind,
                step: Some(entry.step.to_string()),
                outcome: Some(entry.outcome.to_string()),
                reason: entry.reason,
                summary: entry.summary,
                correlation_id: entry.correlation_id,
                hash: record.hash.to_hex(),
            }
        }
        None => {
            let kind_ok = filter.engine.kind.as_deref().is_none_or(|k| k.eq_ignore_ascii_case(&record.kind));
            let time_ok = filter.engine.since.is_none_or(|since| record.recorded_at >= since)
                && filter.engine.before.is_none_or(|before| record.recorded_at < before);
            if !kind_ok || !time_ok {
                return Ok(None);
            }
            FleetAuditEntry {
                machine_id: kept.machine_id.clone(),
                position: record.position,
                at: record.recorded_at,
                actor: record.actor.to_string(),
                kind: record.kind.clone(),
                step: None,
                outcome: None,
                reason: None,
                summary: format!(
                    "a {} record of stream {} that this vault's build cannot read (a newer agent's)",
                    record.kind, record.stream
                ),
                correlation_id: record.correlation_id.to_string(),
                hash: record.hash.to_hex(),
            }
        }
    };
    let actor_ok = filter.actor.as_deref().is_none_or(|actor| actor == entry.actor);
    let outcome_ok = filter.outcome.as_deref().is_none_or(|outcome| entry.outcome.as_deref() == Some(outcome));
    Ok((actor_ok && outcome_ok).then_some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_refuses_other_text() {
        let cursor = AuditCursor {
            at: DateTime::parse_from_rfc3339("2026-12-02T07:10:00.123456Z").unwrap().with_timezone(&Utc),
            machine_id: "0190a3b2-0000-8000-8000-000000000001".into(),
            position: 42,
        };
        assert_eq!(AuditCursor::parse(&cursor.to_text()), Some(cursor));
        for text in ["", "//", "2026-12-02T07:10:00Z/m", "2026-12-02T07:10:00Z//3", "2026-12-02T07:10:00Z/m/x"] {
            assert_eq!(AuditCursor::parse(text), None, "{text:?}");
        }
    }
}
