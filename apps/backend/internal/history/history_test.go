package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		dsn      string
		kind     failure.Kind
		says     string
		mustHide string
	}{
		{"empty", "", failure.Invalid, "sqlite:/path/to/history.db or postgres://", ""},
		{"another database", "mysql://gmini:s3cret@db/history", failure.Invalid, "unsupported database \"mysql:", "s3cret"},
		{"a bare path", "/var/lib/gmini/history.db", failure.Invalid, "sqlite:/path", ""},
		{"sqlite without a path", "sqlite:", failure.Invalid, "needs a file", ""},
		{"sqlite in memory", "sqlite::memory:", failure.Invalid, "needs a file", ""},
		{"a malformed postgres DSN", "postgres://gmini:s3cret@db:notaport/history", failure.Invalid, "postgres DSN", "s3cret"},
		{"a directory that cannot be made", "sqlite:" + filepath.Join(file, "sub", "history.db"), failure.Unavailable, "create the directory", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(context.Background(), tt.dsn, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tt.dsn)
			}
			if k := failure.KindOf(err); k != tt.kind {
				t.Errorf("kind %q, want %q: %v", k, tt.kind, err)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say %q", err, tt.says)
			}
			if tt.mustHide != "" && strings.Contains(err.Error(), tt.mustHide) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestOpenSQLiteMakesDirectory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a", "b", "history.db")
	s, err := Open(context.Background(), "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	}
	var mode string
	if err := s.(*sqliteStore).w.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestCursor(t *testing.T) {
	t.Parallel()
	for _, c := range []cursor{
		{time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), "aB3dE9xQ2mNpL7"},
		{time.Unix(0, 0).UTC(), "x"},
		{time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), strings.Repeat("é", 100)},
	} {
		tok := c.encode()
		got, err := decodeCursor(tok)
		if err != nil || !got.CreatedAt.Equal(c.CreatedAt) || got.ID != c.ID {
			t.Errorf("decode(encode(%+v)) = %+v, %v", c, got, err)
		}
		if strings.ContainsAny(tok, "+/=") {
			t.Errorf("token %q is not URL-safe", tok)
		}
	}
	bad := []string{"", "%%%", "AQ", cursor{time.Unix(1, 0), ""}.encode(), cursor{time.Unix(-1, 0), "x"}.encode(),
		cursor{time.Unix(1, 0), "bad\xff"}.encode(), strings.Repeat("A", maxTokenLen+1)}
	for _, tok := range bad {
		if _, err := decodeCursor(tok); failure.KindOf(err) != failure.Invalid {
			t.Errorf("decodeCursor(%q) = %v, want an Invalid error", tok, err)
		}
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, MaxLogBytes - 1, MaxLogBytes, MaxLogBytes + 1, 2*MaxLogBytes + 3} {
		in := bytes.Repeat([]byte{'a'}, n)
		if n > 0 {
			in[len(in)-1] = 'z'
		}
		got := tail(in)
		if len(got) != min(n, MaxLogBytes) || (n > 0 && got[len(got)-1] != 'z') {
			t.Errorf("tail of %d bytes: %d bytes, want the last %d", n, len(got), min(n, MaxLogBytes))
		}
	}
	if tail(nil) != nil || tail([]byte{}) == nil {
		t.Error("tail must keep nil (no output) apart from empty output")
	}
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	var versions [][]int
	for _, d := range []string{"sqlite", "postgres"} {
		ms, err := loadMigrations(migrationFiles, d)
		if err != nil {
			t.Fatal(err)
		}
		var vs []int
		for _, m := range ms {
			vs = append(vs, m.Version)
		}
		versions = append(versions, vs)
	}
	// A schema change is made in both dialects, under one number.
	if !slices.Equal(versions[0], versions[1]) {
		t.Errorf("sqlite has migrations %v, postgres %v; want the same versions", versions[0], versions[1])
	}

	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		files   fstest.MapFS
		wantErr string
		want    []int
	}{
		{"in order", fstest.MapFS{"migrations/x/0002_b.sql": file("b"), "migrations/x/0001_a.sql": file("a")}, "", []int{1, 2}},
		{"a gap", fstest.MapFS{"migrations/x/0001_a.sql": file("a"), "migrations/x/0003_c.sql": file("c")}, "expected version 2", nil},
		{"a shared number", fstest.MapFS{"migrations/x/0001_a.sql": file("a"), "migrations/x/01_b.sql": file("b")}, "share version 1", nil},
		{"a stray file", fstest.MapFS{"migrations/x/README": file("")}, "NNNN_what.sql", nil},
		{"version zero", fstest.MapFS{"migrations/x/0000_a.sql": file("")}, "NNNN_what.sql", nil},
		{"no directory", fstest.MapFS{}, "read migrations", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := loadMigrations(tt.files, "x")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.Version)
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("versions %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPending(t *testing.T) {
	t.Parallel()
	all := []migration{{Version: 1}, {Version: 2}, {Version: 3}}
	tests := []struct {
		applied     map[int]bool
		want        []int
		wantUnknown int
	}{
		{nil, []int{1, 2, 3}, 0},
		{map[int]bool{1: true}, []int{2, 3}, 0},
		{map[int]bool{1: true, 2: true, 3: true}, nil, 0},
		{map[int]bool{1: true, 2: true, 3: true, 4: true, 5: true}, nil, 5},
	}
	for _, tt := range tests {
		todo, unknown := pending(all, tt.applied)
		var got []int
		for _, m := range todo {
			got = append(got, m.Version)
		}
		if !slices.Equal(got, tt.want) || unknown != tt.wantUnknown {
			t.Errorf("pending(%v) = %v, %d; want %v, %d", tt.applied, got, unknown, tt.want, tt.wantUnknown)
		}
	}
}

func TestPgKind(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want failure.Kind
	}{
		{"connection refused", context.Background(), fmt.Errorf("dial: %w", refused), failure.Unavailable},
		{"connect error", context.Background(), &pgconn.ConnectError{}, failure.Unavailable},
		{"connection cut", context.Background(), io.ErrUnexpectedEOF, failure.Unavailable},
		{"deadline", context.Background(), context.DeadlineExceeded, failure.Unavailable},
		{"caller gone", canceled, errors.New("conn closed"), failure.Unavailable},
		{"disk full", context.Background(), &pgconn.PgError{Code: "53100"}, failure.Unavailable},
		{"too many connections", context.Background(), &pgconn.PgError{Code: "53300"}, failure.Unavailable},
		{"read-only", context.Background(), &pgconn.PgError{Code: "25006"}, failure.Unavailable},
		{"shutting down", context.Background(), &pgconn.PgError{Code: "57P01"}, failure.Unavailable},
		{"starting up", context.Background(), &pgconn.PgError{Code: "57P03"}, failure.Unavailable},
		{"statement timeout", context.Background(), &pgconn.PgError{Code: "57014"}, failure.Unavailable},
		{"connection failure", context.Background(), &pgconn.PgError{Code: "08006"}, failure.Unavailable},
		{"deadlock", context.Background(), &pgconn.PgError{Code: "40P01"}, failure.Unavailable},
		{"bad password", context.Background(), &pgconn.PgError{Code: "28P01"}, failure.Internal},
		{"no such database", context.Background(), &pgconn.PgError{Code: "3D000"}, failure.Internal},
		{"a bug in a statement", context.Background(), &pgconn.PgError{Code: "42601"}, failure.Internal},
		{"anything else", context.Background(), errors.New("boom"), failure.Internal},
	}
	for _, tt := range tests {
		if got := pgKind(tt.ctx, tt.err); got != tt.want {
			t.Errorf("%s: pgKind = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestListSQL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		byState, bySet, after bool
		want                  string
	}{
		{false, false, false, "SELECT " + columns + " FROM experiments ORDER BY created_at DESC, id DESC LIMIT $1"},
		{true, false, false, "SELECT " + columns + " FROM experiments WHERE state = $1 ORDER BY created_at DESC, id DESC LIMIT $2"},
		{false, false, true, "SELECT " + columns + " FROM experiments WHERE (created_at, id) < ($1, $2) ORDER BY created_at DESC, id DESC LIMIT $3"},
		{true, false, true, "SELECT " + columns + " FROM experiments WHERE state = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4"},
		{false, true, false, "SELECT " + columns + " FROM experiments WHERE set_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"},
		{true, true, true, "SELECT " + columns + " FROM experiments WHERE set_id = $1 AND state = $2 AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $5"},
	}
	for _, tt := range tests {
		if got := listSQL(tt.byState, tt.bySet, tt.after); got != tt.want {
			t.Errorf("listSQL(%v, %v, %v) =\n%s\nwant\n%s", tt.byState, tt.bySet, tt.after, got, tt.want)
		}
	}
}
