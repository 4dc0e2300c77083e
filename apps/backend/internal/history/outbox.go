package history

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// The webhook outbox (package webhook): the deliveries of events to HTTP
// receivers, kept in the history database so that they survive restarts
// and leader changes. The deliverer reads the events after a cursor and
// turns each into deliveries, one per target, moving the cursor in the
// same transaction (AddDeliveries): every event's deliveries are created
// exactly once. Deliveries are then leased, attempted and recorded until
// delivered or given up; they go with their record (Expire, Unclaim).

// States of a delivery.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Kinds of delivery target.
const (
	// DeliverySink: a sink of the deployment's configuration; the target
	// is its name.
	DeliverySink = "sink"
	// DeliveryNotify: a URL the submission named in "notify"; the target
	// is the URL.
	DeliveryNotify = "notify"
)

// OutboxEvent is an event with what the deliverer needs beside it: the
// notify URLs of its experiment.
type OutboxEvent struct {
	Event
	Notify []string
}

// NewDelivery is a delivery to create: the event Seq of experiment
// Experiment to the target Kind and Target.
type NewDelivery struct {
	Experiment string
	Seq        int64
	Kind       string
	Target     string
}

// Delivery is one event's delivery to one target.
type Delivery struct {
	ID         int64
	Experiment string
	// Seq is the event's.
	Seq          int64
	Kind, Target string
	State        string
	// Attempts counts the attempts made.
	Attempts int
	// CreatedAt is when the delivery was created; NextAt when the next
	// attempt is due (while one is under way, past its deadline); DoneAt
	// when it was delivered or given up.
	CreatedAt, NextAt time.Time
	DoneAt            *time.Time
	// LastCode is the last attempt's HTTP status, 0 for none (the
	// attempt got no answer); LastError says what went wrong.
	LastCode  int
	LastError string
	// Event is the event to deliver: LeaseDeliveries fills it, and
	// Deliveries its Seq, ID and State.
	Event Event
}

// Attempt is the outcome of one attempt of a delivery.
type Attempt struct {
	ID int64
	// State is DeliveryDelivered, DeliveryFailed (given up), or
	// DeliveryPending: retry at NextAt.
	State  string
	NextAt time.Time
	// Code is the HTTP status, 0 for none; Error what went wrong, "" for
	// nothing.
	Code  int
	Error string
	// At is when the attempt ended.
	At time.Time
}

// Limits of the outbox.
const (
	// MaxDeliveryLease bounds LeaseDeliveries' batch.
	MaxDeliveryLease = 1000
	// MaxDeliveriesShown bounds Deliveries.
	MaxDeliveriesShown = 100
	// maxDeliveryError bounds a stored error message.
	maxDeliveryError = 512
)

// initCursorSQL starts the cursor at the newest event, when it has none: a
// deliverer turned on for the first time delivers what happens from then
// on, not the history. (SQLite needs the WHERE to parse an INSERT ...
// SELECT with ON CONFLICT.)
const initCursorSQL = `INSERT INTO webhook_cursor (id, seq)
SELECT 1, COALESCE(MAX(seq), 0) FROM experiment_events WHERE true
ON CONFLICT (id) DO NOTHING`

const cursorSQL = "SELECT seq FROM webhook_cursor WHERE id = 1"

// moveCursorSQL moves the cursor from $1 to $2, only if no one moved it
// since it was read: of two deliverers (a leader and its successor during
// a hand-over), one creates the deliveries of an event, never both.
const moveCursorSQL = "UPDATE webhook_cursor SET seq = $2 WHERE id = 1 AND seq = $1"

// outboxEventsSQL reads the events after a seq with their experiment's
// notify URLs.
const outboxEventsSQL = `SELECT e.seq, e.id, e.set_id, e.submitter, e.state, e.reason, e.message, e.exit_code, e.at, x.notify
FROM experiment_events e LEFT JOIN experiments x ON x.id = e.id
WHERE e.seq > $1 ORDER BY e.seq LIMIT $2`

// addDeliverySQL creates a delivery due at once, unless it exists or its
// record is gone (expired or unclaimed since its event was read).
const addDeliverySQL = `INSERT INTO webhook_deliveries (experiment, seq, kind, target, created_at, next_at)
SELECT $1, $2, $3, $4, $5, $5 WHERE EXISTS (SELECT 1 FROM experiments WHERE id = $1)
ON CONFLICT (seq, kind, target) DO NOTHING`

const deliveryColumns = "id, experiment, seq, kind, target, state, attempts, created_at, next_at, done_at, last_code, last_error"

// leaseSQL takes up to $3 deliveries due at $1 and pushes their next
// attempt to $2, the deadline of the attempt about to be made: a deliverer
// that dies before it records the attempt leaves them due again then. The
// outer condition is checked again against a row another writer changed
// meanwhile (PostgreSQL's READ COMMITTED re-evaluates it on the new row),
// so two deliverers never lease the same delivery at once.
const leaseSQL = `UPDATE webhook_deliveries SET next_at = $2
WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $3)
	AND state = 'pending' AND next_at <= $1
RETURNING ` + deliveryColumns

// attemptSQL records an attempt of a pending delivery.
const attemptSQL = `UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, next_at = $3,
	last_code = $4, last_error = $5, done_at = $6
WHERE id = $1 AND state = 'pending'`

// deliveriesSQL reads one experiment's deliveries with the state of their
// events.
var deliveriesSQL = fmt.Sprintf(`SELECT d.%s, COALESCE(e.state, '')
FROM webhook_deliveries d LEFT JOIN experiment_events e ON e.seq = d.seq
WHERE d.experiment = $1 ORDER BY d.id LIMIT %d`, strings.ReplaceAll(deliveryColumns, ", ", ", d."), MaxDeliveriesShown)

// pendingSQL counts the pending deliveries, through the index of due ones.
const pendingSQL = "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'"

// eventsBySeqSQL reads the events of n seqs.
func eventsBySeqSQL(n int) string {
	ph := make([]string, n)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	return "SELECT " + eventColumns + " FROM experiment_events WHERE seq IN (" + strings.Join(ph, ", ") + ")"
}

func checkBatch(limit, max int, what string) error {
	if limit <= 0 || limit > max {
		return failure.New(failure.Invalid, "history: %s batch %d is out of range 1 to %d", what, limit, max)
	}
	return nil
}

func checkNewDeliveries(from, to int64, ds []NewDelivery) error {
	if to < from {
		return failure.New(failure.Invalid, "history: the webhook cursor cannot move back from %d to %d", from, to)
	}
	for _, d := range ds {
		if d.Experiment == "" || d.Target == "" || (d.Kind != DeliverySink && d.Kind != DeliveryNotify) || d.Seq <= from || d.Seq > to {
			return failure.New(failure.Invalid, "history: delivery %+v: want an experiment, a kind (sink or notify), a target and an event between %d and %d", d, from, to)
		}
	}
	return nil
}

func checkAttempt(a Attempt) error {
	switch a.State {
	case DeliveryPending, DeliveryDelivered, DeliveryFailed:
		return nil
	}
	return failure.New(failure.Invalid, "history: attempt of delivery %d: state %q is not pending, delivered or failed", a.ID, a.State)
}

// attemptArgs binds attemptSQL's placeholders.
func (d dialect) attemptArgs(a Attempt) []any {
	var code, done any
	if a.Code != 0 {
		code = int64(a.Code)
	}
	if a.State != DeliveryPending {
		done = d.timeArg(dbTime(a.At))
	}
	msg := cleanText(a.Error)
	if len(msg) > maxDeliveryError {
		msg = strings.ToValidUTF8(msg[:maxDeliveryError], "") + "…"
	}
	return []any{a.ID, a.State, d.timeArg(dbTime(a.NextAt)), code, msg, done}
}

// readOutboxEvents reads outboxEventsSQL's rows.
func readOutboxEvents(rs rows) ([]OutboxEvent, error) {
	var evs []OutboxEvent
	for rs.Next() {
		var e OutboxEvent
		if err := rs.Scan(&e.Seq, &e.ID, nullStringScanner{&e.Set}, &e.Submitter, &e.State,
			&e.Reason, &e.Message, &e.ExitCode, timeScanner{&e.At}, notifyScanner{&e.Notify}); err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	return evs, rs.Err()
}

// readDeliveries reads rows of deliveryColumns, followed by the event's
// state with withState.
func readDeliveries(rs rows, withState bool) ([]Delivery, error) {
	var ds []Delivery
	for rs.Next() {
		var d Delivery
		var code *int32
		dest := []any{&d.ID, &d.Experiment, &d.Seq, &d.Kind, &d.Target, &d.State, &d.Attempts,
			timeScanner{&d.CreatedAt}, timeScanner{&d.NextAt}, nullTimeScanner{&d.DoneAt}, &code, &d.LastError}
		if withState {
			dest = append(dest, &d.Event.State)
		}
		if err := rs.Scan(dest...); err != nil {
			return nil, err
		}
		d.Event.Seq, d.Event.ID = d.Seq, d.Experiment
		if code != nil {
			d.LastCode = int(*code)
		}
		ds = append(ds, d)
	}
	return ds, rs.Err()
}

// withEvents fills the leased deliveries' events, and orders them by
// event, so the first attempts go out in the order of the changes.
func withEvents(ds []Delivery, evs []Event) []Delivery {
	bySeq := make(map[int64]Event, len(evs))
	for _, e := range evs {
		bySeq[e.Seq] = e
	}
	out := ds[:0]
	for _, d := range ds {
		e, ok := bySeq[d.Seq]
		if !ok {
			continue // its record went meanwhile, and the delivery with it
		}
		d.Event = e
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Delivery) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func seqArgs(ds []Delivery) []any {
	seen := map[int64]bool{}
	var args []any
	for _, d := range ds {
		if !seen[d.Seq] {
			seen[d.Seq] = true
			args = append(args, d.Seq)
		}
	}
	return args
}
