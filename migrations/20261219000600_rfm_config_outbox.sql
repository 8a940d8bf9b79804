-- A saved RFM configuration is committed with an outbox row in one transaction; a relay publishes the row to the
-- config topic and marks it sent (src/merchant_config/outbox.rs). The revision counts a merchant's saves, so the
-- partition can ignore a configuration older than the one it applied (a re-send after a crash).
ALTER TABLE program_settings ADD COLUMN IF NOT EXISTS config_revision BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS rfm_config_outbox (
    id          BIGSERIAL PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (merchant_id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    payload     BYTEA NOT NULL,                -- the encoded ConfigChanged record, sent as is (same event id on a re-send)
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS rfm_config_outbox_unsent ON rfm_config_outbox (id) WHERE sent_at IS NULL;
