-- Partition snapshots (docs/RECOVERY.md), kept in Postgres so that state outlives both Redis and the input topics'
-- retention. One manifest per (consumer group, partition) and one piece per merchant; a snapshot round rewrites
-- the manifest and the pieces of the merchants that changed, in one transaction. The manifest names every piece by
-- length and checksum, so a reader refuses pieces of another round.

CREATE TABLE IF NOT EXISTS snapshot_manifests (
    group_id    TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    manifest    BYTEA NOT NULL,               -- actors::snapshot "LNRM" frame: offsets, incarnation, merchant list
    writer      TEXT NOT NULL,                -- the restore (process and assignment) that wrote this round
    round       BIGINT NOT NULL,              -- rises by one with every round written, whoever writes it
    written_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, partition)
);

CREATE TABLE IF NOT EXISTS snapshot_pieces (
    group_id     TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    merchant_id  TEXT NOT NULL,
    piece        BYTEA NOT NULL,              -- the merchant's customers, orphan refunds and tombstones
    PRIMARY KEY (group_id, partition, merchant_id)
);

-- Owners of a group's partitions mark themselves alive with each round, for members that own nothing
-- (processor::flow::check_empty_assignment).
CREATE TABLE IF NOT EXISTS snapshot_owners (
    group_id     TEXT PRIMARY KEY,
    alive_until  TIMESTAMPTZ NOT NULL
);
