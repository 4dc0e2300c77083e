package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// pgStore is the shared store: any number of backend replicas, one
// database. Every write is one statement whose SQL enforces the record's
// rules, so replicas need no coordination beyond what PostgreSQL's row
// locks give (INSERT ... ON CONFLICT waits for a concurrent writer of the
// same ID, then re-checks the WHERE clause against what it committed).
type pgStore struct {
	// pool commits as the DSN and the server say (synchronous_commit):
	// final records, which the recorder stores before it lets the
	// experiment's Job go, and migrations.
	pool *pgxpool.Pool
	// fast serves everything else, and commits without waiting for the
	// WAL's flush (synchronous_commit off): claims and progress. Until
	// its final record is stored an experiment's Job holds (finalizer) and
	// carries the claim's ID, hash and submitter, from which a claim or
	// progress lost in a crash of the server is written again; a retried
	// POST meanwhile finds the Job (same body: answered from it, another:
	// 409), so nothing runs twice. That saves a flush per POST.
	fast   *pgxpool.Pool
	d      dialect
	target string // host and database, for messages; never the password
}

var pgDialect = dialect{timeArg: func(t time.Time) any { return t }}

// pgPoolSize is the size of the pool that claims and reads unless the DSN
// sets pool_max_conns. pgxpool's default (the number of CPUs, at least 4)
// caps how many POSTs claim at once.
const pgPoolSize = 16

// pgDurableConns bounds the pool of durable writes: final records come
// from the recorder's few workers only.
const pgDurableConns = 4

// pgConnectTimeout bounds a connection attempt when the DSN has no
// connect_timeout: an unreachable server must fail a request, not hang it.
const pgConnectTimeout = 10 * time.Second

// migrationLockKey names the advisory lock that serializes migrations of
// one database: replicas starting together apply each migration once.
const migrationLockKey int64 = 0x676d696e69686973 // "gminihis"

// finishSQL stores the final state and the output in one statement: the
// output is written only if the record was (it was not final yet).
var finishSQL = "WITH up AS (" + upsertSQL(true) + `),
logs AS (
	INSERT INTO experiment_logs (id, output) SELECT id, $18::bytea FROM up WHERE $19::boolean
	ON CONFLICT (id) DO UPDATE SET output = excluded.output)
SELECT ` + columns + " FROM up"

func openPostgres(ctx context.Context, dsn string, log *slog.Logger) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's message masks the password.
		return nil, failure.Wrap(failure.Invalid, err, "history: postgres DSN")
	}
	if u, err := url.Parse(dsn); err == nil && !u.Query().Has("pool_max_conns") {
		cfg.MaxConns = pgPoolSize
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = pgConnectTimeout
	}
	s := &pgStore{d: pgDialect, target: fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)}
	fcfg := cfg.Copy()
	fcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	cfg.MaxConns = min(cfg.MaxConns, pgDurableConns)
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, s.fail(ctx, err, "connect to", s.target)
	}
	if err := s.migrate(ctx, log); err != nil {
		s.pool.Close()
		return nil, err
	}
	if s.fast, err = pgxpool.NewWithConfig(ctx, fcfg); err != nil {
		s.pool.Close()
		return nil, s.fail(ctx, err, "connect to", s.target)
	}
	log.Info("history store opened", "database", "postgres", "target", s.target)
	return s, nil
}

// migrate applies the missing migrations in one transaction, under an
// advisory lock that a replica starting at the same moment waits for; it
// then finds them applied. PostgreSQL's DDL is transactional, so a failed
// migration leaves nothing half done.
func (s *pgStore) migrate(ctx context.Context, log *slog.Logger) error {
	all, err := loadMigrations(migrationFiles, "postgres")
	if err != nil {
		return failure.Wrap(failure.Internal, err, "history: migrate %s", s.target)
	}
	fail := func(err error) error { return s.fail(ctx, err, "migrate", s.target) }
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
		return fail(err)
	}
	if _, err := tx.Exec(ctx, schemaMigrationsSQL); err != nil {
		return fail(err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fail(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fail(err)
	}
	applied := map[int]bool{}
	for _, v := range versions {
		applied[int(v)] = true
	}
	todo, unknown := pending(all, applied)
	if unknown > 0 {
		log.Warn("history database has migrations this backend does not know; running with the newer schema", "target", s.target, "version", unknown)
	}
	for _, m := range todo {
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fail(fmt.Errorf("migration %s: %w", m.Name, err))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
			m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fail(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(err)
	}
	for _, m := range todo {
		log.Info("history schema migrated", "database", "postgres", "migration", m.Name)
	}
	return nil
}

func (s *pgStore) Claim(ctx context.Context, rec Record) (Record, bool, error) {
	if rec.State == "" {
		rec.State = StateSubmitted
	}
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return Record{}, false, err
	}
	rec.HasLogs = false
	// A claim with notify URLs waits for the WAL's flush: the Job rebuilds
	// what a claim lost in a crash of the server says, but it does not
	// carry the URLs.
	pool := s.fast
	if len(rec.Notify) > 0 {
		pool = s.pool
	}
	// A record can vanish between the INSERT that found it and the read
	// (Expire); then the ID is free again and the claim is retried.
	for range 3 {
		stored, err := scanRecord(pool.QueryRow(ctx, claimSQL, s.d.recordArgs(rec)...))
		if err == nil {
			return stored, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Record{}, false, s.fail(ctx, err, "claim", rec.ID)
		}
		stored, err = s.Get(ctx, rec.ID)
		if failure.KindOf(err) == failure.NotFound {
			continue
		}
		return stored, false, err
	}
	return Record{}, false, failure.New(failure.Unavailable, "history: claim %q: the record kept disappearing; retry", rec.ID)
}

func (s *pgStore) Unclaim(ctx context.Context, id, hash string) (bool, error) {
	tag, err := s.fast.Exec(ctx, unclaimSQL, id, hash)
	if err != nil {
		return false, s.fail(ctx, err, "unclaim", id)
	}
	return tag.RowsAffected() > 0, nil
}

func (s *pgStore) Update(ctx context.Context, rec Record) error {
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return err
	}
	rec.HasLogs = false
	if _, err := s.fast.Exec(ctx, upsertSQL(false), s.d.recordArgs(rec)...); err != nil {
		return s.fail(ctx, err, "update", rec.ID)
	}
	return nil
}

func (s *pgStore) Finish(ctx context.Context, rec Record, logs []byte) (Record, error) {
	if !Final(rec.State) {
		return Record{}, failure.New(failure.Invalid, "history: finish %q: state %q is not final", rec.ID, rec.State)
	}
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return Record{}, err
	}
	rec.HasLogs = logs != nil
	args := append(s.d.recordArgs(rec), nonNil(tail(logs)), rec.HasLogs)
	stored, err := scanRecord(s.pool.QueryRow(ctx, finishSQL, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		// Already final: nothing changed.
		return s.Get(ctx, rec.ID)
	}
	if err != nil {
		return Record{}, s.fail(ctx, err, "finish", rec.ID)
	}
	return stored, nil
}

func (s *pgStore) Get(ctx context.Context, id string) (Record, error) {
	rec, err := scanRecord(s.fast.QueryRow(ctx, getSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, notFound(id)
	}
	if err != nil {
		return Record{}, s.fail(ctx, err, "get", id)
	}
	return rec, nil
}

func (s *pgStore) Logs(ctx context.Context, id string) ([]byte, error) {
	var has bool
	var out []byte
	err := s.fast.QueryRow(ctx, logsSQL, id).Scan(&has, &out)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, notFound(id)
	case err != nil:
		return nil, s.fail(ctx, err, "read the output of", id)
	case !has:
		return nil, noLogs(id)
	}
	return nonNil(out), nil
}

func (s *pgStore) List(ctx context.Context, opts ListOptions) (Page, error) {
	q, err := newListQuery(opts, s.d)
	if err != nil {
		return Page{}, err
	}
	rows, err := s.fast.Query(ctx, q.sql, q.args...)
	if err != nil {
		return Page{}, s.fail(ctx, err, "list", "")
	}
	defer rows.Close()
	page, err := q.read(rows)
	if err != nil {
		return Page{}, s.fail(ctx, err, "list", "")
	}
	return page, nil
}

func (s *pgStore) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	query, args, err := eventsSQL(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.fast.Query(ctx, query, args...)
	if err != nil {
		return nil, s.fail(ctx, err, "read events", q.ID)
	}
	defer rows.Close()
	evs, err := readEvents(rows)
	if err != nil {
		return nil, s.fail(ctx, err, "read events", q.ID)
	}
	return evs, nil
}

func (s *pgStore) LastEvent(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.fast.QueryRow(ctx, lastEventSQL).Scan(&seq); err != nil {
		return 0, s.fail(ctx, err, "read the last event", "")
	}
	return seq, nil
}

func (s *pgStore) CountSet(ctx context.Context, set string) (map[string]int, error) {
	rows, err := s.fast.Query(ctx, countSetSQL, set)
	if err != nil {
		return nil, s.fail(ctx, err, "count the records of set", set)
	}
	defer rows.Close()
	counts, err := readCounts(rows)
	if err != nil {
		return nil, s.fail(ctx, err, "count the records of set", set)
	}
	return counts, nil
}

func (s *pgStore) Expire(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.fast.Exec(ctx, expireSQL, dbTime(cutoff))
		if err != nil {
			return total, s.fail(ctx, err, "expire", "")
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < expireBatch {
			return total, nil
		}
	}
}

func (s *pgStore) Own(ctx context.Context, namespace string) error {
	if _, err := s.pool.Exec(ctx, ownSQL, namespace); err != nil {
		return s.fail(ctx, err, "own", s.target)
	}
	var owner string
	if err := s.pool.QueryRow(ctx, ownerSQL).Scan(&owner); err != nil {
		return s.fail(ctx, err, "own", s.target)
	}
	return checkOwner(owner, namespace)
}

func (s *pgStore) Ping(ctx context.Context) error {
	for _, p := range []*pgxpool.Pool{s.pool, s.fast} {
		if err := p.Ping(ctx); err != nil {
			return s.fail(ctx, err, "ping", s.target)
		}
	}
	return nil
}

func (s *pgStore) Close() error {
	s.pool.Close() // both idempotent
	s.fast.Close()
	return nil
}

func (s *pgStore) fail(ctx context.Context, err error, op, id string) error {
	return errf(pgKind(ctx, err), err, op, id)
}

// pgKind classifies a PostgreSQL error: what a retry may cure (the server
// unreachable, restarting, out of space or connections, read-only, a
// timeout) is Unavailable; a refused statement is a bug here, Internal.
func pgKind(ctx context.Context, err error) failure.Kind {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if pgRetryable(pe.Code) {
			return failure.Unavailable
		}
		return failure.Internal
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err),
		errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), pgconn.SafeToRetry(err):
		return failure.Unavailable
	}
	return failure.Internal
}

// pgRetryable reports the SQLSTATE codes of a server that cannot serve now
// but may soon.
func pgRetryable(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
	case strings.HasPrefix(code, "53"): // insufficient resources: disk full, out of memory, too many connections
	case strings.HasPrefix(code, "57P"): // shutting down, starting up
	case code == "57014": // query canceled: statement_timeout, or the caller's deadline
	case code == "25006": // read-only transaction: a standby, or a read-only database
	case code == "58030": // I/O error
	case code == "40001", code == "40P01": // serialization failure, deadlock
	case code == "55P03": // lock_timeout
	default:
		return false
	}
	return true
}
