//! `GET /v1/vaults/{vault}/fleet` on both storages: a page of the vault's current machines in
//! registration order, each with what the records the vault keeps of its log say (its last event,
//! whether the agent is newer than the vault) and the state of its anchor; paged with a cursor.
//! What each field means for a real agent's log is the engine's own projection, tested through the
//! binary in `tests/e2e/fleet.rs`.

mod common;

use chrono::Utc;
use common::*;
use regent_credentials::VaultCredentials;
use regent_store::{Actor, BatchMeta, ExpectedVersion, Head, NewEvent};
use regent_vault::AdminError;

fn register(credentials: &VaultCredentials, request_id: &str) -> String {
    machine_id(&regent_engine::ports::VaultClient::register(
        &quick_client(None),
        &register_request(credentials, None, "srv", request_id, None),
    ))
}

/// Appends a record of the agent's registration stream that this build cannot read (a newer
/// agent's schema).
fn grow_newer(log: &AgentLog) -> Head {
    let meta = BatchMeta {
        recorded_at: Utc::now(),
        actor: Actor { user: "op".into(), host: "srv".into() },
        correlation_id: uuid::Uuid::now_v7(),
    };
    let event = NewEvent::new("StepAccepted", 99, &serde_json::json!({"from": "the future"})).unwrap();
    log.store.append("registration", ExpectedVersion::Any, &meta, &[event]).unwrap();
    log.head()
}

fn a_fleet_page_lists_machines_in_order_with_their_logs_and_anchors_and_pages_on() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("fleet");
    let client = quick_client(None);
    let ids: Vec<String> = (0..3).map(|n| register(&credentials, &format!("req-{n}"))).collect();
    let logs: Vec<AgentLog> = ids.iter().map(|_| AgentLog::new()).collect();
    // The first reports 4 records; the second 2, then one of a newer agent; the third nothing.
    let head = logs[0].grow(4, "a");
    client
        .report_log_head(&head_signer(&vault.url(), "fleet", &ids[0], &credentials), &logs[0].store, head, None, None)
        .unwrap();
    logs[1].grow(2, "b");
    let newer = grow_newer(&logs[1]);
    client
        .report_log_head(&head_signer(&vault.url(), "fleet", &ids[1], &credentials), &logs[1].store, newer, None, None)
        .unwrap();

    let page = vault.admin.fleet("fleet", None, None).unwrap();
    assert_eq!(page.vault, "fleet");
    let listed: Vec<&str> = page.machines.iter().map(|m| m.machine_id.as_str()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>(), "registration order");
    assert_eq!(page.next, None);
    let (first, second, third) = (&page.machines[0], &page.machines[1], &page.machines[2]);
    assert_eq!((first.anchor.status.as_str(), first.anchor.position, first.anchor.mirrored), ("current", Some(4), 4));
    let last = first.last_event.as_ref().unwrap();
    assert_eq!((last.position, last.kind.as_str(), last.step.as_deref()), (4, "Tested", None));
    assert_eq!(first.phase.as_deref(), Some("new"), "no step of the wizard in this log");
    assert!(!first.agent_newer);
    assert!(second.agent_newer, "a record of a schema this build cannot read");
    assert_eq!(second.last_event.as_ref().map(|e| e.position), Some(3));
    assert_eq!((third.anchor.status.as_str(), third.phase.as_ref(), third.last_event.as_ref()), ("none", None, None));

    // A refused report after the last accepted head shows.
    let refused = client.report_log_head(
        &head_signer(&vault.url(), "fleet", &ids[0], &credentials),
        &logs[0].store,
        logs[0].head_at(2),
        None,
        None,
    );
    assert_eq!(refused.unwrap_err().code(), "log_head_regressed");
    let page = vault.admin.fleet("fleet", None, None).unwrap();
    assert_eq!((page.machines[0].anchor.status.as_str(), page.machines[0].anchor.refusals), ("refused", 1));

    // Pages of one: each names the next, the last none; the rows are the same as in one page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = vault.admin.fleet("fleet", Some(1), after.as_deref()).unwrap();
        assert_eq!(page.machines.len(), 1);
        seen.push(page.machines[0].machine_id.clone());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    // The fleet states are stored, not folded from memory: the same after a restart; a removed
    // machine leaves the fleet.
    let before = vault.admin.fleet("fleet", None, None).unwrap();
    let vault = vault.restart();
    let after_restart = vault.admin.fleet("fleet", None, None).unwrap();
    assert_eq!(
        after_restart.machines.iter().map(|m| (&m.machine_id, &m.last_event, m.agent_newer)).collect::<Vec<_>>(),
        before.machines.iter().map(|m| (&m.machine_id, &m.last_event, m.agent_newer)).collect::<Vec<_>>()
    );
    vault.admin.remove_machine("fleet", &ids[2]).unwrap();
    assert_eq!(vault.admin.fleet("fleet", None, None).unwrap().machines.len(), 2);

    // Bad input: named, one line each.
    let refused =
        |limit: Option<usize>, after: Option<&str>, vault_name: &str| match vault.admin.fleet(vault_name, limit, after)
        {
            Err(AdminError::Refused { code, .. } | AdminError::NotFound { code, .. }) => code.code().to_string(),
            Err(other) => panic!("{other}"),
            Ok(page) => panic!("listed {page:?}"),
        };
    assert_eq!(refused(Some(0), None, "fleet"), "bad_request");
    assert_eq!(refused(Some(1001), None, "fleet"), "bad_request");
    assert_eq!(refused(None, Some("not a cursor"), "fleet"), "bad_request");
    assert_eq!(refused(None, None, "nowhere"), "vault_not_found");
    let raw_answer = raw(
        vault.addr(),
        "GET",
        "/v1/vaults/fleet/fleet?limit=1&color=red",
        &[("Authorization", &format!("Bearer {}", vault.token()))],
        b"",
    );
    assert_eq!((raw_answer.status, raw_answer.error_code().as_str()), (400, "bad_request"), "{}", raw_answer.body);
}
both!(a_fleet_page_lists_machines_in_order_with_their_logs_and_anchors_and_pages_on);

fn the_fleet_audit_pages_every_machines_events_in_time_order_and_filters_them() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("audited");
    let client = quick_client(None);
    let ids: Vec<String> = (0..2).map(|n| register(&credentials, &format!("req-{n}"))).collect();
    let logs: Vec<AgentLog> = ids.iter().map(|_| AgentLog::new()).collect();
    // Batches a few milliseconds apart, alternating machines: 3, then 2, then 3 records.
    let mut expected = Vec::new();
    for (machine, count) in [(0, 3), (1, 2), (0, 3)] {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let from = logs[machine].head().position + 1;
        let head = logs[machine].grow(count, "audit");
        expected.extend((from..=head.position).map(|p| (ids[machine].clone(), p)));
        let me = head_signer(&vault.url(), "audited", &ids[machine], &credentials);
        client.report_log_head(&me, &logs[machine].store, head, None, None).unwrap();
    }
    let audit = |query: &[(&str, String)]| vault.admin.audit("audited", query).unwrap();
    let shown = |page: &regent_vault::protocol::FleetAudit| -> Vec<(String, u64)> {
        page.entries.iter().map(|e| (e.machine_id.clone(), e.position)).collect()
    };

    let all = audit(&[]);
    assert_eq!(shown(&all), expected, "oldest first, across machines");
    assert_eq!(all.next, None);
    let first = &all.entries[0];
    assert_eq!((first.kind.as_str(), first.step.as_ref(), first.actor.as_str()), ("Tested", None, "test@test"));
    assert_eq!(first.hash, logs[0].head_at(1).hash.to_hex(), "each entry names its record");

    // Pages of three: the same entries, each page naming the next.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let mut query = vec![("limit", "3".to_string())];
        query.extend(after.clone().map(|a| ("after", a)));
        let page = audit(&query);
        paged.extend(shown(&page));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, expected);

    // One machine; a period (from the second machine's records on); a kind; an actor; an outcome
    // (these records are of no wizard step, so none has one).
    let second: Vec<(String, u64)> = expected.iter().filter(|(m, _)| *m == ids[1]).cloned().collect();
    assert_eq!(shown(&audit(&[("machine", ids[1].clone())])), second);
    let since = all.entries[3].at;
    let until = all.entries[5].at;
    let period = audit(&[("since", since.to_rfc3339()), ("until", until.to_rfc3339())]);
    assert_eq!(shown(&period), expected[3..5].to_vec());
    assert_eq!(audit(&[("kind", "tested".into())]).entries.len(), 8, "kinds match in any case");
    assert!(audit(&[("kind", "ProxySet".into())]).entries.is_empty());
    assert_eq!(audit(&[("actor", "test@test".into())]).entries.len(), 8);
    assert!(audit(&[("actor", "someone@else".into())]).entries.is_empty());
    assert!(audit(&[("outcome", "refused".into())]).entries.is_empty());

    // Bad input: one code each, nothing listed.
    let refused = |vault_name: &str, query: &[(&str, String)]| match vault.admin.audit(vault_name, query) {
        Err(AdminError::Refused { code, .. } | AdminError::NotFound { code, .. }) => code.code().to_string(),
        Err(other) => panic!("{other}"),
        Ok(page) => panic!("listed {page:?}"),
    };
    for query in [
        vec![("limit", "0".to_string())],
        vec![("limit", "1001".into())],
        vec![("since", "yesterday".into())],
        vec![("outcome", "maybe".into())],
        vec![("kind", "a kind; DROP TABLE".into())],
        vec![("after", "not a cursor".into())],
        vec![("machine", "x".repeat(200))],
        vec![("actor", "a\u{7}b".into())],
        vec![("colour", "red".into())],
    ] {
        assert_eq!(refused("audited", &query), "bad_request", "{query:?}");
    }
    assert_eq!(refused("nowhere", &[]), "vault_not_found");
}
both!(the_fleet_audit_pages_every_machines_events_in_time_order_and_filters_them);
