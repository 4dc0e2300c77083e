// Package history keeps a record of every experiment in a database, so an
// experiment's outcome, output and body hash outlive its Job: status, logs
// and retried POSTs still answer after the Job's TTL removed it.
//
// One Store interface has two implementations, chosen by Open's DSN:
// embedded SQLite (modernc.org/sqlite, pure Go) for one replica, PostgreSQL
// (pgx) for several. Both run the same SQL for every write, so the rules
// that keep a record monotonic (a final state never changes, times once set
// are kept) are stated once, in the database, where two writers cannot race
// past them. internal/history/historytest holds the conformance suite that
// both pass.
package history

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
)

// States a record takes, of the one vocabulary (package state). Final
// states never change once stored.
const (
	// StateSubmitted: claimed by a POST; its Job is not seen yet.
	StateSubmitted = state.Submitted
	StatePending   = state.Pending
	StateRunning   = state.Running
	StateSucceeded = state.Succeeded
	StateFailed    = state.Failed
	StateCancelled = state.Cancelled
	StateSuspended = state.Suspended
	StateQueued    = state.Queued
)

// states lists the states a record can be stored in, in the order messages
// name them; Deleting is a live Job's alone.
var states = []string{StateSubmitted, StateQueued, StatePending, StateRunning, StateSucceeded, StateFailed, StateCancelled, StateSuspended}

// finalStatesSQL is the SQL list of the final states, for the statements
// that refuse to change a final record.
const finalStatesSQL = "('" + StateSucceeded + "', '" + StateFailed + "', '" + StateCancelled + "')"

// Final reports whether state is final: Succeeded, Failed or Cancelled.
func Final(s string) bool { return state.Final(s) }

func knownState(s string) bool { return slices.Contains(states, s) }

// Limits.
const (
	// MaxLogBytes is how much of the runner's output a record keeps: the
	// last MiB, as GET /experiments/{id}/logs serves from a live Job.
	MaxLogBytes = 1 << 20
	// DefaultPageSize is List's page size when ListOptions.Limit is 0.
	DefaultPageSize = 100
	// MaxPageSize is the largest page List returns.
	MaxPageSize = 1000
)

// Record is what the history keeps of one experiment.
type Record struct {
	ID, Hash, Namespace, Job, JobUID, Submitter string
	State, Reason, Message                      string
	// CreatedAt is when the experiment was first submitted.
	CreatedAt             time.Time
	StartedAt, FinishedAt *time.Time
	// ExitCode is the runner's exit code, once known.
	ExitCode *int32
	// HasLogs says the runner's output is stored; Logs reads it.
	HasLogs   bool
	UpdatedAt time.Time
	// Set is the experiment set the experiment was submitted in, empty
	// for none. The claim writes it; like the hash it is kept once set.
	Set string
	// Notify are the URLs the submission asked to be notified at of the
	// experiment's state changes (package webhook); nil for none. The
	// claim writes them; like the hash they are kept once set.
	Notify []string
}

// ListOptions select a page of records.
type ListOptions struct {
	// Limit is the page size: 0 means DefaultPageSize, at most MaxPageSize.
	Limit int
	// Continue is the previous page's Page.Continue; empty for the first page.
	Continue string
	// State keeps only records in this state; empty keeps all.
	State string
	// Set keeps only the records of this experiment set; empty keeps all.
	Set string
}

// Page is one page of records, newest first.
type Page struct {
	Items []Record
	// Continue fetches the next page; empty on the last page.
	Continue string
}

// Store keeps the records. Every method is safe for concurrent use, also
// from several processes sharing one PostgreSQL database. Errors carry a
// failure.Kind: Unavailable when the database cannot be reached, times out,
// is read-only or full; NotFound for a missing record; Invalid for bad
// arguments.
type Store interface {
	// Claim records a submission. If id is new it stores rec (state
	// Submitted unless set) and returns it with created=true. If id exists
	// it returns the stored record unchanged and created=false (the caller
	// compares Hash).
	Claim(ctx context.Context, rec Record) (stored Record, created bool, err error)
	// Unclaim takes back a claim whose POST created nothing (a quota's
	// refusal, a conflict): it deletes the record of id only while it is
	// still Submitted, with no Job seen, and was claimed with hash, so a
	// fixed retry is not refused as a different body. It reports whether
	// a record was deleted.
	Unclaim(ctx context.Context, id, hash string) (bool, error)
	// Update stores progress for rec.ID (state, reason, message, job, job
	// UID, times, exit code). Idempotent and monotonic: a record in a final
	// state is never changed; times once set are kept; a record that does
	// not exist is created (the recorder may see a Job whose claim was lost,
	// e.g. made before history was turned on). Submitted never replaces
	// another state, and empty job, job UID and namespace keep the stored
	// ones.
	Update(ctx context.Context, rec Record) error
	// Finish stores a final state together with the runner's output,
	// atomically; logs are truncated to the last MaxLogBytes. A nil logs
	// stores no output (HasLogs false); an empty, non-nil one stores an
	// empty output. If the record is already final it changes nothing and
	// returns the stored record.
	Finish(ctx context.Context, rec Record, logs []byte) (Record, error)
	// Get returns the record of id; failure.NotFound when absent.
	Get(ctx context.Context, id string) (Record, error)
	// Logs returns the stored output of id; failure.NotFound when the
	// record or its output is absent.
	Logs(ctx context.Context, id string) ([]byte, error)
	// List returns a page of records, newest first (CreatedAt, then ID,
	// descending), without their output. Pages are cut by key, not offset:
	// records added between two calls never shift the next page.
	List(ctx context.Context, opts ListOptions) (Page, error)
	// CountSet counts the records of experiment set set by state; an
	// unknown set has none.
	CountSet(ctx context.Context, set string) (map[string]int, error)
	// Events returns stored state changes, oldest first (see Event).
	Events(ctx context.Context, q EventQuery) ([]Event, error)
	// LastEvent returns the newest event's Seq, 0 when there is none.
	LastEvent(ctx context.Context) (int64, error)
	// OutboxCursor returns the seq of the last event the webhook
	// deliverer turned into deliveries; the first call starts it at the
	// newest event.
	OutboxCursor(ctx context.Context) (int64, error)
	// OutboxEvents returns up to limit events after seq after, oldest
	// first, each with its experiment's notify URLs.
	OutboxEvents(ctx context.Context, after int64, limit int) ([]OutboxEvent, error)
	// AddDeliveries moves the cursor from from to to and creates ds (due
	// at once, created at at), in one transaction. If the cursor is no
	// longer at from (another deliverer moved it) it creates nothing and
	// returns false. A delivery that exists already, or whose record is
	// gone, is left out.
	AddDeliveries(ctx context.Context, from, to int64, ds []NewDelivery, at time.Time) (bool, error)
	// LeaseDeliveries returns up to limit pending deliveries due at now,
	// with their events, and makes them due again only at until: the
	// caller attempts each and records it before then.
	LeaseDeliveries(ctx context.Context, now, until time.Time, limit int) ([]Delivery, error)
	// RecordAttempt stores the outcome of an attempt of a pending
	// delivery; a delivery no longer pending is left as it is.
	RecordAttempt(ctx context.Context, a Attempt) error
	// Deliveries returns the deliveries of experiment id, oldest first
	// (at most MaxDeliveriesShown), without their events.
	Deliveries(ctx context.Context, id string) ([]Delivery, error)
	// PendingDeliveries counts the deliveries pending.
	PendingDeliveries(ctx context.Context) (int64, error)
	// Expire deletes, with their output, events and deliveries, the records in a final state that
	// finished before cutoff and the Submitted ones (a claim whose Job was
	// never created) created before cutoff. It returns how many.
	Expire(ctx context.Context, cutoff time.Time) (int64, error)
	// Own makes the database namespace's, or fails as Invalid if it is
	// another namespace's: records are keyed by experiment ID alone, so
	// two namespaces sharing one database would read, list and answer
	// each other's experiments. A database made before owners were kept
	// belongs to the namespace of its records.
	Own(ctx context.Context, namespace string) error
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database; the Store is unusable afterwards.
	Close() error
}

// DSN prefixes Open accepts.
const (
	sqlitePrefix = "sqlite:"
)

// Open connects to the database named by dsn, applies the schema
// migrations it lacks and returns the Store:
//
//	sqlite:/var/lib/gmini/history.db       embedded SQLite; the directory is created
//	postgres://user:pass@host:5432/db       PostgreSQL (pgx DSN; postgresql:// too)
func Open(ctx context.Context, dsn string, log *slog.Logger) (Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case strings.HasPrefix(dsn, sqlitePrefix):
		return openSQLite(ctx, strings.TrimPrefix(dsn, sqlitePrefix), log)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn, log)
	}
	return nil, failure.New(failure.Invalid,
		"history: unsupported database %q: use sqlite:/path/to/history.db or postgres://user:password@host:5432/database", redact(dsn))
}

// redact keeps a DSN's scheme only, since an unknown form may still carry
// a password.
func redact(dsn string) string {
	if scheme, _, ok := strings.Cut(dsn, ":"); ok && len(scheme) < 20 {
		return scheme + ":…"
	}
	if len(dsn) > 12 {
		return dsn[:12] + "…"
	}
	return dsn
}

// prepare validates rec for a write and fills what the store decides: the
// times are UTC with microsecond precision (what both databases keep, so a
// stored record reads back equal), CreatedAt and UpdatedAt default to now,
// and a final state always has a FinishedAt (Expire goes by it).
func prepare(rec Record, now time.Time) (Record, error) {
	if rec.ID == "" {
		return Record{}, failure.New(failure.Invalid, "history: record without an ID")
	}
	if !utf8.ValidString(rec.ID) || strings.ContainsRune(rec.ID, 0) {
		return Record{}, failure.New(failure.Invalid, "history: record ID %q is not valid UTF-8 text", rec.ID)
	}
	if !knownState(rec.State) {
		return Record{}, failure.New(failure.Invalid, "history: record %q: state %q is not one of %s", rec.ID, rec.State, strings.Join(states, ", "))
	}
	// Reason and message come from Kubernetes objects; a stray byte in
	// them must not make the record unstorable (PostgreSQL refuses
	// invalid UTF-8 and NUL in text).
	for _, f := range []*string{&rec.Hash, &rec.Namespace, &rec.Job, &rec.JobUID, &rec.Submitter, &rec.Reason, &rec.Message, &rec.Set} {
		*f = cleanText(*f)
	}
	if len(rec.Notify) == 0 {
		rec.Notify = nil
	} else {
		rec.Notify = slices.Clone(rec.Notify)
		for i := range rec.Notify {
			rec.Notify[i] = cleanText(rec.Notify[i])
		}
	}
	now = dbTime(now)
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now
	}
	rec.CreatedAt = dbTime(rec.CreatedAt)
	rec.UpdatedAt = now
	rec.StartedAt = dbTimePtr(rec.StartedAt)
	rec.FinishedAt = dbTimePtr(rec.FinishedAt)
	if Final(rec.State) && rec.FinishedAt == nil {
		rec.FinishedAt = &now
	}
	return rec, nil
}

func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// dbTime is t as the databases keep it.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func dbTimePtr(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	v := dbTime(*t)
	return &v
}

// tail returns the last MaxLogBytes of logs, keeping nil apart from empty.
func tail(logs []byte) []byte {
	if len(logs) > MaxLogBytes {
		return logs[len(logs)-MaxLogBytes:]
	}
	return logs
}

// pageSize checks a requested limit.
func pageSize(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit < 0 || limit > MaxPageSize:
		return 0, failure.New(failure.Invalid, "limit %d is out of range: give 1 to %d, or none for %d", limit, MaxPageSize, DefaultPageSize)
	}
	return limit, nil
}

// checkStateFilter checks ListOptions.State against the one vocabulary:
// a state no record takes (Deleting) selects nothing, it is no error.
func checkStateFilter(s string) error {
	if s == "" || state.Known(s) {
		return nil
	}
	return failure.New(failure.Invalid, "state %s is not one of %s", failure.Quote(s), strings.Join(state.All(), ", "))
}

// errf is an error of kind about one operation on one record.
func errf(kind failure.Kind, err error, op, id string) error {
	if id == "" {
		return failure.Wrap(kind, err, "history: %s", op)
	}
	return failure.Wrap(kind, err, "history: %s %q", op, id)
}

// ownSQL makes the database namespace $1's unless it has an owner; the
// namespace of existing records (a database from before owners) comes first.
// (SQLite needs a WHERE to parse an INSERT ... SELECT with ON CONFLICT.)
const ownSQL = `INSERT INTO owner (id, namespace)
SELECT 1, COALESCE((SELECT namespace FROM experiments WHERE namespace <> '' LIMIT 1), $1) WHERE true
ON CONFLICT (id) DO NOTHING`

const ownerSQL = "SELECT namespace FROM owner WHERE id = 1"

// checkOwner is Own's verdict on the stored owner.
func checkOwner(owner, namespace string) error {
	if owner == namespace {
		return nil
	}
	return failure.New(failure.Invalid,
		"history: the database holds the experiments of namespace %q, not %q; give each namespace a database of its own (in PostgreSQL another database, or another schema through search_path)", owner, namespace)
}

func notFound(id string) error {
	return failure.New(failure.NotFound, "history: no record of experiment %q", id)
}

func noLogs(id string) error {
	return failure.New(failure.NotFound, "history: no stored output for experiment %q", id)
}
