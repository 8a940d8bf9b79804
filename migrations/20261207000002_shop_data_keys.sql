-- Crypto-shredding (issue 15): each shop's personal data is sealed under a data key of its own, stored here only
-- wrapped (AES-256-GCM) by a configured key, `kek_id`. shop/redact deletes the row, which leaves every value sealed
-- under the key unreadable, including copies still in Kafka's retention.
CREATE TABLE IF NOT EXISTS shop_data_keys (
    merchant_id  TEXT PRIMARY KEY,
    kek_id       TEXT NOT NULL,
    wrapped_key  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
