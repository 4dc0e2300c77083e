-- Every change of an experiment's state, in the order it was stored: the
-- status streams (GET /events and the like) send these, and seq is the SSE id
-- a client reconnects with. AUTOINCREMENT: a seq is never used twice, not
-- even after the newest events were deleted. SQLite has one writer, so seqs
-- are committed in order and a reader that has seen seq n never later finds
-- a smaller one.
CREATE TABLE experiment_events (
	seq       INTEGER PRIMARY KEY AUTOINCREMENT,
	id        TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
	set_id    TEXT,
	submitter TEXT    NOT NULL DEFAULT '',
	state     TEXT    NOT NULL,
	reason    TEXT    NOT NULL DEFAULT '',
	message   TEXT    NOT NULL DEFAULT '',
	exit_code INTEGER,
	at        INTEGER NOT NULL
) STRICT;

-- One experiment's events, and one set's.
CREATE INDEX experiment_events_id ON experiment_events (id, seq);
CREATE INDEX experiment_events_set ON experiment_events (set_id, seq) WHERE set_id IS NOT NULL;

-- The events are written by the database, not by each statement that changes
-- a record: whichever write moves a record (a claim, the recorder's upsert, a
-- finish), its event is stored in the same transaction, or not at all. An
-- upsert that updates fires the UPDATE trigger only; one that inserts, the
-- INSERT trigger only.
CREATE TRIGGER experiments_event_insert AFTER INSERT ON experiments
BEGIN
	INSERT INTO experiment_events (id, set_id, submitter, state, reason, message, exit_code, at)
	VALUES (NEW.id, NEW.set_id, NEW.submitter, NEW.state, NEW.reason, NEW.message, NEW.exit_code, NEW.updated_at);
END;

CREATE TRIGGER experiments_event_update AFTER UPDATE OF state ON experiments
WHEN NEW.state <> OLD.state
BEGIN
	INSERT INTO experiment_events (id, set_id, submitter, state, reason, message, exit_code, at)
	VALUES (NEW.id, NEW.set_id, NEW.submitter, NEW.state, NEW.reason, NEW.message, NEW.exit_code, NEW.updated_at);
END;
