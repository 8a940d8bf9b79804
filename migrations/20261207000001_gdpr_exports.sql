-- GDPR data requests answered (issue 15): a request has a status, Shopify's id of it, and its export, kept sealed
-- until it expires. The export is AES-256-GCM under ENCRYPTION_KEYS (export_key_id names the key) when keys are
-- configured; without keys no personal data is held, and the export is stored as plain JSON.
ALTER TABLE gdpr_requests
    ADD COLUMN IF NOT EXISTS status          TEXT NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'completed', 'expired')),
    ADD COLUMN IF NOT EXISTS data_request_id BIGINT,
    ADD COLUMN IF NOT EXISTS export_key_id   TEXT,
    ADD COLUMN IF NOT EXISTS export          TEXT,
    ADD COLUMN IF NOT EXISTS expires_at      TIMESTAMPTZ;

UPDATE gdpr_requests SET status = 'completed' WHERE completed_at IS NOT NULL AND status = 'received';

CREATE INDEX IF NOT EXISTS gdpr_requests_data_request ON gdpr_requests (merchant_id, data_request_id);
