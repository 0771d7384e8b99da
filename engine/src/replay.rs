//! Replaying a recorded log: fold it into state, and re-decide every recorded step with the
//! current rules and the recorded observations to see whether this build still decides the same.

use regent_store::{Head, Record, StoreError};
use serde::Serialize;

use crate::decide::decide;
use crate::events::{self, DecodeError};
use crate::model::{Outcome, StepRecord};
use crate::projections::ProjectionError;
use crate::state::State;

/// Where the current rules decide differently from what was recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub position: u64,
    pub recorded: Outcome,
    pub now_decides: Outcome,
}

/// What replaying a log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub state: State,
    pub head: Head,
    pub divergence: Option<Divergence>,
}

/// A record, and the step it holds when it holds one, decoded (see [`events::decode_step`]).
pub type StepItem = (Record, Option<Result<StepRecord, DecodeError>>);

/// Pairs records with their steps, decoding on the caller's thread. A reader that decodes on its
/// own threads (`regent_store::read_export_decoded` with [`events::decode_step`]) gives these
/// pairs directly.
pub fn with_steps<I>(records: I) -> impl Iterator<Item = Result<StepItem, StoreError>>
where
    I: IntoIterator<Item = Result<Record, StoreError>>,
{
    records.into_iter().map(|record| {
        record.map(|record| {
            let step = events::decode_step(&record);
            (record, step)
        })
    })
}

/// Folds `records` (up to `until`, if given). With `check`, also re-decides each step from the
/// state before it and its recorded observations; the first difference is reported, and the
/// recorded outcome is what is folded on, so the state is always the log's own.
pub fn replay<I>(records: I, check: bool, until: Option<u64>) -> Result<Replayed, ProjectionError>
where
    I: IntoIterator<Item = Result<StepItem, StoreError>>,
{
    let mut state = State::default();
    let mut head = Head::EMPTY;
    let mut divergence = None;
    for item in records {
        let (record, step) = item?;
        if until.is_some_and(|until| record.position > until) {
            break;
        }
        head = Head { position: record.position, hash: record.hash };
        let Some(step) = step else { continue };
        let step = step?;
        if check && divergence.is_none() {
            let now_decides = decide(&state, &step.command, &step.observed);
            if !same_decision(&now_decides, &step.outcome) {
                divergence =
                    Some(Divergence { position: record.position, recorded: step.outcome.clone(), now_decides });
            }
        }
        state = state.evolve(&step);
    }
    Ok(Replayed { state, head, divergence })
}

/// Whether two outcomes are the same decision: the same change, or a refusal of the same step for
/// the same reason. A refusal's wording may improve between builds without that being a divergence.
pub fn same_decision(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Accepted(x), Outcome::Accepted(y)) => x == y,
        (Outcome::Refused(x), Outcome::Refused(y)) => x.step == y.step && x.reason == y.reason,
        _ => false,
    }
}
