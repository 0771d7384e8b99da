//! The embedded vault: its log in a `regent-store` (sled) under the data directory, its state the
//! fold of that log in memory, folded once at start.
//!
//! One committer makes every change, in rounds: it takes every change queued while the previous
//! round was written, decides each one in turn on the state (each seeing the ones before it),
//! then writes the round's events as one atomic append with one sync
//! ([`EventStore::append_batches`]), and only then answers. The state's write lock is held for
//! the whole round, so nothing reads a change before it is on disk; if the append fails, the
//! state is folded again from the log, and every change of the round is answered 503.
//!
//! Why rounds rather than one append per change: sled syncs once per append whatever the load
//! (measured: about two `sync_file_range` calls per append whether 1 or 32 threads append), so
//! concurrent changes would not share a sync. A round grows with the load, and a lone change waits
//! for nobody.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use regent_store::{
    Actor, Batch, BatchMeta, EventStore, ExpectedVersion, Head, NewEvent, SideTree, StoreError, StoreOptions,
};
use tokio::sync::{RwLock, mpsc, oneshot};
use uuid::Uuid;

use super::{Decide, FleetEntry, Storage, remembers_nonce};
use crate::api::ApiError;
use crate::audit::{AuditScan, KeptRecord};
use crate::error::VaultError;
use crate::events::{VaultEvent, stream_of};
use crate::fleet::{Cursor, FleetState};
use crate::protocol::{MachineInfo, VaultInfo};
use crate::rules::{Facts, Mirror, Planned, Scope};
use crate::state::AnchorHistory;
use crate::state::ServiceState;
use crate::transparency::Fetched;
use regent_protocol::transparency::{Leaf, MissingSubtree};

/// The service's log lives here inside the data directory.
pub(crate) const LOG_DIR: &str = "log";

/// The side tree of the log's database the machines' logs are kept in, in three key spaces, all
/// written in one batch a round, before the round's append (one `apply_batch` rather than one a
/// space: measured, log-head reports ran at 0.78x of not keeping records with a batch a space,
/// 0.86x with one; BENCHMARKS.md):
/// - [`mirror_key`] (`r`): each kept record, as the agent stores it;
/// - [`fleet_key`] (`f`): each machine's [`FleetState`] (JSON), read against the position the log
///   says is kept and folded again from the kept records when it is not there (a failed round);
/// - [`time_key`] (`t`): the kept records in audit order, to nothing;
/// - [`leaf_key`] (`l`) and [`subtree_key`] (`n`): the transparency log's leaves (their bytes) and
///   complete subtrees (their hashes), read only below the folded tree size.
///
/// Everything is read only up to what the log says is kept: a failed round may leave keys past it,
/// which the next report writes again.
pub(crate) const MIRROR_TREE: &str = "machine-records";

/// A leaf of the transparency log: `l`, its index (big-endian).
fn leaf_key(index: u64) -> Vec<u8> {
    [&[b'l'][..], &index.to_be_bytes()].concat()
}

/// A complete subtree of the transparency log: `n`, its level, its index (big-endian).
fn subtree_key(level: u8, index: u64) -> Vec<u8> {
    [&[b'n', level][..], &index.to_be_bytes()].concat()
}

/// A machine's fleet state's key: `f`, vault, 0xFF, machine id, 0xFF.
fn fleet_key(vault: &str, machine_id: &str) -> Vec<u8> {
    machine_key(b'f', vault, machine_id)
}

/// A kept record's place in audit order: `t`, vault, 0xFF, the time the agent recorded it (microseconds,
/// its sign bit flipped so that the bytes sort as the times do), machine id, 0xFF, position.
pub(crate) fn time_key(vault: &str, at: DateTime<Utc>, machine_id: &str, position: u64) -> Vec<u8> {
    let mut key = time_prefix(vault, at);
    key.extend_from_slice(machine_id.as_bytes());
    key.push(0xFF);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// Every [`time_key`] of `vault` at `at` or later sorts at or after this.
pub(crate) fn time_prefix(vault: &str, at: DateTime<Utc>) -> Vec<u8> {
    let mut key = Vec::with_capacity(vault.len() + 64);
    key.push(b't');
    key.extend_from_slice(vault.as_bytes());
    key.push(0xFF);
    key.extend_from_slice(&((at.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes());
    key
}

/// The record a [`time_key`] of `vault` names: its time, machine and position.
fn parse_time_key(vault: &str, key: &[u8]) -> Option<(DateTime<Utc>, String, u64)> {
    let rest = key.strip_prefix(b"t")?.strip_prefix(vault.as_bytes())?.strip_prefix(&[0xFF])?;
    let (time, rest) = rest.split_at_checked(8)?;
    let micros = (u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as i64;
    let (machine, position) = rest.split_at_checked(rest.len().checked_sub(9)?)?;
    let position = position.strip_prefix(&[0xFF])?;
    Some((
        DateTime::from_timestamp_micros(micros)?,
        String::from_utf8(machine.to_vec()).ok()?,
        u64::from_be_bytes(position.try_into().ok()?),
    ))
}

/// A kept record's key: `r`, vault, 0xFF, machine id, 0xFF, position (u64 big-endian), so that a
/// machine's records lie together in log order (0xFF never occurs in UTF-8).
pub(crate) fn mirror_key(vault: &str, machine_id: &str, position: u64) -> Vec<u8> {
    let mut key = mirror_prefix(vault, machine_id);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// Every key of one machine's kept records starts with this.
pub(crate) fn mirror_prefix(vault: &str, machine_id: &str) -> Vec<u8> {
    machine_key(b'r', vault, machine_id)
}

fn machine_key(space: u8, vault: &str, machine_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(vault.len() + machine_id.len() + 11);
    key.push(space);
    key.extend_from_slice(vault.as_bytes());
    key.push(0xFF);
    key.extend_from_slice(machine_id.as_bytes());
    key.push(0xFF);
    key
}

/// The most changes decided in one round.
const MAX_ROUND: usize = 1024;

pub(crate) struct SledStorage {
    store: Arc<EventStore>,
    /// The machines' records ([`MIRROR_TREE`]): written before the append of the event that kept
    /// them, so durable with it; read only up to the head that event names (a round that failed
    /// may have left records past it, which the next report writes again).
    mirror: SideTree,
    state: Arc<RwLock<ServiceState>>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// The committer's end, run by [`Committer::run`] once the runtime is up.
pub(crate) struct Committer {
    store: Arc<EventStore>,
    mirror: SideTree,
    state: Arc<RwLock<ServiceState>>,
    jobs: mpsc::UnboundedReceiver<Job>,
    /// Events written (the `events appended` metric).
    appended: IntCounter,
    /// Off, each change is its own round (for measuring the difference only).
    group_commit: bool,
}

/// One change: decides on the round's state and stages what it decided.
type Job = Box<dyn FnOnce(&mut Round<'_>) + Send>;

/// What a change staged: its events (applied to the state already) and how to answer it once the
/// round is written, or not.
struct Staged {
    stream: String,
    expected: ExpectedVersion,
    meta: BatchMeta,
    events: Vec<NewEvent>,
    mirror: Option<Mirror>,
    /// The heads its events log, in their order.
    leaves: Vec<Leaf>,
    answer: Box<dyn FnOnce(Result<(), ApiError>) + Send>,
}

/// What a decision came to, to stage.
struct Change {
    planned: Vec<Planned>,
    actor: Actor,
    new_stream: bool,
    mirror: Option<Mirror>,
}

struct Round<'s> {
    state: &'s mut ServiceState,
    staged: Vec<Staged>,
    /// An event could not be applied: the state is folded again from the log after the round.
    refold: bool,
}

impl SledStorage {
    /// Opens (or creates) the log under `data_dir` and folds it.
    pub(crate) fn open(
        data_dir: &Path,
        group_commit: bool,
        appended: IntCounter,
    ) -> Result<(SledStorage, Committer), VaultError> {
        let options = StoreOptions { lock_wait: std::time::Duration::from_secs(5), cache_bytes: 64 * 1024 * 1024 };
        let store = Arc::new(EventStore::open(data_dir.join(LOG_DIR), &options)?);
        let mirror = store.side_tree(MIRROR_TREE)?;
        let state = Arc::new(RwLock::new(fold(&store)?));
        let (sender, receiver) = mpsc::unbounded_channel();
        let storage = SledStorage { store: store.clone(), mirror: mirror.clone(), state: state.clone(), jobs: sender };
        Ok((storage, Committer { store, mirror, state, jobs: receiver, appended, group_commit }))
    }
}

/// The state of the whole log.
pub(crate) fn fold(store: &EventStore) -> Result<ServiceState, VaultError> {
    let mut state = ServiceState::default();
    for record in store.read_all(0) {
        let record = record?;
        let vault = record.stream.strip_prefix("vault/").ok_or_else(|| VaultError::BadEvent {
            position: record.position,
            detail: format!("stream {:?} is not a vault's", record.stream),
        })?;
        let event = VaultEvent::from_record(&record)
            .map_err(|detail| VaultError::BadEvent { position: record.position, detail })?;
        state.apply(vault, &event).map_err(|detail| VaultError::BadEvent { position: record.position, detail })?;
    }
    Ok(state)
}

impl Storage for SledStorage {
    async fn read(&self, scope: &Scope) -> Result<Facts, ApiError> {
        Ok(self.state.read().await.facts(scope))
    }

    async fn transact<A: Send + 'static>(
        &self,
        scope: Scope,
        now: DateTime<Utc>,
        decide: Decide<A>,
    ) -> Result<A, ApiError> {
        let (reply, answer) = oneshot::channel::<Result<A, ApiError>>();
        let job: Job = Box::new(move |round: &mut Round<'_>| {
            let facts = round.state.facts(&scope);
            let decision = match decide(&facts) {
                Ok(decision) => decision,
                Err(refusal) => {
                    if remembers_nonce(&refusal) {
                        round.remember_nonce(&scope, now);
                    }
                    let _ = reply.send(Err(refusal));
                    return;
                }
            };
            if decision.events.is_empty() {
                round.remember_nonce(&scope, now);
            }
            let outcome = decision.outcome;
            let answer = Box::new(move |stored: Result<(), ApiError>| {
                let _ = reply.send(stored.and(outcome));
            });
            let change = Change {
                planned: decision.events,
                actor: decision.actor,
                new_stream: decision.new_stream,
                mirror: decision.mirror,
            };
            round.stage(&scope.vault, change, now, answer);
        });
        self.jobs.send(job).map_err(|_| ApiError::unavailable("the service is stopping"))?;
        answer.await.map_err(|_| ApiError::unavailable("the change was abandoned"))?
    }

    async fn vault_info(&self, vault: &str) -> Result<Option<VaultInfo>, ApiError> {
        Ok(self.state.read().await.vaults.get(vault).map(|v| v.info()))
    }

    async fn machines(&self, vault: &str) -> Result<Option<Vec<MachineInfo>>, ApiError> {
        let state = self.state.read().await;
        let Some(v) = state.vaults.get(vault) else {
            return Ok(None);
        };
        let mut machines: Vec<MachineInfo> = v.machines.values().map(|m| v.machine_info(m)).collect();
        machines.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then_with(|| a.machine_id.cmp(&b.machine_id)));
        Ok(Some(machines))
    }

    async fn fleet(
        &self,
        vault: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Option<Vec<FleetEntry>>, ApiError> {
        let page: Vec<(MachineInfo, AnchorHistory)> = {
            let state = self.state.read().await;
            let Some(v) = state.vaults.get(vault) else {
                return Ok(None);
            };
            let mut machines: Vec<&MachineInfo> = v
                .machines
                .values()
                .filter(|m| {
                    after.as_ref().is_none_or(|c| (m.registered_at, &m.machine_id) > (c.registered_at, &c.machine_id))
                })
                .collect();
            machines.sort_by(|a, b| (a.registered_at, &a.machine_id).cmp(&(b.registered_at, &b.machine_id)));
            machines
                .into_iter()
                .take(limit)
                .map(|m| (m.clone(), v.anchors.get(&m.machine_id).cloned().unwrap_or_default()))
                .collect()
        };
        let (mirror, vault) = (self.mirror.clone(), vault.to_string());
        let entries = tokio::task::spawn_blocking(move || {
            page.into_iter()
                .map(|(info, anchor)| {
                    let kept = anchor.mirrored_position();
                    let fleet = match kept {
                        0 => None,
                        _ => Some(fleet_state(&mirror, &vault, &info.machine_id, kept)?),
                    };
                    Ok(FleetEntry { info, anchor, fleet })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|_| ApiError::internal("reading the fleet failed"))?
        .map_err(|detail| ApiError::internal(format!("the fleet cannot be read: {detail}")))?;
        Ok(Some(entries))
    }

    async fn kept_records(&self, vault: &str, scan: &AuditScan) -> Result<Option<Vec<KeptRecord>>, ApiError> {
        // How far each machine's records are kept, by the log: nothing past it is read.
        let kept: std::collections::HashMap<String, u64> = {
            let state = self.state.read().await;
            let Some(v) = state.vaults.get(vault) else {
                return Ok(None);
            };
            v.anchors.iter().map(|(machine, anchor)| (machine.clone(), anchor.mirrored_position())).collect()
        };
        let (mirror, vault, scan) = (self.mirror.clone(), vault.to_string(), scan.clone());
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<KeptRecord>, String> {
            use std::ops::Bound;
            let since = scan.since.map(|since| time_prefix(&vault, since));
            let after = scan.after.as_ref().map(|c| time_key(&vault, c.at, &c.machine_id, c.position));
            let start = match (since, after) {
                (Some(since), Some(after)) if since > after => Bound::Included(since),
                (_, Some(after)) => Bound::Excluded(after),
                (Some(since), None) => Bound::Included(since),
                (None, None) => Bound::Included(time_prefix(&vault, DateTime::<Utc>::MIN_UTC)),
            };
            let end = match scan.until {
                Some(until) => Bound::Excluded(time_prefix(&vault, until)),
                None => Bound::Included(time_prefix(&vault, DateTime::<Utc>::MAX_UTC)),
            };
            let mut records = Vec::new();
            for item in mirror.range((start, end)) {
                let (key, _) = item.map_err(|e| e.to_string())?;
                let (at, machine_id, position) =
                    parse_time_key(&vault, &key).ok_or_else(|| "a kept record's time key is malformed".to_string())?;
                if scan.machine.as_ref().is_some_and(|m| *m != machine_id)
                    || kept.get(&machine_id).is_none_or(|&kept| position > kept)
                {
                    continue;
                }
                let line = mirror
                    .get(&mirror_key(&vault, &machine_id, position))
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("machine {machine_id}'s record {position} is missing"))?;
                records.push(KeptRecord { machine_id, position, at, line });
                if records.len() >= scan.limit {
                    break;
                }
            }
            Ok(records)
        })
        .await
        .map_err(|_| ApiError::internal("reading the audit failed"))?
        .map_err(|detail| ApiError::internal(format!("the audit cannot be read: {detail}")))?;
        Ok(Some(records))
    }

    async fn head(&self) -> Result<Head, ApiError> {
        Ok(self.store.head())
    }

    async fn tree_size(&self) -> Result<u64, ApiError> {
        Ok(self.state.read().await.tree_size)
    }

    async fn subtrees(&self, keys: Vec<(u8, u64)>) -> Result<Fetched, ApiError> {
        let mirror = self.mirror.clone();
        blocking(move || {
            let mut fetched = Fetched::default();
            for (level, index) in keys {
                // A subtree missing or malformed is left out: the proof then names it.
                if let Some(hash) = mirror.get(&subtree_key(level, index))?
                    && let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice())
                {
                    fetched.0.insert((level, index), hash);
                }
            }
            Ok(fetched)
        })
        .await
    }

    async fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, ApiError> {
        let mirror = self.mirror.clone();
        blocking(move || mirror.get(&leaf_key(index))).await
    }

    async fn export(&self) -> Result<super::export::LogExport, ApiError> {
        Ok(super::export::from_sled(self.store.clone()))
    }

    async fn machine_log(&self, vault: &str, machine_id: &str) -> Result<Option<super::export::LogExport>, ApiError> {
        let kept = {
            let state = self.state.read().await;
            let Some(v) = state.vaults.get(vault) else {
                return Ok(None);
            };
            if !v.machines.contains_key(machine_id) && !v.removed.contains_key(machine_id) {
                return Ok(None);
            }
            v.anchors.get(machine_id).and_then(|a| a.mirrored.clone())
        };
        let head = match kept {
            Some(kept) => Head {
                position: kept.position,
                hash: regent_store::Digest32::from_hex(&kept.hash)
                    .ok_or_else(|| ApiError::internal("a kept head is malformed"))?,
            },
            None => Head { position: 0, hash: regent_store::Digest32::GENESIS },
        };
        Ok(Some(super::export::machine_from_sled(self.mirror.clone(), vault, machine_id, head)))
    }

    /// The log would take a change: it was not found damaged at start and no write has failed to
    /// reach the disk since. The text says why not, never the data directory's path (anyone may ask).
    async fn ready(&self) -> Result<(), String> {
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

impl Round<'_> {
    fn remember_nonce(&mut self, scope: &Scope, now: DateTime<Utc>) {
        if let (Some(nonce), Some(v)) = (&scope.nonce, self.state.vaults.get_mut(&scope.vault)) {
            v.remember_nonce(nonce, now, now);
        }
    }

    fn stage(
        &mut self,
        vault: &str,
        change: Change,
        now: DateTime<Utc>,
        answer: Box<dyn FnOnce(Result<(), ApiError>) + Send>,
    ) {
        let Change { planned, actor, new_stream, mirror } = change;
        let mut events = Vec::with_capacity(planned.len());
        let mut leaves = Vec::new();
        for Planned { event, id } in &planned {
            match event.to_new_event(*id) {
                Ok(new_event) => events.push(new_event),
                Err(e) => return answer(Err(ApiError::internal(format!("an event cannot be written: {e}")))),
            }
            match crate::transparency::leaf_of(vault, event) {
                Ok(leaf) => leaves.extend(leaf),
                Err(e) => return answer(Err(ApiError::internal(format!("a head cannot be logged: {e}")))),
            }
        }
        for Planned { event, .. } in &planned {
            if let Err(detail) = self.state.apply(vault, event) {
                tracing::error!(vault, %detail, "a decided event cannot be applied");
                self.refold = true;
                return answer(Err(ApiError::internal("the change cannot be applied; nothing was recorded")));
            }
        }
        self.staged.push(Staged {
            stream: stream_of(vault),
            expected: if new_stream { ExpectedVersion::NoStream } else { ExpectedVersion::Any },
            meta: BatchMeta { recorded_at: now, actor, correlation_id: Uuid::now_v7() },
            events,
            mirror,
            leaves,
            answer,
        });
    }
}

/// Runs a read of the side tree off the async threads.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("the vault's store cannot be read: {e}"))),
        Err(_) => Err(ApiError::unavailable("the read failed unexpectedly")),
    }
}

/// Writes a round's kept records, their places in audit order, their machines' fleet states moved
/// on, and the heads it logs (leaves from index `size` on, and the subtrees they complete), in one
/// atomic batch.
fn keep_records(tree: &SideTree, mirrors: &[Mirror], size: u64, leaves: &[Leaf]) -> Result<(), StoreError> {
    if mirrors.is_empty() && leaves.is_empty() {
        return Ok(());
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if !leaves.is_empty() {
        let mut frontier = Fetched::default();
        for (level, index) in crate::transparency::frontier(size) {
            let hash = tree.get(&subtree_key(level, index))?.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok());
            let hash = hash.ok_or_else(|| StoreError::Internal(MissingSubtree { level, index }.to_string()))?;
            frontier.0.insert((level, index), hash);
        }
        for (index, leaf) in (size..).zip(leaves) {
            pairs.push((leaf_key(index), leaf.encode().map_err(|e| StoreError::Internal(e.to_string()))?));
        }
        let subtrees = crate::transparency::appended(frontier, size, leaves).map_err(StoreError::Internal)?;
        pairs.extend(subtrees.into_iter().map(|(level, index, hash)| (subtree_key(level, index), hash.to_vec())));
    }
    let mut states: std::collections::HashMap<(String, String), FleetState> = std::collections::HashMap::new();
    for kept in mirrors {
        let decoded = super::decode_kept(kept).map_err(StoreError::Internal)?;
        for ((position, record), read) in (kept.first..).zip(&kept.records).zip(&decoded) {
            pairs.push((mirror_key(&kept.vault, &kept.machine_id, position), record.as_bytes().to_vec()));
            pairs.push((time_key(&kept.vault, read.recorded_at, &kept.machine_id, position), Vec::new()));
        }
        // A projection of the records: one that cannot be moved on is folded again when read.
        let machine = (kept.vault.clone(), kept.machine_id.clone());
        let before = match states.remove(&machine) {
            Some(state) if state.position + 1 == kept.first => Ok(state),
            _ => fleet_state(tree, &kept.vault, &kept.machine_id, kept.first - 1),
        };
        match before.and_then(|state| state.fold_records(&decoded)) {
            Ok(state) => {
                states.insert(machine, state);
            }
            Err(e) => tracing::error!(error = %e, "a fleet state could not be moved on; it is folded again when read"),
        }
    }
    for ((vault, machine_id), state) in states {
        let json = serde_json::to_vec(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
        pairs.push((fleet_key(&vault, &machine_id), json));
    }
    tree.insert_all(pairs)
}

/// A machine's fleet state folded up to `position` (a position its records are kept up to): the
/// stored one, moved on or folded again from the kept records if it is not there.
pub(crate) fn fleet_state(
    mirror: &SideTree,
    vault: &str,
    machine_id: &str,
    position: u64,
) -> Result<FleetState, String> {
    let stored = mirror.get(&fleet_key(vault, machine_id)).map_err(|e| e.to_string())?;
    let mut state = match stored {
        Some(json) => serde_json::from_slice::<FleetState>(&json).map_err(|e| format!("a fleet state: {e}"))?,
        None => FleetState::default(),
    };
    if state.position > position {
        state = FleetState::default();
    }
    if state.position < position {
        let range = mirror_key(vault, machine_id, state.position + 1)..=mirror_key(vault, machine_id, position);
        let lines: Vec<Vec<u8>> = mirror
            .range(range)
            .map(|item| item.map(|(_, line)| line).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        state = state.fold(lines.iter().map(Vec::as_slice))?;
        if state.position != position {
            return Err(format!("machine {machine_id}'s records end at {}, not at {position}", state.position));
        }
    }
    Ok(state)
}

impl Committer {
    /// Writes rounds until every [`SledStorage`] handle is dropped (the service stopped).
    pub(crate) async fn run(mut self) {
        while let Some(first) = self.jobs.recv().await {
            let mut jobs = vec![first];
            while self.group_commit && jobs.len() < MAX_ROUND {
                match self.jobs.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut state = self.state.write().await;
            // The round's leaves follow on from here, in the order they are appended.
            let tree_size = state.tree_size;
            let mut round = Round { state: &mut state, staged: Vec::new(), refold: false };
            for job in jobs {
                job(&mut round);
            }
            let Round { staged, refold, .. } = round;
            let (mut mirrors, mut leaves) = (Vec::new(), Vec::new());
            let (writes, answers): (Vec<_>, Vec<_>) = staged
                .into_iter()
                .map(|s| {
                    mirrors.extend(s.mirror);
                    leaves.extend(s.leaves);
                    ((s.stream, s.expected, s.meta, s.events), s.answer)
                })
                .unzip();
            let (store, mirror) = (self.store.clone(), self.mirror.clone());
            let written = tokio::task::spawn_blocking(move || {
                // Before the append: its sync makes them durable with it.
                keep_records(&mirror, &mirrors, tree_size, &leaves)?;
                let batches: Vec<Batch<'_>> = writes
                    .iter()
                    .filter(|(_, _, _, events)| !events.is_empty())
                    .map(|(stream, expected, meta, events)| Batch { stream, expected: *expected, meta, events })
                    .collect();
                store
                    .append_batches(&batches)
                    .map(|appended| appended.iter().map(|a| a.last_position + 1 - a.first_position).sum::<u64>())
            })
            .await;
            let written = match written {
                Ok(Ok(events)) => {
                    self.appended.inc_by(events);
                    Ok(())
                }
                Ok(Err(e)) => Err(ApiError::unavailable(format!("the vault's log cannot be written: {e}"))),
                Err(_) => Err(ApiError::unavailable("the write failed unexpectedly")),
            };
            if written.is_err() || refold {
                // The state holds the round's events: fold it again from what is on disk.
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || fold(&store)).await {
                    Ok(Ok(folded)) => *state = folded,
                    Ok(Err(e)) => tracing::error!(error = %e, "the vault's log cannot be folded again"),
                    Err(_) => tracing::error!("folding the vault's log again failed"),
                }
            }
            drop(state);
            for answer in answers {
                answer(written.clone());
            }
        }
    }
}
