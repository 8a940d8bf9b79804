-- Shopify write-back (issue 19). `shop_access` holds each shop's offline Admin API token, obtained by token exchange
-- on install and sealed (AES-256-GCM under a configured key, bound to the shop and to its purpose); app/uninstalled
-- and shop/redact delete the row. `shopify_sync_versions` is the newest customer state version Shopify accepted
-- for each customer, so a replay after a crash, or a late record, never writes an older state over a newer one.
CREATE TABLE IF NOT EXISTS shop_access (
    merchant_id   TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    sealed_token  TEXT NOT NULL,
    scope         TEXT NOT NULL DEFAULT '',
    installed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shopify_sync_versions (
    merchant_id  TEXT NOT NULL,
    customer_id  BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    written_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, customer_id)
);
