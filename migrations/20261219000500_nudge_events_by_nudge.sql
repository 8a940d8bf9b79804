-- The results join every nudge of a merchant to its events by nudge id, and a shopper's report checks that the
-- nudge was shown; both look events up by (merchant_id, nudge_id), which no index covered.
CREATE INDEX IF NOT EXISTS nudge_events_nudge ON nudge_events (merchant_id, nudge_id);
