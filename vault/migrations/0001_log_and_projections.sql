-- The vault's log and its projections, in the schema `regent_vault` (the connection's search_path).
-- The log holds each record's stored bytes exactly as the sled store writes them (the same chain);
-- every other table is a projection of it, written in the same transaction as its events, and can
-- be recomputed from it (`regent vault rebuild-projections`), but for `request_nonces` and `service`.

CREATE TABLE log (
    position BIGINT PRIMARY KEY CHECK (position > 0),
    event_id UUID NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version > 0),
    record BYTEA NOT NULL,
    UNIQUE (stream, version)
);

-- The head of the log: one row, locked by every append until it commits, so positions are
-- gapless and in commit order (a lower position never commits after a higher one).
CREATE TABLE log_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    position BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO log_head (position, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE TABLE streams (
    stream TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Which admin token this database serves: its SHA-256 only. A process given another token is refused.
CREATE TABLE service (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    admin_token_sha256 BYTEA NOT NULL
);

CREATE TABLE vaults (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    newest TEXT
);

CREATE TABLE certificates (
    thumbprint TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    der BYTEA NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    not_after TIMESTAMPTZ NOT NULL
);

-- Outstanding PINs: deleted when used or revoked.
CREATE TABLE pins (
    pin_id UUID PRIMARY KEY,
    vault TEXT NOT NULL,
    digest BYTEA NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX pins_by_vault ON pins (vault, expires_at);

CREATE TABLE machines (
    vault TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    machine_name TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    removed_at TIMESTAMPTZ,
    wrong_pins INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMPTZ,
    anchor_position BIGINT,
    anchor_hash TEXT,
    anchored_at TIMESTAMPTZ,
    refusals BIGINT NOT NULL DEFAULT 0,
    last_refusal TEXT,
    last_refused_records TEXT,
    PRIMARY KEY (vault, machine_id)
);
CREATE INDEX machines_listed ON machines (vault, registered_at, machine_id) WHERE removed_at IS NULL;

CREATE TABLE registrations (
    vault TEXT NOT NULL,
    request_id TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    machine_name TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (vault, request_id)
);

-- A PIN check's request id and its answer: valid_issued_at is NULL for a wrong PIN.
CREATE TABLE pin_checks (
    vault TEXT NOT NULL,
    request_id TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    pin_digest BYTEA NOT NULL,
    valid_issued_at TIMESTAMPTZ,
    PRIMARY KEY (vault, request_id)
);

-- Nonces of recorded requests (a projection) ...
CREATE TABLE nonces (
    vault TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (vault, nonce)
);
CREATE INDEX nonces_by_age ON nonces (seen_at);

-- ... and of requests that recorded nothing (refusals, reads, answers given again): not in the log.
CREATE TABLE request_nonces (
    vault TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (vault, nonce)
);
CREATE INDEX request_nonces_by_age ON request_nonces (seen_at);
