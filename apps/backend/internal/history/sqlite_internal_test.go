package history

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

func openSQLiteT(t *testing.T, path string) *sqliteStore {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*sqliteStore)
}

// TestSQLiteUnavailable provokes what a retry may cure (a full disk, a
// read-only database, a lock held elsewhere) and expects Unavailable, with
// the operation named.
func TestSQLiteUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// break_ makes the store fail; op is the failing call.
		break_ func(t *testing.T, s *sqliteStore)
		op     func(ctx context.Context, s Store) error
		says   string
	}{
		{
			name: "full",
			break_: func(t *testing.T, s *sqliteStore) {
				var pages int
				if err := s.w.QueryRow("PRAGMA page_count").Scan(&pages); err != nil {
					t.Fatal(err)
				}
				if _, err := s.w.Exec("PRAGMA max_page_count = " + strconv.Itoa(pages+1)); err != nil {
					t.Fatal(err)
				}
			},
			op: func(ctx context.Context, s Store) error {
				_, err := s.Finish(ctx, Record{ID: "big", State: StateSucceeded}, bytes.Repeat([]byte("x"), MaxLogBytes))
				return err
			},
			says: `history: store the output of "big"`,
		},
		{
			name: "read-only",
			break_: func(t *testing.T, s *sqliteStore) {
				if _, err := s.w.Exec("PRAGMA query_only = 1"); err != nil {
					t.Fatal(err)
				}
			},
			op: func(ctx context.Context, s Store) error {
				_, _, err := s.Claim(ctx, Record{ID: "ro"})
				return err
			},
			says: `history: claim "ro"`,
		},
		{
			name: "locked by another process past the deadline",
			break_: func(t *testing.T, s *sqliteStore) {
				// Another program (a backup, a sqlite3 shell) holds the
				// write lock.
				other, err := sql.Open("sqlite", "file:"+s.path+"?_txlock=immediate")
				if err != nil {
					t.Fatal(err)
				}
				tx, err := other.Begin()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { tx.Rollback(); other.Close() })
			},
			op: func(ctx context.Context, s Store) error {
				ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
				return s.Update(ctx, Record{ID: "locked", State: StateRunning})
			},
			says: `history: update "locked"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := openSQLiteT(t, filepath.Join(t.TempDir(), "history.db"))
			tt.break_(t, s)
			start := time.Now()
			err := tt.op(context.Background(), s)
			t.Logf("error: %v", err)
			if k := failure.KindOf(err); k != failure.Unavailable {
				t.Fatalf("kind %q, want unavailable: %v", k, err)
			}
			if !strings.HasPrefix(err.Error(), tt.says) {
				t.Errorf("error %q does not start with %q", err, tt.says)
			}
			if d := time.Since(start); d > sqliteBusyTimeout+2*time.Second {
				t.Errorf("failing took %s", d)
			}
		})
	}
}

// TestSQLiteMigratesOnce reopens a database: the migrations recorded the
// first time are not applied again.
func TestSQLiteMigratesOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "history.db")
	first := applied(t, openSQLiteT(t, path).w)
	second := applied(t, openSQLiteT(t, path).w)
	all, _ := loadMigrations(migrationFiles, "sqlite")
	if len(first) != len(all) || strings.Join(first, "\n") != strings.Join(second, "\n") {
		t.Errorf("schema_migrations after the first open:\n%s\nafter the second:\n%s\nwant one row per migration (%d), unchanged",
			strings.Join(first, "\n"), strings.Join(second, "\n"), len(all))
	}
}

// TestSQLiteAddsSetsToAnOldDatabase opens a database made before
// experiment sets (migrations 1 and 2 only): its records read back with no
// set, and new claims keep theirs.
func TestSQLiteAddsSetsToAnOldDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "history.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	all, err := loadMigrations(migrationFiles, "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{schemaMigrationsSQL, all[0].SQL, all[1].SQL,
		"INSERT INTO schema_migrations VALUES (1, '" + all[0].Name + "', 'then'), (2, '" + all[1].Name + "', 'then')",
		"INSERT INTO experiments (id, hash, state, created_at, updated_at) VALUES ('old', 'h', 'Succeeded', 1, 1)",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%.60s: %v", stmt, err)
		}
	}
	db.Close()

	s := openSQLiteT(t, path)
	ctx := context.Background()
	if rec, err := s.Get(ctx, "old"); err != nil || rec.Set != "" || rec.State != StateSucceeded {
		t.Errorf("old record = %+v, %v; want it as it was, in no set", rec, err)
	}
	if _, _, err := s.Claim(ctx, Record{ID: "new", Hash: "h", Set: "sweep"}); err != nil {
		t.Fatal(err)
	}
	if counts, err := s.CountSet(ctx, "sweep"); err != nil || counts[StateSubmitted] != 1 {
		t.Errorf("CountSet = %v, %v; want the new claim", counts, err)
	}
}

func applied(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v, name, at string
		if err := rows.Scan(&v, &name, &at); err != nil {
			t.Fatal(err)
		}
		out = append(out, v+" "+name+" "+at)
	}
	return out
}

// TestSQLiteListUsesIndex checks each List statement reads an index in
// order: no table scan, no sort of the whole table.
func TestSQLiteListUsesIndex(t *testing.T) {
	t.Parallel()
	s := openSQLiteT(t, filepath.Join(t.TempDir(), "history.db"))
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
			Continue: map[bool]string{true: cursor{time.Now(), "x"}.encode()}[tt.after]}, sqliteDialect)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q.sql, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		if !strings.Contains(p, "USING INDEX "+tt.index) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("plan of %s:\n%s\nwant index %s and no sort", q.sql, p, tt.index)
		}
	}
	// A set's counts read the set's records only.
	var id, parent, unused int
	var detail string
	if err := s.r.QueryRow("EXPLAIN QUERY PLAN "+countSetSQL, "sweep-1").Scan(&id, &parent, &unused, &detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "USING INDEX experiments_set_created (set_id=?)") {
		t.Errorf("plan of %s: %s; want a search of experiments_set_created", countSetSQL, detail)
	}
}
