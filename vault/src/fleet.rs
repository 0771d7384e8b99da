//! The fleet view: each machine as the records the vault keeps of its log make it, built with the
//! agent's own projections (the code `regent properties` and `regent audit` build theirs with),
//! beside what the vault holds of it. No second implementation of what a log means.
//!
//! A machine's [`FleetState`] is the agent's state folded over its kept records, stored beside
//! them and moved on as records arrive (sled: a side tree; PostgreSQL: `fleet_states`, in the same
//! transaction as the records), so that a page of the fleet reads one small row per machine and
//! folds nothing.

use chrono::{DateTime, Utc};
use regent_engine::projections;
use regent_engine::state::State;
use regent_store::Record;
use serde::{Deserialize, Serialize};

use crate::protocol::{FleetAnchor, FleetEvent, FleetMachine, FleetProxy, FleetThrottling, MachineInfo};
use crate::state::AnchorHistory;

/// What the vault folded of one machine's kept records: the agent's own state, how far, and the
/// last record. Holds nothing the agent's log does not (no secret: the log holds none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FleetState {
    pub state: State,
    /// The last position folded (0: none).
    pub position: u64,
    pub last_event: Option<FleetEvent>,
    /// A record was skipped because this build cannot read it (a newer agent's kind or schema).
    pub agent_newer: bool,
}

impl FleetState {
    /// Folds the stored lines of the records after `position`, in order. A record of the
    /// registration stream this build cannot decode is kept (the vault has it) and skipped here,
    /// and the state says the agent is newer; a line that is not a record, or out of order, is an
    /// error (the vault walked every kept record: that would be a bug or a damaged store).
    pub(crate) fn fold<'a>(self, lines: impl IntoIterator<Item = &'a [u8]>) -> Result<FleetState, String> {
        let records = lines
            .into_iter()
            .map(|line| regent_store::decode_record(line).map_err(|e| format!("a kept record cannot be read: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.fold_records(&records)
    }

    /// [`FleetState::fold`] over records already read.
    pub(crate) fn fold_records<'a>(
        mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<FleetState, String> {
        for record in records {
            if record.position != self.position + 1 {
                return Err(format!("kept record {} does not follow record {}", record.position, self.position));
            }
            self.position = record.position;
            let step = if record.stream == regent_engine::events::STREAM {
                match regent_engine::events::decode(record) {
                    Ok(step) => {
                        let entry = projections::audit_entry(record, &step);
                        self.state = std::mem::take(&mut self.state).evolve(&step);
                        Some((entry.step.to_string(), entry.outcome.to_string()))
                    }
                    Err(_) => {
                        self.agent_newer = true;
                        None
                    }
                }
            } else {
                None
            };
            let (step, outcome) = step.unzip();
            self.last_event = Some(FleetEvent {
                position: record.position,
                at: record.recorded_at,
                kind: record.kind.clone(),
                step,
                outcome,
            });
        }
        Ok(self)
    }
}

/// A machine's fleet row at `now`: what its log says (nothing before a record is kept) and what the
/// vault holds of it.
pub(crate) fn row(
    info: &MachineInfo,
    anchor: &AnchorHistory,
    fleet: Option<&FleetState>,
    now: DateTime<Utc>,
) -> FleetMachine {
    let folded = fleet.filter(|f| f.position > 0);
    let properties = folded.map(|f| projections::properties_at(&f.state, now));
    let properties = properties.as_ref();
    FleetMachine {
        machine_id: info.machine_id.clone(),
        machine_name: info.machine_name.clone(),
        registered_at: info.registered_at,
        phase: folded.map(|f| f.state.phase().name().to_string()),
        proxy: properties.and_then(|p| p.proxy.as_ref()).map(|p| FleetProxy {
            host: p.host.clone(),
            port: p.port,
            authenticates: p.username.is_some() || p.password_set,
        }),
        throttling: folded.and_then(|f| f.state.throttling.as_ref()).map(|t| FleetThrottling {
            work_days: regent_engine::model::Weekday::describe_set(&t.work_days),
            work_hours: format!("{}-{}", t.work_start.format("%H:%M"), t.work_end.format("%H:%M")),
            work_bandwidth: regent_engine::units::format_rate(t.work_bps),
            non_work_bandwidth: regent_engine::units::format_rate(t.non_work_bps),
        }),
        scratch_dir: properties.and_then(|p| p.folders.as_ref()).map(|f| f.scratch_dir.display().to_string()),
        passphrase_set_at: properties.and_then(|p| p.encryption.as_ref()).map(|e| e.set_at),
        credentials_expire_at: properties.and_then(|p| p.credentials.as_ref()).map(|c| c.expires_at),
        last_event: folded.and_then(|f| f.last_event.clone()),
        anchor: anchor_of(anchor),
        agent_newer: folded.is_some_and(|f| f.agent_newer),
    }
}

fn anchor_of(history: &AnchorHistory) -> FleetAnchor {
    let mirrored = history.mirrored_position();
    let status = match &history.head {
        None => "none",
        Some(head) if history.last_refusal.as_ref().is_some_and(|r| r.refused_at > head.anchored_at) => "refused",
        Some(head) if mirrored < head.position => "catching_up",
        Some(_) => "current",
    };
    FleetAnchor {
        status: status.to_string(),
        position: history.head.as_ref().map(|h| h.position),
        mirrored,
        refusals: history.refusals,
        last_refusal: history.last_refusal.clone(),
    }
}

/// Where a page of the fleet starts: after this machine (registration time, then id, the order
/// the fleet is listed in). Written as `<RFC 3339 time>/<machine id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub registered_at: DateTime<Utc>,
    pub machine_id: String,
}

impl Cursor {
    pub(crate) fn after(machine: &FleetMachine) -> Cursor {
        Cursor { registered_at: machine.registered_at, machine_id: machine.machine_id.clone() }
    }

    pub(crate) fn to_text(&self) -> String {
        format!("{}/{}", regent_store::utc_time::format(&self.registered_at), self.machine_id)
    }

    pub(crate) fn parse(text: &str) -> Option<Cursor> {
        let (at, machine_id) = text.rsplit_once('/')?;
        let registered_at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        (!machine_id.is_empty()).then(|| Cursor { registered_at, machine_id: machine_id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_refuses_other_text() {
        let cursor = Cursor {
            registered_at: DateTime::parse_from_rfc3339("2026-12-02T07:10:00.123456Z").unwrap().with_timezone(&Utc),
            machine_id: "0190a3b2-0000-8000-8000-000000000001".into(),
        };
        assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor));
        for text in ["", "/", "nonsense", "2026-12-02T07:10:00Z/", "yesterday/m-1"] {
            assert_eq!(Cursor::parse(text), None, "{text:?}");
        }
    }
}
