//! A vault process on PostgreSQL starts in the same few statements however many machines the
//! database holds, and reads none of its log: its state is the projection tables, not a fold.
//! Counted (PostgreSQL's own statistics), not timed: the time and memory at 1M machines are the
//! benchmark's (BENCHMARKS.md).

mod common;

use common::*;
use regent_vault::BackgroundServer;

/// What PostgreSQL counted for the vault's database since the statistics were reset: transactions
/// (each statement outside a transaction is one), and the scans of the log table.
fn counters(vault: &Vault) -> (i64, i64, i64) {
    let line = vault.sql(
        "SELECT d.xact_commit + d.xact_rollback, coalesce(t.seq_scan, 0), coalesce(t.idx_scan, 0) \
         FROM pg_stat_database d, pg_stat_user_tables t \
         WHERE d.datname = current_database() AND t.schemaname = 'regent_vault' AND t.relname = 'log'",
    );
    let fields: Vec<i64> = line.trim().split('|').map(|f| f.parse().unwrap()).collect();
    (fields[0], fields[1], fields[2])
}

/// Starts (and stops) one more process on the vault's database with the statistics reset before;
/// its backends exit with the pool, which flushes what they counted.
fn count_a_start(vault: &Vault) -> (i64, i64, i64) {
    vault.sql("SELECT pg_stat_reset()");
    let before = counters(vault);
    let server = BackgroundServer::start(vault.config()).unwrap();
    server.shutdown().unwrap();
    // The counting backend (psql) is a transaction of its own each time: the same in both runs.
    let after = counters(vault);
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

fn machines_and_log(vault: &Vault, n: u32) {
    // Rows as the projections hold them, and as many log rows: what a real database of n machines
    // has (the records' bytes do not matter here: a start must not read them at all).
    vault.sql(&format!(
        "INSERT INTO regent_vault.machines (vault, machine_id, machine_name, thumbprint, registered_at) \
         SELECT 'fleet', 'm-' || i, 'srv-' || i, repeat('a', 64), now() FROM generate_series(1, {n}) i; \
         INSERT INTO regent_vault.log (position, event_id, stream, version, record) \
         SELECT h.position + i, gen_random_uuid(), 'vault/fleet-' || i, 1, '\\x7b7d'::bytea \
         FROM generate_series(1, {n}) i, regent_vault.log_head h; \
         UPDATE regent_vault.log_head SET position = position + {n};"
    ));
}

#[test]
fn a_start_reads_no_log_rows_and_costs_the_same_with_10k_machines() {
    on(Backend::Postgres, || {
        let vault = Vault::start();
        vault.admin.create_vault("fleet").unwrap();
        let small = count_a_start(&vault);
        machines_and_log(&vault, 10_000);
        let large = count_a_start(&vault);
        assert_eq!((small.1, small.2), (0, 0), "a start scanned the log: {small:?}");
        assert_eq!((large.1, large.2), (0, 0), "a start scanned the log of 10k machines: {large:?}");
        // The same bound for both (autovacuum's own transactions on the database count too, so
        // the two counts may differ by one or two; not by the thousands a fold would take).
        assert!(small.0 <= 40 && large.0 <= 40, "a start took {small:?} and {large:?} transactions");
        // The machines are there for whoever asks: read from the tables, not a fold.
        assert_eq!(vault.admin.machines("fleet").unwrap().len(), 10_000);
    });
}

#[test]
fn nonces_are_kept_as_long_as_the_clock_window_needs_and_forgotten_after() {
    on(Backend::Postgres, || {
        let vault = Vault::start();
        vault.admin.create_vault("fleet").unwrap();
        // A second process that prunes often; the rows are what registrations and refusals leave.
        let config = regent_vault::ServeConfig { prune_every: std::time::Duration::from_millis(50), ..vault.config() };
        for table in ["nonces", "request_nonces"] {
            vault.sql(&format!(
                "INSERT INTO regent_vault.{table} (vault, nonce, seen_at) VALUES \
                 ('fleet', 'old-{table}', now() - interval '1 hour'), \
                 ('fleet', 'edge-{table}', now() - interval '9 minutes'), \
                 ('fleet', 'fresh-{table}', now())"
            ));
        }
        let pruner = BackgroundServer::start(config).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        pruner.shutdown().unwrap();
        for table in ["nonces", "request_nonces"] {
            let left = vault.sql(&format!("SELECT nonce FROM regent_vault.{table} ORDER BY nonce"));
            // The window is 2 x 300 s + 60 s = 11 minutes: a nonce of 9 minutes ago is still needed.
            assert_eq!(
                left.lines().collect::<Vec<_>>(),
                [format!("edge-{table}"), format!("fresh-{table}")],
                "{table}"
            );
        }
    });
}
