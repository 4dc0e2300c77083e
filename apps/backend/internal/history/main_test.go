package history

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresEnv names the server the PostgreSQL tests use; `make store-test`
// starts one and sets it.
const postgresEnv = "GMINI_TEST_POSTGRES_DSN"

// testDB is the database this test binary creates on that server, so that
// runs never share tables; TestMain drops it.
var testDB struct {
	once sync.Once
	dsn  string // of the created database
	name string
	err  error

	// CREATE SCHEMA IF NOT EXISTS is not safe against itself running
	// concurrently (a test opening two stores at once), so schemas are
	// made one at a time, once.
	mu      sync.Mutex
	schemas map[string]bool
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testDB.name != "" {
		if err := dropDatabase(testDB.name); err != nil {
			fmt.Fprintf(os.Stderr, "drop test database %s: %v\n", testDB.name, err)
			code = 1
		}
	}
	os.Exit(code)
}

// dbKeys maps each test to its key; keyed by the test itself, not its
// name, since -count runs a test again under the same name.
var (
	dbKeys   sync.Map // testing.TB → string
	dbKeySeq atomic.Int64
)

// DBKey names tb's own database or schema: tests and subtests get
// distinct ones, and the same test the same one when it opens again.
func DBKey(tb testing.TB) string {
	if k, ok := dbKeys.Load(tb); ok {
		return k.(string)
	}
	sum := sha256.Sum256([]byte(tb.Name()))
	k, _ := dbKeys.LoadOrStore(tb, fmt.Sprintf("t_%s_%d", hex.EncodeToString(sum[:8]), dbKeySeq.Add(1)))
	return k.(string)
}

// PostgresDSN returns a DSN whose search_path is a schema of tb's own,
// created if missing, in this run's database. Without a server it skips
// under -short and fails otherwise: under `make test` a suite that cannot
// run must say so.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(postgresEnv)
	if base == "" {
		if testing.Short() {
			tb.Skipf("%s is not set; `make store-test` runs this against a real PostgreSQL", postgresEnv)
		}
		tb.Fatalf("%s is not set: run `make store-test`, which starts a PostgreSQL server and runs these tests against it", postgresEnv)
	}
	testDB.once.Do(func() { testDB.dsn, testDB.name, testDB.err = createDatabase(base) })
	if testDB.err != nil {
		tb.Fatalf("create the test database on %s: %v", postgresEnv, testDB.err)
	}
	schema := DBKey(tb)
	testDB.mu.Lock()
	if !testDB.schemas[schema] {
		if err := adminExec(testDB.dsn, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			testDB.mu.Unlock()
			tb.Fatalf("create schema %s: %v", schema, err)
		}
		if testDB.schemas == nil {
			testDB.schemas = map[string]bool{}
		}
		testDB.schemas[schema] = true
	}
	testDB.mu.Unlock()
	u, err := url.Parse(testDB.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func createDatabase(base string) (dsn, name string, err error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", "", fmt.Errorf("%s must be a postgres:// URL: %w", postgresEnv, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name = fmt.Sprintf("gmini_history_test_%d_%s", os.Getpid(), hex.EncodeToString(b))
	if err := adminExec(base, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", "", err
	}
	u.Path = "/" + name
	return u.String(), name, nil
}

func dropDatabase(name string) error {
	return adminExec(os.Getenv(postgresEnv), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func adminExec(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
