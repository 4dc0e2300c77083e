package history

import (
	"fmt"
	"strings"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// Event is one stored change of a record's state. The database writes it
// in the transaction of the write that changed the state (migration
// 0004_events), so a record never moves without its event, and events are
// deleted with their record (Expire, Unclaim).
type Event struct {
	// Seq increases with every event stored, in commit order: a reader
	// that has seen Seq n never later finds a smaller one.
	Seq                                        int64
	ID, Set, Submitter, State, Reason, Message string
	ExitCode                                   *int32
	// At is when the change was stored (the record's UpdatedAt).
	At time.Time
}

// EventQuery selects events, oldest first.
type EventQuery struct {
	// After keeps the events with Seq > After.
	After int64
	// ID, Set, Submitter and State keep only the events of that
	// experiment, set, submitter or state; empty keeps all.
	ID, Set, Submitter, State string
	// Limit bounds the answer: 0 means DefaultEventBatch, at most
	// MaxEventBatch.
	Limit int
}

// Limits of Events.
const (
	DefaultEventBatch = 500
	MaxEventBatch     = 5000
)

const eventColumns = "seq, id, set_id, submitter, state, reason, message, exit_code, at"

// eventsSQL builds the query of q; each filter matches an index (one
// experiment's, one set's, or the primary key's order for the others).
func eventsSQL(q EventQuery) (string, []any, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultEventBatch
	case limit < 0 || limit > MaxEventBatch:
		return "", nil, failure.New(failure.Invalid, "history: event batch %d is out of range 1 to %d", limit, MaxEventBatch)
	}
	if err := checkStateFilter(q.State); err != nil {
		return "", nil, err
	}
	where := []string{"seq > $1"}
	args := []any{q.After}
	for _, f := range []struct{ col, v string }{{"id", q.ID}, {"set_id", q.Set}, {"submitter", q.Submitter}, {"state", q.State}} {
		if f.v != "" {
			args = append(args, f.v)
			where = append(where, fmt.Sprintf("%s = $%d", f.col, len(args)))
		}
	}
	args = append(args, limit)
	return fmt.Sprintf("SELECT %s FROM experiment_events WHERE %s ORDER BY seq LIMIT $%d",
		eventColumns, strings.Join(where, " AND "), len(args)), args, nil
}

// lastEventSQL is the newest event's seq, 0 when there is none.
const lastEventSQL = "SELECT COALESCE(MAX(seq), 0) FROM experiment_events"

// readEvents reads eventsSQL's rows.
func readEvents(rs rows) ([]Event, error) {
	var evs []Event
	for rs.Next() {
		var e Event
		if err := rs.Scan(&e.Seq, &e.ID, nullStringScanner{&e.Set}, &e.Submitter, &e.State,
			&e.Reason, &e.Message, &e.ExitCode, timeScanner{&e.At}); err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	return evs, rs.Err()
}
