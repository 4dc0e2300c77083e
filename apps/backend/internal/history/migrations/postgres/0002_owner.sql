-- The namespace whose experiments the database holds. Records are keyed by
-- experiment ID alone, so two namespaces on one database would share IDs;
-- the backend refuses a database another namespace owns (Store.Own).
CREATE TABLE owner (
	id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	namespace TEXT    NOT NULL
);
