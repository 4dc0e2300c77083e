-- Every change of an experiment's state, in the order it was stored: the
-- status streams (GET /events and the like) send these, and seq is the SSE id
-- a client reconnects with, from any replica.
CREATE TABLE experiment_events (
	seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id        text COLLATE "C" NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
	set_id    text COLLATE "C",
	submitter text        NOT NULL DEFAULT '',
	state     text        NOT NULL,
	reason    text        NOT NULL DEFAULT '',
	message   text        NOT NULL DEFAULT '',
	exit_code integer,
	at        timestamptz NOT NULL
);

-- One experiment's events, and one set's.
CREATE INDEX experiment_events_id ON experiment_events (id, seq);
CREATE INDEX experiment_events_set ON experiment_events (set_id, seq) WHERE set_id IS NOT NULL;

-- The events are written by the database, in the transaction of the write
-- that moves a record. Replicas write concurrently, and a sequence hands out
-- numbers in the order transactions ask, not in the order they commit: a
-- stream that had read seq 11 could later find 10 committed and miss it. So
-- each transaction that stores an event first takes one transaction-level
-- advisory lock, held until it commits: events commit in seq order. Every
-- store write is a single statement on a single record, so the lock, taken
-- after that record's row lock, cannot deadlock with another write.
CREATE FUNCTION experiments_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.state = OLD.state THEN
		RETURN NULL;
	END IF;
	-- 7452728881303615092 is "gminievt" in ASCII.
	PERFORM pg_advisory_xact_lock(7452728881303615092);
	INSERT INTO experiment_events (id, set_id, submitter, state, reason, message, exit_code, at)
	VALUES (NEW.id, NEW.set_id, NEW.submitter, NEW.state, NEW.reason, NEW.message, NEW.exit_code, NEW.updated_at);
	RETURN NULL;
END
$$;

CREATE TRIGGER experiments_event AFTER INSERT OR UPDATE OF state ON experiments
	FOR EACH ROW EXECUTE FUNCTION experiments_event();
