-- Records of experiments. IDs compare byte-wise (COLLATE "C"), as in SQLite,
-- so both stores list in the same order whatever the database's locale.
CREATE TABLE experiments (
	id          text COLLATE "C" PRIMARY KEY,
	hash        text        NOT NULL DEFAULT '',
	namespace   text        NOT NULL DEFAULT '',
	job         text        NOT NULL DEFAULT '',
	job_uid     text        NOT NULL DEFAULT '',
	submitter   text        NOT NULL DEFAULT '',
	state       text        NOT NULL,
	reason      text        NOT NULL DEFAULT '',
	message     text        NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL,
	started_at  timestamptz,
	finished_at timestamptz,
	exit_code   integer,
	has_logs    boolean     NOT NULL DEFAULT false,
	updated_at  timestamptz NOT NULL
);

-- List's two orders: all records, and one state's, newest first.
CREATE INDEX experiments_created ON experiments (created_at DESC, id DESC);
CREATE INDEX experiments_state_created ON experiments (state, created_at DESC, id DESC);
-- Expire's scan of finished records.
CREATE INDEX experiments_finished ON experiments (finished_at) WHERE finished_at IS NOT NULL;

-- The runner's output, apart so that list rows stay small.
CREATE TABLE experiment_logs (
	id     text COLLATE "C" PRIMARY KEY REFERENCES experiments (id) ON DELETE CASCADE,
	output bytea NOT NULL
);
