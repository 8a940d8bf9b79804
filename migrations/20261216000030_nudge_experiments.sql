-- A/B experiments on nudges (issue 17). One experiment runs per merchant and nudge kind at a time; saving another
-- for the kind ends the running one, which stays for its results. The definition is the API's JSON document. The
-- revision rises with every save (a sequence, not a clock), so an instance refreshing its plans can tell a newer
-- definition from the one it holds without comparing timestamps of two machines.
CREATE SEQUENCE IF NOT EXISTS nudge_experiment_revision;

CREATE TABLE IF NOT EXISTS nudge_experiments (
    merchant_id   TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    definition    JSONB NOT NULL,
    revision      BIGINT NOT NULL DEFAULT nextval('nudge_experiment_revision'),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at      TIMESTAMPTZ,
    PRIMARY KEY (merchant_id, experiment_id)
);

CREATE UNIQUE INDEX IF NOT EXISTS nudge_experiments_running
    ON nudge_experiments (merchant_id, kind) WHERE ended_at IS NULL;
