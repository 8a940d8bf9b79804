-- Core tables of LoyalNest RFM Stream (DESIGN.md §7).
-- Rows written by the stream processor carry the customer's state version, and their primary keys include it,
-- so a replay after a crash inserts nothing twice (INSERT ... ON CONFLICT DO NOTHING).

CREATE TABLE IF NOT EXISTS merchants (
    merchant_id   TEXT PRIMARY KEY,            -- shop domain, lower-case
    currency      TEXT NOT NULL DEFAULT 'USD',
    installed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    redacted_at   TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS program_settings (
    merchant_id    TEXT PRIMARY KEY REFERENCES merchants (merchant_id) ON DELETE CASCADE,
    rfm_thresholds JSONB NOT NULL,             -- functions::RfmConfig, validated before it is stored
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS customers (
    merchant_id      TEXT NOT NULL,
    customer_id      BIGINT NOT NULL,
    version          INTEGER NOT NULL,
    recency          SMALLINT NOT NULL,
    frequency        SMALLINT NOT NULL,
    monetary         SMALLINT NOT NULL,
    score            NUMERIC(2, 1) NOT NULL,
    segment          TEXT NOT NULL,
    lifecycle_stage  TEXT NOT NULL,
    orders           INTEGER NOT NULL DEFAULT 0,
    net_spend        NUMERIC(20, 3) NOT NULL DEFAULT 0,
    last_order_at    TIMESTAMPTZ,
    -- Personal data only sealed (AES-256-GCM, key id) plus a blind index of the email.
    pii_key_id       TEXT,
    pii_sealed       TEXT,
    email_index      TEXT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, customer_id)
);
CREATE INDEX IF NOT EXISTS customers_email_index ON customers (merchant_id, email_index);

CREATE TABLE IF NOT EXISTS rfm_segment_deltas (
    merchant_id      TEXT NOT NULL,
    customer_id      BIGINT NOT NULL,
    version          INTEGER NOT NULL,
    from_segment     TEXT NOT NULL,
    to_segment       TEXT NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
    trace_id         TEXT,
    PRIMARY KEY (merchant_id, customer_id, version)
) PARTITION BY HASH (merchant_id);

CREATE TABLE IF NOT EXISTS rfm_score_history (
    merchant_id      TEXT NOT NULL,
    customer_id      BIGINT NOT NULL,
    version          INTEGER NOT NULL,
    recency          SMALLINT NOT NULL,
    frequency        SMALLINT NOT NULL,
    monetary         SMALLINT NOT NULL,
    score            NUMERIC(2, 1) NOT NULL,
    segment          TEXT NOT NULL,
    lifecycle_stage  TEXT NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, customer_id, version)
) PARTITION BY HASH (merchant_id);

DO $$
BEGIN
    FOR i IN 0..7 LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS rfm_segment_deltas_p%s PARTITION OF rfm_segment_deltas
                        FOR VALUES WITH (MODULUS 8, REMAINDER %s)', i, i);
        EXECUTE format('CREATE TABLE IF NOT EXISTS rfm_score_history_p%s PARTITION OF rfm_score_history
                        FOR VALUES WITH (MODULUS 8, REMAINDER %s)', i, i);
    END LOOP;
END $$;

-- Batch analytics only; live counts come from the processor's memory.
CREATE MATERIALIZED VIEW IF NOT EXISTS rfm_segment_counts AS
    SELECT merchant_id, segment, count(*) AS customers
    FROM customers
    GROUP BY merchant_id, segment;

CREATE TABLE IF NOT EXISTS nudges (
    merchant_id  TEXT NOT NULL,
    nudge_id     TEXT NOT NULL,
    customer_id  BIGINT NOT NULL,
    version      INTEGER NOT NULL,             -- the customer version that fired it: one nudge per change
    segment      TEXT NOT NULL,
    variant      TEXT NOT NULL,
    locale       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, nudge_id),
    UNIQUE (merchant_id, customer_id, version)
);

CREATE TABLE IF NOT EXISTS nudge_events (
    merchant_id  TEXT NOT NULL,
    nudge_id     TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('view', 'click', 'dismiss', 'conversion')),
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_logs (
    id           BIGSERIAL PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    detail       JSONB NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS gdpr_requests (
    merchant_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('customers_redact', 'customers_data_request', 'shop_redact')),
    customer_id  BIGINT,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    PRIMARY KEY (merchant_id, event_id)
);
