-- Webhooks (package webhook): the URLs a POST asked to be notified at, and
-- the outbox of deliveries.
--
-- The notify URLs of an experiment, a JSON array of strings; NULL for none.
-- The claim writes them and, like the hash, they are kept once set. A
-- nullable column without a default: adding it rewrites no row.
ALTER TABLE experiments ADD COLUMN notify text;

-- How far the deliverer has turned events (experiment_events) into
-- deliveries: the seq of the last event it read. One row, moved in the
-- transaction that inserts the deliveries of the events it passes, so each
-- event's deliveries are created once, whichever replica does it and
-- however often it restarts.
CREATE TABLE webhook_cursor (
	id  integer PRIMARY KEY CHECK (id = 1),
	seq bigint  NOT NULL
);

-- One row per event and target (a configured sink by name, or a notify URL):
-- pending until a 2xx answer (delivered) or until it is given up (failed).
-- next_at is when the next attempt is due; while an attempt is under way it
-- is pushed past that attempt's deadline, so a deliverer that dies mid-way
-- leaves the row due again. The rows go with their record (ON DELETE CASCADE).
CREATE TABLE webhook_deliveries (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	experiment text COLLATE "C" NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
	seq        bigint      NOT NULL,
	kind       text        NOT NULL,
	target     text        NOT NULL,
	state      text        NOT NULL DEFAULT 'pending',
	attempts   integer     NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL,
	next_at    timestamptz NOT NULL,
	done_at    timestamptz,
	last_code  integer,
	last_error text        NOT NULL DEFAULT '',
	UNIQUE (seq, kind, target)
);

-- The deliveries due, oldest first; one experiment's.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_experiment ON webhook_deliveries (experiment, id);
