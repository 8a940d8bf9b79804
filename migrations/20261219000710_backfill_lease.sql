-- Who runs a shop's unfinished backfill (issue 19): an instance claims the row for `lease_until` (Postgres time) and
-- renews it while it works, so two instances never run the same shop's backfill at once, and the backfill of an
-- instance that died is taken over by another once its lease ran out.
ALTER TABLE backfill_runs
    ADD COLUMN IF NOT EXISTS lease_owner TEXT,
    ADD COLUMN IF NOT EXISTS lease_until TIMESTAMPTZ;
