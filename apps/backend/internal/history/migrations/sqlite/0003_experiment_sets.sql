-- The experiment set (POST /experiment-sets) an experiment was submitted in;
-- NULL for one submitted on its own. The claim writes it, and it is kept once
-- set, so a set is found, and outlives its Jobs, for as long as its records.
ALTER TABLE experiments ADD COLUMN set_id TEXT;

-- A set's records newest first (GET /experiment-sets/{id}) and its counts by
-- state. Partial: the experiments outside any set add nothing to it.
CREATE INDEX experiments_set_created ON experiments (set_id, created_at DESC, id DESC) WHERE set_id IS NOT NULL;
