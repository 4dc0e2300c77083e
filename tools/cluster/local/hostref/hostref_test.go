package hostref

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// step is one call on a fresh Tx; alive lists the users whose cluster
// still exists, for Release.
type step struct {
	acquire bool
	user    string
	present bool     // Acquire: the host has the resource
	alive   []string // Release
	want    bool     // add for Acquire, remove for Release
}

func TestAcquireRelease(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "one cluster adds and removes",
			steps: []step{
				{acquire: true, user: "a", want: true},
				{user: "a", want: true},
			},
		},
		{
			name: "there before the first cluster: never removed",
			steps: []step{
				{acquire: true, user: "a", present: true},
				{user: "a"},
			},
		},
		{
			name: "the last of two removes it",
			steps: []step{
				{acquire: true, user: "a", want: true},
				{acquire: true, user: "b", present: true},
				{user: "a", alive: []string{"b"}},
				{user: "b", want: true},
			},
		},
		{
			name: "a crashed cluster's record does not keep it",
			steps: []step{
				{acquire: true, user: "a", want: true},
				{acquire: true, user: "b", present: true},
				{user: "a", want: true}, // b's cluster is gone
			},
		},
		{
			name: "a live cluster keeps it after a crashed one is released",
			steps: []step{
				{acquire: true, user: "a", want: true},
				{acquire: true, user: "b", present: true},
				{user: "a", alive: []string{"b"}},
				{acquire: true, user: "c", present: true},
				{user: "c", alive: []string{"b"}},
				{user: "b", want: true},
			},
		},
		{
			name: "release without acquire: nothing to remove",
			steps: []step{
				{user: "a"},
			},
		},
		{
			name: "released twice: removed once",
			steps: []step{
				{acquire: true, user: "a", want: true},
				{user: "a", want: true},
				{user: "a"},
			},
		},
		{
			name: "gone again and re-added by a later cluster",
			steps: []step{
				{acquire: true, user: "a", present: true},
				{user: "a"},
				{acquire: true, user: "b", want: true},
				{user: "b", want: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "gmini")
			for i, s := range tt.steps {
				var got bool
				err := Update(dir, func(tx *Tx) (err error) {
					if s.acquire {
						got, err = tx.Acquire("route", s.user, s.present)
					} else {
						got, err = tx.Release("route", s.user, func(u string) bool { return slices.Contains(s.alive, u) })
					}
					return err
				})
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want {
					t.Errorf("step %d (%+v) = %v, want %v", i, s, got, s.want)
				}
			}
			// Every sequence ends with no user: nothing may stay.
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				entries, _ := os.ReadDir(dir)
				t.Errorf("records left after the last release: %v (%v)", entries, err)
			}
		})
	}
}

// TestLockExcludes checks that two holders never overlap, also while
// Close removes and Lock re-creates the directory.
func TestLockExcludes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "gmini")
	var mu sync.Mutex
	holders, maxHolders := 0, 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				tx, err := Lock(dir)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				holders++
				maxHolders = max(maxHolders, holders)
				mu.Unlock()
				time.Sleep(10 * time.Microsecond) // give an overlap the chance to show
				mu.Lock()
				holders--
				mu.Unlock()
				if err := tx.Close(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if maxHolders != 1 {
		t.Errorf("%d holders at once, want 1", maxHolders)
	}
}
