package history_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/history/historytest"
)

// TestSQLite runs the conformance suite on SQLite files, one per test.
func TestSQLite(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	historytest.Run(t, func(t *testing.T) history.Store {
		s, err := history.Open(context.Background(), "sqlite:"+filepath.Join(root, history.DBKey(t), "history.db"), nil)
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		return s
	})
}
