-- Every record of each machine's log that the vault accepted, exactly as the agent's store holds it
-- (one export line): the vault's mirror of it. Not a projection of the vault's log (the records are
-- not in it, only the heads they lead to), so the rebuild leaves it alone; written in the same
-- transaction as the event that accepted them, and it verifies on its own (each machine's records
-- are a hash chain from position 1, ending at the head the vault's log names).
CREATE TABLE machine_records (
    vault TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    position BIGINT NOT NULL CHECK (position > 0),
    record BYTEA NOT NULL,
    -- When the agent recorded it (the record's own time): the fleet audit's order.
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (vault, machine_id, position)
);
CREATE INDEX machine_records_by_time ON machine_records (vault, recorded_at, machine_id, position);

-- The last record kept of each machine's log: at the anchor, but for a machine anchored before the
-- vault kept records, until it has caught up (a projection, from the events that kept them).
ALTER TABLE machines ADD COLUMN mirrored_position BIGINT;
ALTER TABLE machines ADD COLUMN mirrored_hash TEXT;

-- Each machine's fleet state: the agent's own state folded over its kept records (JSON), and the
-- last position folded; moved on in the same transaction as the records it folds. A projection of
-- `machine_records`, not of the log.
CREATE TABLE fleet_states (
    vault TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (vault, machine_id)
);
