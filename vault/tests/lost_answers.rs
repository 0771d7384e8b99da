//! Answers lost on the way: the request reached the vault, which did its work, and the connection
//! broke before the answer came back. The agent's client asks again under the same request id and
//! gets the first answer: one machine, and a PIN that is not "already used" by its own retry.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use regent_engine::model::PinAnswer;
use regent_engine::ports::VaultClient;

/// Forwards connections to the vault; the first `drop_answers` of them have their request sent and
/// the vault's answer read (so the vault has done the work), then are cut before any of it reaches
/// the client.
struct LossyFront {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl LossyFront {
    fn start(vault: SocketAddr, drop_answers: usize) -> LossyFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || forward(client, vault, n < drop_answers));
            }
        });
        LossyFront { url, connections }
    }
}

fn forward(mut client: TcpStream, vault: SocketAddr, drop_answer: bool) {
    let Ok(mut upstream) = TcpStream::connect(vault) else { return };
    let (Ok(mut client_reader), Ok(mut upstream_writer)) = (client.try_clone(), upstream.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut upstream_writer);
        let _ = upstream_writer.shutdown(Shutdown::Write);
    });
    if drop_answer {
        // Wait for the vault's answer to start (it has decided and written), then cut both sides.
        let mut first = [0u8; 1];
        upstream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = upstream.read(&mut first);
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    }
    let mut buffer = [0u8; 8192];
    while let Ok(n) = upstream.read(&mut buffer) {
        if n == 0 || client.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

both!(a_registration_whose_answer_was_lost_is_retried_and_makes_one_machine);
fn a_registration_whose_answer_was_lost_is_retried_and_makes_one_machine() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("lossy");
    let front = LossyFront::start(vault.addr(), 2);
    let answer = quick_client(None).register(&register_request(&credentials, Some(&front.url), "srv", "lost-1", None));
    let machine = machine_id(&answer);
    assert_eq!(front.connections.load(Ordering::SeqCst), 3, "two answers lost, the third attempt answered");
    let machines = vault.admin.machines("lossy").unwrap();
    assert_eq!(machines.iter().map(|m| m.machine_id.as_str()).collect::<Vec<_>>(), vec![machine.as_str()]);
}

both!(a_pin_check_whose_answer_was_lost_is_not_used_up_by_its_own_retry);
fn a_pin_check_whose_answer_was_lost_is_not_used_up_by_its_own_retry() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("lossy");
    let client = quick_client(None);
    let machine = machine_id(&client.register(&register_request(&credentials, None, "srv", "reg", None)));
    let pin = vault.admin.issue_pin("lossy").unwrap();
    let front = LossyFront::start(vault.addr(), 1);
    let answer = client.check_pin(&pin_check(&front.url, &credentials, &machine, &pin.pin, "check-lost"));
    assert_eq!(answer, PinAnswer::Valid { issued_at: pin.issued_at });
    assert_eq!(front.connections.load(Ordering::SeqCst), 2, "the first answer was lost, the retry answered");
    // It was used once: a new check with it is refused.
    let again = client.check_pin(&pin_check(&vault.url(), &credentials, &machine, &pin.pin, "check-new"));
    assert!(matches!(again, PinAnswer::Refused { .. }), "{again:?}");
}

both!(lost_answers_are_retried_only_within_the_attempts);
fn lost_answers_are_retried_only_within_the_attempts() {
    let vault = Vault::start();
    let credentials = vault.vault_with_credentials("lossy");
    // Every answer lost: the client gives up after its attempts (3 for the quick client).
    let front = LossyFront::start(vault.addr(), usize::MAX);
    let (reason, detail) =
        refusal(&quick_client(None).register(&register_request(&credentials, Some(&front.url), "srv", "r", None)));
    assert_eq!(reason, regent_engine::Reason::VaultUnreachable, "{detail}");
    assert!(detail.contains("broke before the answer came") && detail.contains("after 3 attempts"), "{detail}");
    assert_eq!(front.connections.load(Ordering::SeqCst), 3);
    // The vault did register it (its answers were lost): once.
    assert_eq!(vault.admin.machines("lossy").unwrap().len(), 1);
}
