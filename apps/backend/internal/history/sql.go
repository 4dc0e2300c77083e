package history

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/state"
)

// The statements both databases run. Placeholders are $N: PostgreSQL's own,
// and SQLite reads $N as the N-th argument too. Times are bound through a
// dialect's timeArg: timestamptz in PostgreSQL, microseconds since the Unix
// epoch in SQLite (which has no time type).

// columns of experiments, in the order of recordArgs and scanRecord.
const columns = "id, hash, namespace, job, job_uid, submitter, state, reason, message, created_at, started_at, finished_at, exit_code, has_logs, updated_at, set_id, notify"

const values = "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"

// claimSQL inserts a new record and returns it; an existing ID returns no
// row and is read with getSQL.
const claimSQL = "INSERT INTO experiments (" + columns + ") VALUES " + values +
	" ON CONFLICT (id) DO NOTHING RETURNING " + columns

const getSQL = "SELECT " + columns + " FROM experiments WHERE id = $1"

// unclaimSQL deletes a claim that nothing came of: still Submitted, no Job
// UID recorded, the body it was claimed with.
const unclaimSQL = "DELETE FROM experiments WHERE id = $1 AND hash = $2 AND state = '" + StateSubmitted + "' AND job_uid = ''"

// keepState says an upsert keeps the stored state (and its reason and
// message): Submitted only ever starts a record, so a late "claimed" event
// must not take a record back from Pending or Running; and a Running record
// goes back to Pending only for another attempt (state.ReasonRetrying). A
// Job whose runner has just ended has for a moment no ready pod and no
// condition yet: read from its status alone it looks Pending again.
const keepState = `((excluded.state = '` + StateSubmitted + `' AND e.state <> '` + StateSubmitted + `')
		OR (excluded.state = '` + StatePending + `' AND e.state = '` + StateRunning + `' AND excluded.reason <> '` + state.ReasonRetrying + `'))`

// upsertSQL stores progress, or with finish a final state and whether
// output is stored. The WHERE clause is the monotonicity rule: a final
// record is never changed, so of two writers racing on one record the final
// state wins whatever the order. It returns the row only if it was written.
func upsertSQL(finish bool) string {
	hasLogs := "e.has_logs"
	if finish {
		hasLogs = "excluded.has_logs"
	}
	// keepState: Submitted only ever starts a record, and Running goes
	// back to Pending only for a retry. Empty job names, UIDs
	// and namespaces mean "not known to this writer", not "none". The
	// hash, the submitter and the set belong to the claim and are kept
	// once set, and so are the notify URLs.
	return "INSERT INTO experiments AS e (" + columns + ") VALUES " + values + `
ON CONFLICT (id) DO UPDATE SET
	hash = CASE WHEN e.hash = '' THEN excluded.hash ELSE e.hash END,
	namespace = CASE WHEN excluded.namespace = '' THEN e.namespace ELSE excluded.namespace END,
	job = CASE WHEN excluded.job = '' THEN e.job ELSE excluded.job END,
	job_uid = CASE WHEN excluded.job_uid = '' THEN e.job_uid ELSE excluded.job_uid END,
	submitter = CASE WHEN e.submitter = '' THEN excluded.submitter ELSE e.submitter END,
	set_id = COALESCE(e.set_id, excluded.set_id),
	notify = COALESCE(e.notify, excluded.notify),
	state = CASE WHEN ` + keepState + ` THEN e.state ELSE excluded.state END,
	reason = CASE WHEN ` + keepState + ` THEN e.reason ELSE excluded.reason END,
	message = CASE WHEN ` + keepState + ` THEN e.message ELSE excluded.message END,
	started_at = COALESCE(e.started_at, excluded.started_at),
	finished_at = COALESCE(e.finished_at, excluded.finished_at),
	exit_code = COALESCE(excluded.exit_code, e.exit_code),
	has_logs = ` + hasLogs + `,
	updated_at = excluded.updated_at
WHERE e.state NOT IN ` + finalStatesSQL + `
RETURNING ` + columns
}

// logsSQL reads the output and tells a missing record (no row) from a
// record without output (has_logs false).
const logsSQL = "SELECT e.has_logs, l.output FROM experiments e LEFT JOIN experiment_logs l ON l.id = e.id WHERE e.id = $1"

const putLogsSQL = "INSERT INTO experiment_logs (id, output) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET output = excluded.output"

// expireBatch bounds one DELETE, so expiring a month of records never holds
// SQLite's single writer (and every POST's Claim behind it) for long.
const expireBatch = 1000

// expireSQL deletes up to expireBatch expired records; their output goes
// with them (ON DELETE CASCADE).
var expireSQL = fmt.Sprintf(`DELETE FROM experiments WHERE id IN (
	SELECT id FROM experiments
	WHERE (state IN %s AND finished_at < $1) OR (state = '%s' AND created_at < $1)
	LIMIT %d)`, finalStatesSQL, StateSubmitted, expireBatch)

// listSQL selects a page: limit+1 rows, the extra one saying whether
// another page follows. Each variant matches one index, (created_at DESC,
// id DESC), (state, created_at DESC, id DESC) or, for a set, (set_id,
// created_at DESC, id DESC), so a page costs the same with 20 or
// 20,000,000 records (a set's page with a state filter reads the set's
// records of other states too: at most the set's size).
func listSQL(byState, bySet, after bool) string {
	q := "SELECT " + columns + " FROM experiments"
	n := 0
	arg := func() string { n++; return fmt.Sprintf("$%d", n) }
	var where []string
	if bySet {
		where = append(where, "set_id = "+arg())
	}
	if byState {
		where = append(where, "state = "+arg())
	}
	if after {
		where = append(where, fmt.Sprintf("(created_at, id) < (%s, %s)", arg(), arg()))
	}
	for i, w := range where {
		if i == 0 {
			q += " WHERE " + w
		} else {
			q += " AND " + w
		}
	}
	return q + " ORDER BY created_at DESC, id DESC LIMIT " + arg()
}

// countSetSQL counts a set's records by state, through the set's index.
const countSetSQL = "SELECT state, COUNT(*) FROM experiments WHERE set_id = $1 GROUP BY state"

// readCounts reads countSetSQL's rows.
func readCounts(rs rows) (map[string]int, error) {
	counts := map[string]int{}
	for rs.Next() {
		var st string
		var n int64
		if err := rs.Scan(&st, &n); err != nil {
			return nil, err
		}
		counts[st] = int(n)
	}
	return counts, rs.Err()
}

// dialect is what differs between the databases in binding values.
type dialect struct {
	// timeArg binds a time.
	timeArg func(time.Time) any
}

func (d dialect) timePtrArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return d.timeArg(*t)
}

// recordArgs binds rec to values's placeholders.
func (d dialect) recordArgs(rec Record) []any {
	var exit any
	if rec.ExitCode != nil {
		exit = int64(*rec.ExitCode)
	}
	// No set is NULL, not '': the set's index leaves NULLs out.
	var set any
	if rec.Set != "" {
		set = rec.Set
	}
	return []any{rec.ID, rec.Hash, rec.Namespace, rec.Job, rec.JobUID, rec.Submitter,
		rec.State, rec.Reason, rec.Message,
		d.timeArg(rec.CreatedAt), d.timePtrArg(rec.StartedAt), d.timePtrArg(rec.FinishedAt),
		exit, rec.HasLogs, d.timeArg(rec.UpdatedAt), set, notifyArg(rec.Notify)}
}

// row is a result row of database/sql or pgx.
type row interface{ Scan(dest ...any) error }

// scanRecord reads the columns of a row.
func scanRecord(r row) (Record, error) {
	var rec Record
	err := r.Scan(&rec.ID, &rec.Hash, &rec.Namespace, &rec.Job, &rec.JobUID, &rec.Submitter,
		&rec.State, &rec.Reason, &rec.Message,
		timeScanner{&rec.CreatedAt}, nullTimeScanner{&rec.StartedAt}, nullTimeScanner{&rec.FinishedAt},
		&rec.ExitCode, &rec.HasLogs, timeScanner{&rec.UpdatedAt}, nullStringScanner{&rec.Set}, notifyScanner{&rec.Notify})
	return rec, err
}

// notifyArg binds notify URLs as a JSON array; none is NULL.
func notifyArg(urls []string) any {
	if len(urls) == 0 {
		return nil
	}
	b, err := json.Marshal(urls)
	if err != nil { // strings always marshal
		panic(err)
	}
	return string(b)
}

// notifyScanner reads the notify column: NULL as nil, else a JSON array.
type notifyScanner struct{ urls *[]string }

func (n notifyScanner) Scan(src any) error {
	var s string
	if err := (nullStringScanner{&s}).Scan(src); err != nil {
		return err
	}
	*n.urls = nil
	if s == "" {
		return nil
	}
	return json.Unmarshal([]byte(s), n.urls)
}

// nullStringScanner reads a nullable text column, NULL as "".
type nullStringScanner struct{ s *string }

func (n nullStringScanner) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*n.s = ""
	case string:
		*n.s = v
	case []byte:
		*n.s = string(v)
	default:
		return fmt.Errorf("scan text: unexpected %T", src)
	}
	return nil
}

// timeScanner reads a time from either database: a time.Time from
// PostgreSQL, microseconds from SQLite.
type timeScanner struct{ t *time.Time }

func (s timeScanner) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		*s.t = v.UTC()
	case int64:
		*s.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("scan time: unexpected %T", src)
	}
	return nil
}

type nullTimeScanner struct{ t **time.Time }

func (s nullTimeScanner) Scan(src any) error {
	if src == nil {
		*s.t = nil
		return nil
	}
	var t time.Time
	if err := (timeScanner{&t}).Scan(src); err != nil {
		return err
	}
	*s.t = &t
	return nil
}

var _ sql.Scanner = timeScanner{}
