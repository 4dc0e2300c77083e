package history

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

func openPostgresT(t *testing.T, dsn string) *pgStore {
	t.Helper()
	s, err := Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*pgStore)
}

// withParam adds a query parameter (a run-time setting) to a DSN.
func withParam(t *testing.T, dsn, key, value string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestPostgresUnreachable needs no server: nothing listens on port 1.
func TestPostgresUnreachable(t *testing.T) {
	t.Parallel()
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		name string
		ctx  context.Context
	}{
		{"connection refused", context.Background()},
		{"caller's deadline already passed", expired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(tt.ctx, "postgres://gmini:s3cret@127.0.0.1:1/history?connect_timeout=5", nil)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if k := failure.KindOf(err); k != failure.Unavailable {
				t.Errorf("kind %q, want unavailable: %v", k, err)
			}
			if !strings.HasPrefix(err.Error(), "history: migrate") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q: want it to name the operation and hide the password", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("failing took %s", d)
			}
		})
	}
}

// TestPostgresUnavailable provokes what a retry may cure on a real server
// and expects Unavailable, with the operation named, and a store that
// works again afterwards without being reopened.
func TestPostgresUnavailable(t *testing.T) {
	t.Parallel()
	dsn := PostgresDSN(t)
	s := openPostgresT(t, withParam(t, dsn, "application_name", "gmini-fault-test"))

	t.Run("read-only database", func(t *testing.T) {
		pool, err := pgxpool.New(context.Background(), withParam(t, dsn, "default_transaction_read_only", "on"))
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		ro := &pgStore{pool: pool, fast: pool, d: pgDialect, target: "read-only"}
		_, _, err = ro.Claim(context.Background(), Record{ID: "ro"})
		wantUnavailable(t, err, `history: claim "ro"`)
		// Starting against a read-only database fails the same way.
		_, err = Open(context.Background(), withParam(t, withParam(t, dsn, "search_path", "ro_fresh"), "default_transaction_read_only", "on"), nil)
		wantUnavailable(t, err, "history: migrate")
	})

	t.Run("a row lock held past the deadline", func(t *testing.T) {
		if err := s.Update(context.Background(), Record{ID: "held", State: StateRunning}); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		tx, err := conn.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(context.Background(), "SELECT 1 FROM experiments WHERE id = 'held' FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		wantUnavailable(t, s.Update(ctx, Record{ID: "held", State: StateSucceeded}), `history: update "held"`)
	})

	t.Run("connections cut by the server", func(t *testing.T) {
		// What a restart or failover does to the pool's connections.
		if _, err := s.Get(context.Background(), "held"); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gmini-fault-test'"); err != nil {
			t.Fatal(err)
		}
		_, err = s.Get(context.Background(), "held")
		if err != nil {
			wantUnavailable(t, err, `history: get "held"`)
		}
		// The pool replaces the dead connections: no reopen needed.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := s.Get(context.Background(), "held")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the store did not recover: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func wantUnavailable(t *testing.T, err error, prefix string) {
	t.Helper()
	t.Logf("error: %v", err)
	if k := failure.KindOf(err); k != failure.Unavailable {
		t.Errorf("kind %q, want unavailable: %v", k, err)
		return
	}
	if !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("error %q does not start with %q", err, prefix)
	}
}

// TestPostgresMigratesOnce reopens a database, and opens a fresh one from
// several stores at once, as replicas starting together do: each
// migration is recorded once.
func TestPostgresMigratesOnce(t *testing.T) {
	t.Parallel()
	dsn := PostgresDSN(t)
	all, _ := loadMigrations(migrationFiles, "postgres")
	first := pgApplied(t, openPostgresT(t, dsn))
	second := pgApplied(t, openPostgresT(t, dsn))
	if len(first) != len(all) || strings.Join(first, "\n") != strings.Join(second, "\n") {
		t.Errorf("schema_migrations after the first open:\n%s\nafter the second:\n%s\nwant one row per migration (%d), unchanged",
			strings.Join(first, "\n"), strings.Join(second, "\n"), len(all))
	}
}

func pgApplied(t *testing.T, s *pgStore) []string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), "SELECT version::text || ' ' || name || ' ' || applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostgresListUsesIndex checks each List statement can be answered by
// reading an index in order, without sorting: with sequential scans and
// sorts priced out, the planner still finds such a plan.
func TestPostgresListUsesIndex(t *testing.T) {
	t.Parallel()
	s := openPostgresT(t, PostgresDSN(t))
	ctx := context.Background()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET enable_sort = off"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ALL")
	for _, tt := range []struct {
		byState, bySet, after bool
		index                 string
	}{
		{false, false, false, "experiments_created"},
		{false, false, true, "experiments_created"},
		{true, false, false, "experiments_state_created"},
		{true, false, true, "experiments_state_created"},
		{false, true, false, "experiments_set_created"},
		{false, true, true, "experiments_set_created"},
		{true, true, true, "experiments_set_created"},
	} {
		q, err := newListQuery(ListOptions{State: map[bool]string{true: StateRunning}[tt.byState],
			Set:      map[bool]string{true: "sweep-1"}[tt.bySet],
			Continue: map[bool]string{true: cursor{time.Now(), "x"}.encode()}[tt.after]}, pgDialect)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN "+q.sql, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		p := strings.Join(plan, "\n")
		if !strings.Contains(p, "Index Scan using "+tt.index) || strings.Contains(p, "Sort") {
			t.Errorf("plan of %s:\n%s\nwant an index scan of %s and no sort", q.sql, p, tt.index)
		}
	}
	// A set's counts read the set's records only.
	rows, err := conn.Query(ctx, "EXPLAIN "+countSetSQL, "sweep-1")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(plan, "\n"); !strings.Contains(p, "experiments_set_created") {
		t.Errorf("plan of %s:\n%s\nwant the set's index", countSetSQL, p)
	}
}
