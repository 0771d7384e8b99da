//! The embedded (sled) vault's state: a fold of its log, in memory. The same `apply` runs at start
//! (over the whole log) and after each decision, and [`ServiceState::facts`] gives the rules the
//! slice of it a decision reads. The fold takes its times from the events, never from the clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use regent_credentials::VaultIdentity;
use uuid::Uuid;

use crate::events::{
    CredentialsIssued, LogHeadAnchored, LogHeadRefused, LogRecordsMirrored, MachineRegistered, MachineRemoved,
    PinCheckFailed, PinCheckRecord, PinIssued, PinUsed, VaultEvent,
};
use crate::protocol::{Anchor, AnchorRefusal, MachineInfo, Registered, VaultInfo};
use crate::rules::{
    CertFacts, Facts, MachineFacts, NONCE_MEMORY, PIN_MEMORY, PinCheckFacts, RegistrationFacts, Scope, VaultFacts,
};

#[derive(Default)]
pub(crate) struct ServiceState {
    pub vaults: HashMap<String, VaultState>,
    /// Certificate thumbprint -> the vault that issued it, to tell "another vault's certificate" from
    /// "a certificate never issued".
    pub thumbprints: HashMap<String, String>,
    /// How many heads the service's transparency log holds: the next leaf's index.
    pub tree_size: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct IssuedCert {
    pub der: Arc<[u8]>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub(crate) struct PinRecord {
    pub digest: [u8; 32],
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a vault keeps of one machine's log: the head anchored last, and the reports it refused.
#[derive(Clone, Debug, Default)]
pub(crate) struct AnchorHistory {
    pub head: Option<HeldAnchor>,
    /// The last record the vault keeps of the machine's log (its mirror runs from position 1 to
    /// it); `None` before any is kept. At the anchor, but for a machine anchored before the vault
    /// kept records, until it has caught up.
    pub mirrored: Option<MirroredHead>,
    /// The index of the machine's latest leaf in the service's transparency log (its head, logged);
    /// `None` for a machine anchored before the vault kept the tree, until it reports again.
    pub leaf: Option<u64>,
    pub refusals: u64,
    pub last_refusal: Option<AnchorRefusal>,
    /// The digest of the records the last refused report carried, if any: with the refusal, it
    /// tells a retry (nothing new to record) from another report of the same head.
    pub last_refused_records: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct HeldAnchor {
    pub position: u64,
    pub hash: String,
    pub anchored_at: DateTime<Utc>,
}

/// The last record of a machine's log the vault keeps: its position and hash (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MirroredHead {
    pub position: u64,
    pub hash: String,
}

impl AnchorHistory {
    /// Where the next report's records start after.
    pub(crate) fn mirrored_position(&self) -> u64 {
        self.mirrored.as_ref().map_or(0, |m| m.position)
    }

    /// The anchor as the protocol shows it; `None` until a head was accepted.
    pub(crate) fn anchor(&self, machine_id: &str) -> Option<Anchor> {
        self.head.as_ref().map(|head| Anchor {
            machine_id: machine_id.to_string(),
            position: head.position,
            hash: head.hash.clone(),
            anchored_at: head.anchored_at,
            mirrored: Some(self.mirrored_position()),
            refusals: self.refusals,
            last_refusal: self.last_refusal.clone(),
            log: None,
        })
    }
}

/// What a registration's request id is bound to from its first arrival on: a request id sent again
/// with other values is refused, so one request id can never make, or be answered with, a machine
/// for another server (resource id: the vault's own, checked before; the vault is the stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RegistrationKey {
    pub thumbprint: String,
    pub machine_name: String,
}

/// How a PIN check was answered, for its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinOutcome {
    /// The PIN was good (and is used up now); it had been issued at this time.
    Valid(DateTime<Utc>),
    /// The PIN matched no outstanding one (counted against the machine).
    Wrong,
}

/// A machine's wrong PINs: how many in a row since its last good PIN or lock, and until when its
/// checks are locked. Folded from `PinCheckFailed` and `PinUsed`, so it survives restarts and is
/// the same in every process reading the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PinGuard {
    pub wrong_in_row: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

pub(crate) struct VaultState {
    pub identity: VaultIdentity,
    pub created_at: DateTime<Utc>,
    pub certs: HashMap<String, IssuedCert>,
    /// The newest download: the only certificate a new registration may use.
    pub newest: Option<String>,
    /// Current machines by id.
    pub machines: BTreeMap<String, MachineInfo>,
    /// Removed machines by id: their PIN checks are still verified (with the key they registered
    /// with) to be told `machine_removed`.
    pub removed: HashMap<String, MachineInfo>,
    /// When each removed machine was removed: what an unregistration of it is answered with again.
    pub removed_at: HashMap<String, DateTime<Utc>>,
    /// Registration request id -> what it is bound to and the first answer given to it.
    pub registrations: HashMap<String, RegistrationFacts>,
    /// Machine id -> the request id that made it.
    machine_requests: HashMap<String, String>,
    /// PIN check request id -> the machine and PIN it was sent with and its answer.
    pub pin_checks: HashMap<String, PinCheckFacts>,
    /// Wrong PINs and lock-outs by machine id.
    pub pin_guards: HashMap<String, PinGuard>,
    nonces: HashSet<String>,
    nonce_order: VecDeque<(DateTime<Utc>, String)>,
    /// Outstanding PINs (neither used nor revoked) by id.
    pub pins: HashMap<Uuid, PinRecord>,
    /// Log heads by machine id. Kept apart from `machines`: a removed machine's history stays.
    pub anchors: HashMap<String, AnchorHistory>,
}

impl VaultState {
    fn new(identity: VaultIdentity, created_at: DateTime<Utc>) -> VaultState {
        VaultState {
            identity,
            created_at,
            certs: HashMap::new(),
            newest: None,
            machines: BTreeMap::new(),
            removed: HashMap::new(),
            removed_at: HashMap::new(),
            registrations: HashMap::new(),
            machine_requests: HashMap::new(),
            pin_checks: HashMap::new(),
            pin_guards: HashMap::new(),
            nonces: HashSet::new(),
            nonce_order: VecDeque::new(),
            pins: HashMap::new(),
            anchors: HashMap::new(),
        }
    }

    fn facts(&self) -> VaultFacts {
        VaultFacts { identity: self.identity.clone(), created_at: self.created_at, newest: self.newest.clone() }
    }

    pub(crate) fn info(&self) -> VaultInfo {
        crate::rules::vault_info(&self.facts(), self.machines.len())
    }

    fn machine_facts(&self, machine_id: &str) -> Option<MachineFacts> {
        let (info, removed_at) = match (self.machines.get(machine_id), self.removed.get(machine_id)) {
            (Some(machine), _) => (machine.clone(), None),
            (None, Some(machine)) => (machine.clone(), Some(self.removed_at.get(machine_id).copied())),
            (None, None) => return None,
        };
        Some(MachineFacts {
            info,
            // Removed machines from logs that did not record when: the time is unknown, the
            // registration's will do.
            removed_at: removed_at.map(|at| at.unwrap_or(self.created_at)),
            guard: self.pin_guards.get(machine_id).copied().unwrap_or_default(),
            anchor: self.anchors.get(machine_id).cloned().unwrap_or_default(),
        })
    }

    /// Remembers a nonce; false if it was seen before (a replay). Old nonces are forgotten first.
    pub(crate) fn remember_nonce(&mut self, nonce: &str, seen_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        while let Some((at, _)) = self.nonce_order.front() {
            if now - *at <= NONCE_MEMORY {
                break;
            }
            if let Some((_, old)) = self.nonce_order.pop_front() {
                self.nonces.remove(&old);
            }
        }
        if self.nonces.contains(nonce) {
            return false;
        }
        self.nonces.insert(nonce.to_string());
        self.nonce_order.push_back((seen_at, nonce.to_string()));
        true
    }

    /// Whether a nonce was seen (and is still remembered), changing nothing.
    pub(crate) fn nonce_seen(&self, nonce: &str) -> bool {
        self.nonces.contains(nonce)
    }

    /// Forgets PINs that expired long ago.
    pub(crate) fn prune_pins(&mut self, now: DateTime<Utc>) {
        self.pins.retain(|_, pin| now - pin.expires_at <= PIN_MEMORY);
    }

    fn apply_registered(&mut self, e: &MachineRegistered) {
        let answer = Registered {
            machine_id: e.machine_id.clone(),
            vault: self.identity.resource_name.clone(),
            registered_at: e.registered_at,
        };
        let key = RegistrationKey { thumbprint: e.thumbprint.clone(), machine_name: e.machine_name.clone() };
        self.registrations.insert(e.request_id.clone(), RegistrationFacts { key, answer, removed: false });
        self.machine_requests.insert(e.machine_id.clone(), e.request_id.clone());
        self.machines.insert(
            e.machine_id.clone(),
            MachineInfo {
                machine_id: e.machine_id.clone(),
                machine_name: e.machine_name.clone(),
                registered_at: e.registered_at,
                thumbprint: e.thumbprint.clone(),
                log_head: None,
            },
        );
        // Replayed from the log, the nonce is remembered as seen when the machine registered; a
        // nonce that old is dropped at a later change.
        self.remember_nonce(&e.nonce, e.registered_at, e.registered_at);
    }

    fn apply_removed(&mut self, e: &MachineRemoved) {
        let machine_id = e.machine_id.as_str();
        if let Some(machine) = self.machines.remove(machine_id) {
            self.removed.insert(machine_id.to_string(), machine);
            self.removed_at.insert(machine_id.to_string(), e.removed_at);
        }
        if let Some(unregistration) = &e.unregistration {
            self.remember_nonce(&unregistration.nonce, e.removed_at, e.removed_at);
        }
        if let Some(answered) =
            self.machine_requests.get(machine_id).and_then(|request_id| self.registrations.get_mut(request_id))
        {
            answered.removed = true;
        }
    }

    fn remember_check(&mut self, machine_id: &str, check: &PinCheckRecord, outcome: PinOutcome, at: DateTime<Utc>) {
        let mut pin_digest = [0u8; 32];
        // A digest this service wrote is 64 hex digits; one that is not can never match a retry.
        if hex::decode_to_slice(&check.pin_digest, &mut pin_digest).is_err() {
            pin_digest = [0u8; 32];
        }
        self.pin_checks.insert(
            check.request_id.clone(),
            PinCheckFacts { machine_id: machine_id.to_string(), pin_digest, outcome },
        );
        self.remember_nonce(&check.nonce, at, at);
    }

    fn apply_pin_used(&mut self, e: &PinUsed) {
        let issued_at = e.issued_at.or_else(|| self.pins.get(&e.pin_id).map(|pin| pin.issued_at));
        self.pins.remove(&e.pin_id);
        // A good PIN ends a run of wrong ones.
        self.pin_guards.entry(e.machine_id.clone()).or_default().wrong_in_row = 0;
        if let Some(check) = &e.check {
            let outcome = PinOutcome::Valid(issued_at.unwrap_or(e.used_at));
            self.remember_check(&e.machine_id, check, outcome, e.used_at);
        }
    }

    fn apply_pin_failed(&mut self, e: &PinCheckFailed) {
        let guard = self.pin_guards.entry(e.machine_id.clone()).or_default();
        match e.locked_until {
            // The failure that locks starts a new run once the lock ends.
            Some(until) => {
                guard.wrong_in_row = 0;
                guard.locked_until = Some(guard.locked_until.map_or(until, |earlier| earlier.max(until)));
            }
            None => guard.wrong_in_row = guard.wrong_in_row.saturating_add(1),
        }
        self.remember_check(&e.machine_id, &e.check, PinOutcome::Wrong, e.failed_at);
    }

    /// A machine as the admin API lists it: with its anchored log head.
    pub(crate) fn machine_info(&self, machine: &MachineInfo) -> MachineInfo {
        let mut info = machine.clone();
        info.log_head = self.anchors.get(&machine.machine_id).and_then(|a| a.anchor(&machine.machine_id));
        info
    }

    fn apply_anchored(&mut self, e: &LogHeadAnchored, leaf: Option<u64>) {
        let anchor = self.anchors.entry(e.machine_id.clone()).or_default();
        // The same head logged again (a machine anchored before the tree): first accepted then.
        let anchored_at = match &anchor.head {
            Some(held) if held.position == e.position && held.hash == e.hash => held.anchored_at,
            _ => e.anchored_at,
        };
        anchor.head = Some(HeldAnchor { position: e.position, hash: e.hash.clone(), anchored_at });
        if leaf.is_some() {
            anchor.leaf = leaf;
        }
        if e.mirrored_from.is_some() {
            anchor.mirrored = Some(MirroredHead { position: e.position, hash: e.hash.clone() });
        }
        self.remember_nonce(&e.nonce, e.anchored_at, e.anchored_at);
    }

    fn apply_mirrored(&mut self, e: &LogRecordsMirrored) {
        let anchor = self.anchors.entry(e.machine_id.clone()).or_default();
        anchor.mirrored = Some(MirroredHead { position: e.position, hash: e.hash.clone() });
        self.remember_nonce(&e.nonce, e.mirrored_at, e.mirrored_at);
    }

    fn apply_refused(&mut self, e: &LogHeadRefused) {
        let anchor = self.anchors.entry(e.machine_id.clone()).or_default();
        anchor.refusals += 1;
        anchor.last_refusal = Some(AnchorRefusal {
            error: e.error.clone(),
            position: e.position,
            hash: e.hash.clone(),
            refused_at: e.refused_at,
        });
        anchor.last_refused_records = e.records_sha256.clone();
        self.remember_nonce(&e.nonce, e.refused_at, e.refused_at);
    }
}

impl ServiceState {
    /// The slice of the state a decision reads.
    pub(crate) fn facts(&self, scope: &Scope) -> Facts {
        let Some(v) = self.vaults.get(&scope.vault) else {
            // Without its vault a decision reads nothing else: it is refused.
            return Facts { cert: scope.thumbprint.as_ref().and_then(|t| self.cert(t)), ..Facts::default() };
        };
        Facts {
            vault: Some(v.facts()),
            cert: scope.thumbprint.as_ref().and_then(|t| self.cert(t)),
            machine: scope.machine.as_ref().and_then(|m| v.machine_facts(m)),
            registration: scope.registration.as_ref().and_then(|r| v.registrations.get(r).cloned()),
            pin_check: scope.pin_check.as_ref().and_then(|r| v.pin_checks.get(r).cloned()),
            nonce_seen: scope.nonce.as_ref().is_some_and(|n| v.nonce_seen(n)),
            pins: if scope.pins { v.pins.iter().map(|(id, pin)| (*id, pin.clone())).collect() } else { Vec::new() },
        }
    }

    fn cert(&self, thumbprint: &str) -> Option<CertFacts> {
        let vault = self.thumbprints.get(thumbprint)?;
        let cert = self.vaults.get(vault)?.certs.get(thumbprint)?;
        Some(CertFacts { vault: vault.clone(), cert: cert.clone() })
    }

    /// Folds one event of `vault`'s stream into the state.
    pub(crate) fn apply(&mut self, vault: &str, event: &VaultEvent) -> Result<(), String> {
        if let VaultEvent::VaultCreated(e) = event {
            if self.vaults.contains_key(vault) {
                return Err(format!("vault {vault} is created twice"));
            }
            self.vaults.insert(vault.to_string(), VaultState::new(e.identity.clone(), e.created_at));
            return Ok(());
        }
        let state = self
            .vaults
            .get_mut(vault)
            .ok_or_else(|| format!("{} for vault {vault}, which was never created", event.kind()))?;
        match event {
            VaultEvent::VaultCreated(_) => {}
            VaultEvent::CredentialsIssued(CredentialsIssued {
                thumbprint, certificate, not_before, not_after, ..
            }) => {
                use base64::Engine as _;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(certificate)
                    .map_err(|_| format!("the certificate {thumbprint} is not base64"))?;
                state.certs.insert(
                    thumbprint.clone(),
                    IssuedCert { der: der.into(), not_before: *not_before, not_after: *not_after },
                );
                state.newest = Some(thumbprint.clone());
                self.thumbprints.insert(thumbprint.clone(), vault.to_string());
            }
            VaultEvent::PinIssued(PinIssued { pin_id, digest, issued_at, expires_at }) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(digest, &mut bytes).map_err(|_| format!("PIN {pin_id} has a malformed digest"))?;
                state.pins.insert(*pin_id, PinRecord { digest: bytes, issued_at: *issued_at, expires_at: *expires_at });
                state.prune_pins(*issued_at);
            }
            VaultEvent::PinUsed(e) => state.apply_pin_used(e),
            VaultEvent::PinsRevoked(e) => {
                for id in &e.pin_ids {
                    state.pins.remove(id);
                }
            }
            VaultEvent::PinCheckFailed(e) => state.apply_pin_failed(e),
            VaultEvent::MachineRegistered(e) => state.apply_registered(e),
            VaultEvent::MachineRemoved(e) => state.apply_removed(e),
            VaultEvent::LogHeadAnchored(e) => {
                let leaf = e.logged.then_some(self.tree_size);
                state.apply_anchored(e, leaf);
                self.tree_size += u64::from(e.logged);
            }
            VaultEvent::LogRecordsMirrored(e) => state.apply_mirrored(e),
            VaultEvent::LogHeadRefused(e) => state.apply_refused(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{PinCheckFailed, PinCheckRecord, PinUsed, VaultCreated};
    use chrono::Duration;

    fn state_with_vault() -> ServiceState {
        let mut state = ServiceState::default();
        let identity = VaultIdentity {
            resource_name: "v".into(),
            subscription_id: "s".into(),
            resource_group: "g".into(),
            location: "l".into(),
            resource_id: 1,
            resource_type: "Vaults".into(),
            provider_namespace: "p".into(),
        };
        state.apply("v", &VaultEvent::VaultCreated(VaultCreated { identity, created_at: Utc::now() })).unwrap();
        state
    }

    fn check(request_id: &str) -> PinCheckRecord {
        PinCheckRecord {
            request_id: request_id.into(),
            pin_digest: "00".repeat(32),
            nonce: format!("nonce-{request_id}"),
            peer: "127.0.0.1".into(),
        }
    }

    fn failed(machine: &str, request_id: &str, locked_until: Option<DateTime<Utc>>) -> VaultEvent {
        VaultEvent::PinCheckFailed(PinCheckFailed {
            machine_id: machine.into(),
            check: check(request_id),
            failed_at: Utc::now(),
            locked_until,
        })
    }

    #[test]
    fn wrong_pins_fold_per_machine_and_a_good_one_or_a_lock_starts_a_new_run() {
        let mut state = state_with_vault();
        for n in 0..3 {
            state.apply("v", &failed("a", &format!("a{n}"), None)).unwrap();
        }
        state.apply("v", &failed("b", "b0", None)).unwrap();
        let guard = |state: &ServiceState, machine: &str| state.vaults["v"].pin_guards[machine];
        assert_eq!(guard(&state, "a"), PinGuard { wrong_in_row: 3, locked_until: None });
        assert_eq!(guard(&state, "b").wrong_in_row, 1, "another machine's count is its own");

        let until = Utc::now() + Duration::minutes(15);
        state.apply("v", &failed("a", "a3", Some(until))).unwrap();
        assert_eq!(guard(&state, "a"), PinGuard { wrong_in_row: 0, locked_until: Some(until) });
        assert_eq!(state.vaults["v"].pin_checks["a3"].outcome, PinOutcome::Wrong);

        let used = VaultEvent::PinUsed(PinUsed {
            pin_id: Uuid::now_v7(),
            machine_id: "b".into(),
            used_at: Utc::now(),
            issued_at: Some(until),
            check: Some(check("b1")),
        });
        state.apply("v", &used).unwrap();
        assert_eq!(guard(&state, "b").wrong_in_row, 0, "a good PIN ends the run");
        assert_eq!(state.vaults["v"].pin_checks["b1"].outcome, PinOutcome::Valid(until));
        // The nonces of recorded checks are remembered: a replay stays refused after a restart.
        assert!(!state.vaults.get_mut("v").unwrap().remember_nonce("nonce-b1", Utc::now(), Utc::now()));
    }

    #[test]
    fn a_removed_machine_keeps_its_request_id_and_its_key() {
        let mut state = state_with_vault();
        let registered = MachineRegistered {
            machine_id: "m-1".into(),
            machine_name: "srv".into(),
            thumbprint: "t".into(),
            request_id: "r-1".into(),
            nonce: "nonce-registered".into(),
            registered_at: Utc::now(),
            peer: String::new(),
        };
        state.apply("v", &VaultEvent::MachineRegistered(registered)).unwrap();
        assert!(!state.vaults["v"].registrations["r-1"].removed);
        let removed = MachineRemoved { machine_id: "m-1".into(), removed_at: Utc::now(), unregistration: None };
        state.apply("v", &VaultEvent::MachineRemoved(removed)).unwrap();
        let v = &state.vaults["v"];
        assert!(v.registrations["r-1"].removed, "the request id is marked, never forgotten");
        assert!(!v.machines.contains_key("m-1"));
        assert_eq!(v.removed["m-1"].thumbprint, "t");
    }
}
