-- Nudge templates (issue 17): one row per merchant and nudge kind the merchant has saved; a kind without a row uses
-- the default texts (functions::nudge::defaults). `texts` is the validated JSON of functions::nudge::Template's
-- texts, by locale: {"en": {"title": "...", "body": "..."}, "es": {...}}. Rows go with the merchant (shop/redact).
CREATE TABLE IF NOT EXISTS nudge_templates (
    merchant_id  TEXT NOT NULL REFERENCES merchants (merchant_id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('at_risk', 'loyal', 'new', 'inactive', 'champions', 'tier_dropped',
                                               'churned')),
    enabled      BOOLEAN NOT NULL,
    texts        JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, kind)
);
