//! Group commit for registrations: concurrent registrations are appended together, one store append
//! (one flush) per vault per round, and each is answered once its round is on disk.
//!
//! Why not rely on the store: `EventStore::append` flushes outside its writer lock, but sled's flush
//! syncs again for every caller that appended meanwhile (measured: about two `sync_file_range` calls
//! per append whether 1 or 32 threads append), so concurrent appends do not share a sync. Here the
//! committer takes whatever queued while the previous round was being written and writes it as one
//! batch: the batch grows with the load, and a lone registration waits for nobody.

use std::sync::Arc;

use chrono::Utc;
use regent_store::{Actor, BatchMeta, ExpectedVersion, NewEvent};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::service_log::ServiceLog;

/// The most events written in one round.
const MAX_BATCH: usize = 1024;

struct Commit {
    stream: String,
    event: NewEvent,
    /// Ok once the event is on disk; the store's error text otherwise.
    reply: oneshot::Sender<Result<(), String>>,
}

/// The handlers' end: hands an event to the committer and waits until it is durable.
#[derive(Clone)]
pub(crate) struct Committer {
    sender: mpsc::UnboundedSender<Commit>,
}

/// The committer's end, run by [`run`] once the runtime is up.
pub(crate) struct CommitQueue {
    receiver: mpsc::UnboundedReceiver<Commit>,
}

pub(crate) fn channel() -> (Committer, CommitQueue) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (Committer { sender }, CommitQueue { receiver })
}

impl Committer {
    pub(crate) async fn commit(&self, stream: String, event: NewEvent) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Commit { stream, event, reply }).map_err(|_| "the service is stopping".to_string())?;
        answer.await.map_err(|_| "the write was abandoned".to_string())?
    }
}

/// Writes rounds until every [`Committer`] is dropped (the service stopped).
pub(crate) async fn run(store: Arc<ServiceLog>, actor: Actor, mut queue: CommitQueue) {
    while let Some(first) = queue.receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.receiver.try_recv() {
                Ok(commit) => batch.push(commit),
                Err(_) => break,
            }
        }
        let (store, actor) = (store.clone(), actor.clone());
        // While this round is written, the next one queues up.
        if tokio::task::spawn_blocking(move || write_round(&store, &actor, batch)).await.is_err() {
            // Its replies were dropped with it: the waiting requests answer 503 and nothing is lost
            // that was acknowledged.
            tracing::error!("a group commit round failed unexpectedly");
        }
    }
}

fn write_round(store: &ServiceLog, actor: &Actor, batch: Vec<Commit>) {
    // One append per stream, in arrival order.
    let mut groups: Vec<(String, Vec<Commit>)> = Vec::new();
    for commit in batch {
        match groups.iter_mut().find(|(stream, _)| *stream == commit.stream) {
            Some((_, commits)) => commits.push(commit),
            None => groups.push((commit.stream.clone(), vec![commit])),
        }
    }
    let meta = || BatchMeta { recorded_at: Utc::now(), actor: actor.clone(), correlation_id: Uuid::now_v7() };
    for (stream, commits) in groups {
        let events: Vec<NewEvent> = commits.iter().map(|c| c.event.clone()).collect();
        match store.append(&stream, ExpectedVersion::Any, &meta(), &events) {
            Ok(_) => {
                for commit in commits {
                    let _ = commit.reply.send(Ok(()));
                }
            }
            Err(e) if commits.len() > 1 => {
                // One bad event must not sink the others: write them one at a time.
                tracing::warn!(error = %e, events = commits.len(), "a grouped append failed; writing its events one by one");
                for commit in commits {
                    let written = store
                        .append(&stream, ExpectedVersion::Any, &meta(), std::slice::from_ref(&commit.event))
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = commit.reply.send(written);
                }
            }
            Err(e) => {
                for commit in commits {
                    let _ = commit.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
