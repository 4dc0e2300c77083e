-- Webhooks (package webhook): the URLs a POST asked to be notified at, and
-- the outbox of deliveries.
--
-- The notify URLs of an experiment, a JSON array of strings; NULL for none.
-- The claim writes them and, like the hash, they are kept once set.
ALTER TABLE experiments ADD COLUMN notify TEXT;

-- How far the deliverer has turned events (experiment_events) into
-- deliveries: the seq of the last event it read. One row, moved in the
-- transaction that inserts the deliveries of the events it passes, so each
-- event's deliveries are created once, whichever replica does it and
-- however often it restarts.
CREATE TABLE webhook_cursor (
	id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
) STRICT;

-- One row per event and target (a configured sink by name, or a notify URL):
-- pending until a 2xx answer (delivered) or until it is given up (failed).
-- next_at is when the next attempt is due; while an attempt is under way it
-- is pushed past that attempt's deadline, so a deliverer that dies mid-way
-- leaves the row due again. The rows go with their record (ON DELETE CASCADE).
CREATE TABLE webhook_deliveries (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	experiment TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
	seq        INTEGER NOT NULL,
	kind       TEXT    NOT NULL,
	target     TEXT    NOT NULL,
	state      TEXT    NOT NULL DEFAULT 'pending',
	attempts   INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	next_at    INTEGER NOT NULL,
	done_at    INTEGER,
	last_code  INTEGER,
	last_error TEXT    NOT NULL DEFAULT '',
	UNIQUE (seq, kind, target)
) STRICT;

-- The deliveries due, oldest first; one experiment's.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_experiment ON webhook_deliveries (experiment, id);
