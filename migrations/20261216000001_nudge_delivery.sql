-- Shopper nudges (issue 17). A nudge row is written when a nudge fires: its transition type (which template), the
-- experiment and arm it was assigned to, and what became of it (shown, or held back by the holdout or the frequency
-- cap). Events carry their customer, so an erasure finds them without the nudge, and the widget's own event id,
-- so a retried event is stored once. Conversions are events too, with the order's revenue.
ALTER TABLE nudges
    ADD COLUMN IF NOT EXISTS kind          TEXT,
    ADD COLUMN IF NOT EXISTS experiment_id TEXT,
    ADD COLUMN IF NOT EXISTS status        TEXT NOT NULL DEFAULT 'shown'
        CHECK (status IN ('shown', 'holdout', 'capped'));

CREATE INDEX IF NOT EXISTS nudges_experiment ON nudges (merchant_id, experiment_id, variant);
CREATE INDEX IF NOT EXISTS nudges_customer ON nudges (merchant_id, customer_id, created_at);

ALTER TABLE nudge_events
    ADD COLUMN IF NOT EXISTS customer_id BIGINT,
    ADD COLUMN IF NOT EXISTS event_id    TEXT,
    ADD COLUMN IF NOT EXISTS revenue     NUMERIC(20, 3);

CREATE UNIQUE INDEX IF NOT EXISTS nudge_events_once ON nudge_events (merchant_id, event_id);
CREATE INDEX IF NOT EXISTS nudge_events_customer ON nudge_events (merchant_id, customer_id, occurred_at);
