package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// sqliteStore is the embedded store: one file, one process.
//
// SQLite allows one writer at a time, and a writer that finds the database
// locked waits (busy_timeout) or fails. So every write goes through one
// connection (w), queued by database/sql instead of retried by SQLite, and
// reads use a pool of read-only connections (r) that WAL lets run beside
// the writer without blocking it. A third connection (ckpt) copies the WAL
// into the database file in the background, so that the commit which
// happens to fill the WAL does not pay for that copy and its fsync.
type sqliteStore struct {
	path       string
	w, r, ckpt *sql.DB
	stopCkpt   context.CancelFunc
	ckptDone   chan struct{}
	// Statements of the hot paths, parsed once: parsing the upsert costs
	// about as much CPU as running it, and every POST claims.
	claim, update, finish, getW, getR, logs *sql.Stmt
	// writes runs every write on w, many per transaction under load.
	writes    *groupCommit[*sql.Tx]
	d         dialect
	closeOnce sync.Once
	closeErr  error
}

var sqliteDialect = dialect{timeArg: func(t time.Time) any { return t.UnixMicro() }}

// sqliteBusyTimeout is how long a connection waits for a lock held by
// another process (a backup, a sqlite3 shell) before failing.
const sqliteBusyTimeout = 5 * time.Second

// Checkpoints: the background one runs this often; the writer still
// checkpoints itself if the WAL reaches sqliteWALPages (4 KiB pages), in
// case the background one falls behind; after a checkpoint the WAL file is
// cut back to sqliteWALBytes.
const (
	sqliteCheckpointEvery = time.Second
	sqliteWALPages        = 10000
	sqliteWALBytes        = 64 << 20
	sqliteReaderCacheKiB  = 256
)

func openSQLite(ctx context.Context, path string, log *slog.Logger) (Store, error) {
	if path == "" || path == ":memory:" {
		return nil, failure.New(failure.Invalid, "history: sqlite needs a file, as in sqlite:/var/lib/gmini/history.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, failure.Wrap(failure.Invalid, err, "history: sqlite path %s", path)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, failure.Wrap(failure.Unavailable, err, "history: create the directory of %s", abs)
	}
	// The file: URI form keeps a path with '?' or '#' a path.
	base := (&url.URL{Scheme: "file", Path: abs}).String()
	busy := fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds())
	wq := url.Values{"_pragma": {busy, "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)",
		fmt.Sprintf("wal_autocheckpoint(%d)", sqliteWALPages), fmt.Sprintf("journal_size_limit(%d)", sqliteWALBytes)}, "_txlock": {"immediate"}}
	// Readers keep a small page cache of their own: a page of the list
	// reads a few index and table pages, and the kernel's page cache holds
	// the file anyway. SQLite's default (2 MiB per connection, allocated
	// outside Go's heap) would hold up to 8 MiB of copies in the backend.
	rq := url.Values{"_pragma": {busy, "query_only(1)", fmt.Sprintf("cache_size(%d)", -sqliteReaderCacheKiB)}}
	cq := url.Values{"_pragma": {busy, fmt.Sprintf("journal_size_limit(%d)", sqliteWALBytes)}}

	s := &sqliteStore{path: abs, d: sqliteDialect}
	if s.w, err = sql.Open("sqlite", base+"?"+wq.Encode()); err != nil {
		return nil, failure.Wrap(failure.Internal, err, "history: open %s", abs)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	// The writer sets WAL mode and creates the schema before any reader
	// opens the file.
	if err := s.migrateWhenFree(ctx, log); err != nil {
		s.w.Close()
		return nil, err
	}
	if s.r, err = sql.Open("sqlite", base+"?"+rq.Encode()); err != nil {
		s.w.Close()
		return nil, failure.Wrap(failure.Internal, err, "history: open %s", abs)
	}
	readers := max(4, runtime.NumCPU())
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.writes = newGroupCommit(sqliteWritesPerCommit, sqliteProgressLinger, s.inTx)
	if s.ckpt, err = sql.Open("sqlite", base+"?"+cq.Encode()); err != nil {
		s.Close()
		return nil, failure.Wrap(failure.Internal, err, "history: open %s", abs)
	}
	s.ckpt.SetMaxOpenConns(1)
	loopCtx, cancel := context.WithCancel(context.Background())
	s.stopCkpt, s.ckptDone = cancel, make(chan struct{})
	go s.checkpoints(loopCtx, log)
	log.Info("history store opened", "database", "sqlite", "path", abs)
	return s, nil
}

// sqliteWritesPerCommit bounds a group commit: enough for every request
// the backend processes at once, few enough that a transaction holding
// the output of finished experiments (up to 1 MiB each) stays small.
const sqliteWritesPerCommit = 64

// sqliteProgressLinger is how long the recorder's progress writes wait for
// a claim's transaction to join; short, as the recorder's few workers each
// wait for their write.
const sqliteProgressLinger = 5 * time.Millisecond

// inTx runs fn in one IMMEDIATE transaction on the writer (_txlock).
// Commits are synchronous(NORMAL): in WAL mode that survives a crash of the
// process but not of the machine, which may lose the last commits before
// a checkpoint. A durable transaction is committed synchronous(FULL),
// which syncs the WAL first.
func (s *sqliteStore) inTx(ctx context.Context, durable bool, fn func(*sql.Tx) error) error {
	// The setting belongs to the connection: pin the writer's one.
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if durable {
		if _, err := conn.ExecContext(ctx, "PRAGMA synchronous(FULL)"); err != nil {
			return err
		}
		// Back to NORMAL even if ctx ended; should that fail, the
		// writer only stays slower.
		defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous(NORMAL)")
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (s *sqliteStore) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		db   *sql.DB
		sql  string
	}{
		{&s.claim, s.w, claimSQL},
		{&s.update, s.w, upsertSQL(false)},
		{&s.finish, s.w, upsertSQL(true)},
		{&s.getW, s.w, getSQL},
		{&s.getR, s.r, getSQL},
		{&s.logs, s.r, logsSQL},
	} {
		var err error
		if *p.stmt, err = p.db.PrepareContext(ctx, p.sql); err != nil {
			return s.fail(ctx, err, "prepare statements for", s.path)
		}
	}
	return nil
}

// checkpoints runs a passive checkpoint every sqliteCheckpointEvery: it
// copies what it can without waiting for readers or the writer.
func (s *sqliteStore) checkpoints(ctx context.Context, log *slog.Logger) {
	defer close(s.ckptDone)
	tick := time.NewTicker(sqliteCheckpointEvery)
	defer tick.Stop()
	var last string // each new error once, not every second
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, err := s.ckpt.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != last:
			log.Warn("history: sqlite checkpoint failed; the writer checkpoints instead", "path", s.path, "err", err)
			last = err.Error()
		case err == nil:
			last = ""
		}
	}
}

// migrateWhenFree retries migrate while another connection to a new file
// holds it: switching a new file to WAL needs it alone, and SQLite reports
// that conflict at once instead of waiting busy_timeout.
func (s *sqliteStore) migrateWhenFree(ctx context.Context, log *slog.Logger) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := s.migrate(ctx, log)
		if err == nil || !sqliteBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func sqliteBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code()&0xff == sqlite3.SQLITE_BUSY || se.Code()&0xff == sqlite3.SQLITE_LOCKED)
}

// migrate applies the missing migrations in one IMMEDIATE transaction: it
// takes the write lock first, so two processes opening one file at once
// apply each migration once.
func (s *sqliteStore) migrate(ctx context.Context, log *slog.Logger) error {
	all, err := loadMigrations(migrationFiles, "sqlite")
	if err != nil {
		return failure.Wrap(failure.Internal, err, "history: migrate %s", s.path)
	}
	fail := func(err error) error { return s.fail(ctx, err, "migrate", s.path) }
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schemaMigrationsSQL); err != nil {
		return fail(err)
	}
	applied, err := sqlApplied(ctx, tx)
	if err != nil {
		return fail(err)
	}
	todo, unknown := pending(all, applied)
	if unknown > 0 {
		log.Warn("history database has migrations this backend does not know; running with the newer schema", "path", s.path, "version", unknown)
	}
	for _, m := range todo {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fail(fmt.Errorf("migration %s: %w", m.Name, err))
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
			m.Version, m.Name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	for _, m := range todo {
		log.Info("history schema migrated", "database", "sqlite", "migration", m.Name)
	}
	return nil
}

func sqlApplied(ctx context.Context, tx *sql.Tx) (map[int]bool, error) {
	rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

func (s *sqliteStore) Claim(ctx context.Context, rec Record) (Record, bool, error) {
	if rec.State == "" {
		rec.State = StateSubmitted
	}
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return Record{}, false, err
	}
	rec.HasLogs = false
	args := s.d.recordArgs(rec)
	var stored Record
	var created bool
	// A claim with notify URLs is durable: the Job rebuilds what a claim
	// lost in a crash of the node says, but it does not carry the URLs.
	write := s.writes.do
	if len(rec.Notify) > 0 {
		write = s.writes.durable
	}
	err = write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		stored, err = scanRecord(tx.StmtContext(ctx, s.claim).QueryRowContext(ctx, args...))
		if created = err == nil; !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Taken: read it in the same transaction, so nothing (an
		// Expire) comes between the INSERT that found it and the read.
		stored, err = scanRecord(tx.StmtContext(ctx, s.getW).QueryRowContext(ctx, rec.ID))
		return err
	})
	if err != nil {
		return Record{}, false, s.fail(ctx, err, "claim", rec.ID)
	}
	return stored, created, nil
}

func (s *sqliteStore) Unclaim(ctx context.Context, id, hash string) (bool, error) {
	var n int64
	err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, unclaimSQL, id, hash)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, s.fail(ctx, err, "unclaim", id)
	}
	return n > 0, nil
}

func (s *sqliteStore) Update(ctx context.Context, rec Record) error {
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return err
	}
	rec.HasLogs = false
	args := s.d.recordArgs(rec)
	err = s.writes.later(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.update).ExecContext(ctx, args...)
		return err
	})
	if err != nil {
		return s.fail(ctx, err, "update", rec.ID)
	}
	return nil
}

func (s *sqliteStore) Finish(ctx context.Context, rec Record, logs []byte) (Record, error) {
	if !Final(rec.State) {
		return Record{}, failure.New(failure.Invalid, "history: finish %q: state %q is not final", rec.ID, rec.State)
	}
	rec, err := prepare(rec, time.Now())
	if err != nil {
		return Record{}, err
	}
	rec.HasLogs = logs != nil
	args := s.d.recordArgs(rec)
	var stored Record
	op := "finish"
	// Durable: once Finish returns, the recorder lets the Job go, and with
	// it the only other copy of what the record says.
	err = s.writes.durable(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		op = "finish"
		stored, err = scanRecord(tx.StmtContext(ctx, s.finish).QueryRowContext(ctx, args...))
		if errors.Is(err, sql.ErrNoRows) {
			// Already final: nothing changes.
			stored, err = scanRecord(tx.StmtContext(ctx, s.getW).QueryRowContext(ctx, rec.ID))
			return err
		}
		if err != nil || logs == nil {
			return err
		}
		op = "store the output of"
		_, err = tx.ExecContext(ctx, putLogsSQL, rec.ID, nonNil(tail(logs)))
		return err
	})
	if err != nil {
		return Record{}, s.fail(ctx, err, op, rec.ID)
	}
	return stored, nil
}

func (s *sqliteStore) Get(ctx context.Context, id string) (Record, error) {
	return s.get(ctx, s.getR, id)
}

func (s *sqliteStore) get(ctx context.Context, stmt *sql.Stmt, id string) (Record, error) {
	rec, err := scanRecord(stmt.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, notFound(id)
	}
	if err != nil {
		return Record{}, s.fail(ctx, err, "get", id)
	}
	return rec, nil
}

func (s *sqliteStore) Logs(ctx context.Context, id string) ([]byte, error) {
	var has bool
	var out []byte
	err := s.logs.QueryRowContext(ctx, id).Scan(&has, &out)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, notFound(id)
	case err != nil:
		return nil, s.fail(ctx, err, "read the output of", id)
	case !has:
		return nil, noLogs(id)
	}
	return nonNil(out), nil
}

func (s *sqliteStore) List(ctx context.Context, opts ListOptions) (Page, error) {
	q, err := newListQuery(opts, s.d)
	if err != nil {
		return Page{}, err
	}
	rows, err := s.r.QueryContext(ctx, q.sql, q.args...)
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

func (s *sqliteStore) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	query, args, err := eventsSQL(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
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

func (s *sqliteStore) LastEvent(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, lastEventSQL).Scan(&seq); err != nil {
		return 0, s.fail(ctx, err, "read the last event", "")
	}
	return seq, nil
}

func (s *sqliteStore) CountSet(ctx context.Context, set string) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, countSetSQL, set)
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

func (s *sqliteStore) Expire(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, expireSQL, s.d.timeArg(dbTime(cutoff)))
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, s.fail(ctx, err, "expire", "")
		}
		total += n
		if n < expireBatch {
			return total, nil
		}
	}
}

func (s *sqliteStore) Own(ctx context.Context, namespace string) error {
	var owner string
	err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, ownSQL, namespace); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, ownerSQL).Scan(&owner)
	})
	if err != nil {
		return s.fail(ctx, err, "own", s.path)
	}
	return checkOwner(owner, namespace)
}

func (s *sqliteStore) Ping(ctx context.Context) error {
	for _, db := range []*sql.DB{s.w, s.r} {
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			return s.fail(ctx, err, "ping", s.path)
		}
	}
	return nil
}

func (s *sqliteStore) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.writes != nil {
			s.writes.close()
		}
		if s.stopCkpt != nil {
			s.stopCkpt()
			<-s.ckptDone
			errs = append(errs, s.ckpt.Close())
		}
		for _, st := range []*sql.Stmt{s.claim, s.update, s.finish, s.getW, s.getR, s.logs} {
			if st != nil {
				errs = append(errs, st.Close())
			}
		}
		s.closeErr = errors.Join(append(errs, s.r.Close(), s.w.Close())...)
	})
	return s.closeErr
}

// fail classifies a database error: the kinds a retry may cure (locked,
// full, read-only, I/O, the deadline) are Unavailable.
func (s *sqliteStore) fail(ctx context.Context, err error, op, id string) error {
	return errf(sqliteKind(ctx, err), err, op, id)
}

func sqliteKind(ctx context.Context, err error) failure.Kind {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
			sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL,
			sqlite3.SQLITE_PERM, sqlite3.SQLITE_INTERRUPT:
			return failure.Unavailable
		}
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fs.ErrPermission) {
		return failure.Unavailable
	}
	return failure.Internal
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
