-- The service's transparency log (RFC 6962): its leaves are the heads it accepted, in the order
-- their events hold in the log. A projection of the log (`regent vault rebuild-projections` makes
-- it again), written in the transaction of the event that logs each head: the leaf's index is the
-- tree's size, taken with the log's head row, which the append then holds until commit.
ALTER TABLE log_head ADD COLUMN tree_size BIGINT NOT NULL DEFAULT 0 CHECK (tree_size >= 0);

-- Each leaf's bytes (the encoding in vault/README.md).
CREATE TABLE tree_leaves (
    leaf_index BIGINT PRIMARY KEY CHECK (leaf_index >= 0),
    vault TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    leaf BYTEA NOT NULL
);

-- Every complete subtree's hash: level L, index I covers the leaves [I * 2^L, (I + 1) * 2^L).
-- Written once, when its last leaf is appended; a proof reads only the ones it needs.
CREATE TABLE tree_nodes (
    level SMALLINT NOT NULL CHECK (level >= 0 AND level < 64),
    node_index BIGINT NOT NULL CHECK (node_index >= 0),
    hash BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, node_index)
);

-- Each machine's latest leaf.
ALTER TABLE machines ADD COLUMN leaf_index BIGINT;

-- The checkpoint key's verifier (public): a process given another key is refused.
ALTER TABLE service ADD COLUMN checkpoint_verifier TEXT;
