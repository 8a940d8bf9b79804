-- Compare-and-set of the write-back (issue 19, docs/DECISIONS.md): beside the newest version Shopify accepted for
-- a customer, the `compareDigest` Shopify returned for that version's `loyalnest.rfm_version` metafield. The next
-- write of the customer sends it, so it lands only if no other writer changed the version in between.
ALTER TABLE shopify_sync_versions ADD COLUMN IF NOT EXISTS compare_digest TEXT;
