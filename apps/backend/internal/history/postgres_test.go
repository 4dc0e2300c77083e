package history_test

import (
	"context"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/history/historytest"
)

// TestPostgres runs the conformance suite on the PostgreSQL server named by
// GMINI_TEST_POSTGRES_DSN (`make store-test` starts one), each test in a
// schema of its own inside a database made for this run.
func TestPostgres(t *testing.T) {
	t.Parallel()
	history.PostgresDSN(t) // skips or fails without a server
	historytest.Run(t, func(t *testing.T) history.Store {
		s, err := history.Open(context.Background(), history.PostgresDSN(t), nil)
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		return s
	})
}
