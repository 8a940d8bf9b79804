-- Points imported from another loyalty app's customer export (issue 19): one row per import, with the rows it
-- could not use and why, so the merchant can fix and re-send them (re-importing changes nothing: event ids are
-- derived from the file's content).
CREATE TABLE IF NOT EXISTS point_imports (
    id             TEXT PRIMARY KEY,
    merchant_id    TEXT NOT NULL,
    source         TEXT NOT NULL,
    file_sha256    TEXT NOT NULL,
    status         TEXT NOT NULL,
    rows_total     BIGINT NOT NULL DEFAULT 0,
    rows_imported  BIGINT NOT NULL DEFAULT 0,
    rows_failed    BIGINT NOT NULL DEFAULT 0,
    errors         JSONB NOT NULL DEFAULT '[]',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS point_imports_merchant ON point_imports (merchant_id, created_at DESC);
