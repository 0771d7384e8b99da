//! The service's log as the service uses it: the event store (sled, through `regent-store`), what
//! readiness asks of it, and the one place every append passes (the events-appended counter).
//!
//! Both writers of the service go through [`ServiceLog::append`]: the handlers' own appends
//! (`App::append` in [`crate::service`]) and the group committer's rounds ([`crate::commit`]). A
//! PostgreSQL backend takes this type's place: its `ready` answers "the database is reachable and
//! the migrations are applied", and its pool gauges register in [`crate::metrics::Metrics`] next to
//! the counter here.

use prometheus::IntCounter;
use regent_store::{Appended, BatchMeta, EventStore, ExpectedVersion, Head, NewEvent, StoreError};

use crate::metrics::Metrics;

pub(crate) struct ServiceLog {
    store: EventStore,
    /// Events written (an append whose events were all stored already writes none).
    appended: IntCounter,
}

impl ServiceLog {
    pub(crate) fn new(store: EventStore, metrics: &Metrics) -> ServiceLog {
        ServiceLog { store, appended: metrics.events_appended() }
    }

    /// [`EventStore::append`], counted: durable when it returns Ok.
    pub(crate) fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        meta: &BatchMeta,
        events: &[NewEvent],
    ) -> Result<Appended, StoreError> {
        let appended = self.store.append(stream, expected, meta, events)?;
        if !appended.already_stored {
            self.appended.inc_by(appended.last_position + 1 - appended.first_position);
        }
        Ok(appended)
    }

    /// The position and hash of the last record.
    pub(crate) fn head(&self) -> Head {
        self.store.head()
    }

    /// Whether the service can serve: the log is open (it is, while this exists) and would take an
    /// append, that is it was not found damaged at start and no write has failed to reach the disk
    /// since. The text says why not, for `GET /readyz`: the damage or the failure, never the path of
    /// the data directory (anyone may ask).
    pub(crate) fn ready(&self) -> Result<(), String> {
        match self.store.writable() {
            Ok(()) => Ok(()),
            Err(StoreError::Damaged { damage, .. }) => Err(format!(
                "the vault's log was found damaged when the service started ({damage}); it refuses every change"
            )),
            Err(StoreError::SyncFailed { .. }) => Err(
                "a write to the vault's log failed to reach the disk; it refuses every change until the service is \
                 restarted"
                    .to_string(),
            ),
            Err(_) => Err("the vault's log cannot be written".to_string()),
        }
    }
}
