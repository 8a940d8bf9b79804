-- A shop's latest history backfill (issue 19): the Shopify bulk operation it reads and how far it got, so a
-- backfill interrupted by a crash continues from the last line whose events the broker acknowledged.
CREATE TABLE IF NOT EXISTS backfill_runs (
    merchant_id        TEXT PRIMARY KEY,
    bulk_operation_id  TEXT,
    phase              TEXT NOT NULL,
    object_count       BIGINT,
    lines_done         BIGINT NOT NULL DEFAULT 0,
    events_produced    BIGINT NOT NULL DEFAULT 0,
    lines_skipped      BIGINT NOT NULL DEFAULT 0,
    lines_failed       BIGINT NOT NULL DEFAULT 0,
    error              TEXT,
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at        TIMESTAMPTZ
);
