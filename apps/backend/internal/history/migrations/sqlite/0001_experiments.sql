-- Records of experiments. Times are microseconds since the Unix epoch, UTC.
CREATE TABLE experiments (
	id          TEXT    NOT NULL PRIMARY KEY,
	hash        TEXT    NOT NULL DEFAULT '',
	namespace   TEXT    NOT NULL DEFAULT '',
	job         TEXT    NOT NULL DEFAULT '',
	job_uid     TEXT    NOT NULL DEFAULT '',
	submitter   TEXT    NOT NULL DEFAULT '',
	state       TEXT    NOT NULL,
	reason      TEXT    NOT NULL DEFAULT '',
	message     TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER,
	exit_code   INTEGER,
	has_logs    INTEGER NOT NULL DEFAULT 0,
	updated_at  INTEGER NOT NULL
) STRICT;

-- List's two orders: all records, and one state's, newest first.
CREATE INDEX experiments_created ON experiments (created_at DESC, id DESC);
CREATE INDEX experiments_state_created ON experiments (state, created_at DESC, id DESC);
-- Expire's scan of finished records.
CREATE INDEX experiments_finished ON experiments (finished_at) WHERE finished_at IS NOT NULL;

-- The runner's output, apart so that list rows stay small.
CREATE TABLE experiment_logs (
	id     TEXT NOT NULL PRIMARY KEY REFERENCES experiments (id) ON DELETE CASCADE,
	output BLOB NOT NULL
) STRICT;
