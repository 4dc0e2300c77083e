package history

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// The schema is a numbered list of SQL files per dialect,
// migrations/<dialect>/NNNN_what.sql. A change to the schema is a new file
// with the next number; a file once released is never edited, because
// databases that applied it will not apply it again.
//
//go:embed migrations
var migrationFiles embed.FS

// migration is one schema change.
type migration struct {
	Version int
	Name    string
	SQL     string
}

// schemaMigrationsSQL records which migrations a database has; the store
// creates it itself, before the numbered files.
const schemaMigrationsSQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`

// loadMigrations returns a dialect's migrations in order.
func loadMigrations(fsys fs.FS, dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations of %s: %w", dialect, err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if e.IsDir() || !ok || err != nil || v <= 0 || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s/%s: name must be NNNN_what.sql", dir, e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s of %s share version %d", prev, e.Name(), dialect, v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		// A gap means a file went missing from the build.
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations of %s: expected version %d, found %s", dialect, i+1, m.Name)
		}
	}
	return ms, nil
}

// pending returns the migrations not in applied, and the highest applied
// version unknown to this binary (a newer backend migrated the database;
// this one can still run if the change was additive), or 0.
func pending(all []migration, applied map[int]bool) (todo []migration, unknown int) {
	known := map[int]bool{}
	for _, m := range all {
		known[m.Version] = true
		if !applied[m.Version] {
			todo = append(todo, m)
		}
	}
	for v := range applied {
		if !known[v] && v > unknown {
			unknown = v
		}
	}
	return todo, unknown
}
