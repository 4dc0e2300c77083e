package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeDB stands in for a database: a transaction is a list of the writes
// made in it, kept only if it commits.
type fakeDB struct {
	mu        sync.Mutex
	committed []string
	txs       int
	durable   []bool // per transaction, whether it was asked to be durable
	failTx    int    // the transaction with this number (1-based) fails to commit
	hold      chan struct{}
}

type fakeTx struct{ writes []string }

func (db *fakeDB) inTx(_ context.Context, durable bool, fn func(*fakeTx) error) error {
	db.mu.Lock()
	db.txs++
	db.durable = append(db.durable, durable)
	n := db.txs
	hold := db.hold
	db.mu.Unlock()
	if hold != nil && n == 1 {
		<-hold // the first transaction runs until the test lets it go
	}
	tx := &fakeTx{}
	if err := fn(tx); err != nil {
		return err
	}
	if n == db.failTx {
		return errors.New("commit failed")
	}
	db.mu.Lock()
	db.committed = append(db.committed, tx.writes...)
	db.mu.Unlock()
	return nil
}

func write(name string, err error) func(context.Context, *fakeTx) error {
	return func(_ context.Context, tx *fakeTx) error {
		if err != nil {
			return err
		}
		tx.writes = append(tx.writes, name)
		return nil
	}
}

// queueBehindFirst makes one write that holds the first transaction open,
// then n writes that queue behind it, and returns their results once all
// are answered.
func queueBehindFirst(t *testing.T, db *fakeDB, g *groupCommit[*fakeTx], fns []func(context.Context, *fakeTx) error, ctxs []context.Context) []error {
	t.Helper()
	first := make(chan error, 1)
	go func() { first <- g.do(context.Background(), write("first", nil)) }()
	waitFor(t, func() bool { db.mu.Lock(); defer db.mu.Unlock(); return db.txs == 1 })
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		ctx := context.Background()
		if ctxs != nil && ctxs[i] != nil {
			ctx = ctxs[i]
		}
		wg.Go(func() { errs[i] = g.do(ctx, fn) })
	}
	waitFor(t, func() bool { return len(g.queue) == len(fns) })
	close(db.hold)
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	wg.Wait()
	return errs
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupCommit(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	boom := errors.New("constraint failed")
	tests := []struct {
		name          string
		fns           []func(context.Context, *fakeTx) error
		ctxs          []context.Context
		failTx        int
		wantErrs      []error
		wantCommitted []string
		wantTxs       int
	}{{
		name:          "writes queued behind a transaction share the next one",
		fns:           []func(context.Context, *fakeTx) error{write("a", nil), write("b", nil), write("c", nil)},
		wantErrs:      []error{nil, nil, nil},
		wantCommitted: []string{"first", "a", "b", "c"},
		wantTxs:       2,
	}, {
		name:          "a failing write is answered alone and the others still commit",
		fns:           []func(context.Context, *fakeTx) error{write("a", nil), write("bad", boom), write("c", nil)},
		wantErrs:      []error{nil, boom, nil},
		wantCommitted: []string{"first", "a", "c"},
		wantTxs:       2 + 3, // the shared one, rolled back, then each alone
	}, {
		name:          "a failed commit is retried write by write",
		fns:           []func(context.Context, *fakeTx) error{write("a", nil), write("b", nil)},
		failTx:        2,
		wantErrs:      []error{nil, nil},
		wantCommitted: []string{"first", "a", "b"},
		wantTxs:       2 + 2,
	}, {
		name:          "a caller that gave up while queued is not written",
		fns:           []func(context.Context, *fakeTx) error{write("a", nil), write("gone", nil)},
		ctxs:          []context.Context{nil, cancelled},
		wantErrs:      []error{nil, context.Canceled},
		wantCommitted: []string{"first", "a"},
		wantTxs:       2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := &fakeDB{hold: make(chan struct{}), failTx: tt.failTx}
			g := newGroupCommit(64, time.Hour, db.inTx)
			defer g.close()
			// A cancelled caller never gets into the queue; queue it by
			// hand so the writer meets it there.
			var fns []func(context.Context, *fakeTx) error
			var ctxs []context.Context
			var late []int
			for i, fn := range tt.fns {
				if tt.ctxs != nil && tt.ctxs[i] != nil {
					late = append(late, i)
					continue
				}
				fns = append(fns, fn)
				ctxs = append(ctxs, nil)
			}
			lateDone := make([]chan error, len(late))
			for j, i := range late {
				lateDone[j] = make(chan error, 1)
				g.queue <- &pendingWrite[*fakeTx]{ctx: tt.ctxs[i], fn: tt.fns[i], done: lateDone[j]}
			}
			got := queueBehindFirst(t, db, g, fns, ctxs)
			k := 0
			for i := range tt.fns {
				var err error
				if j := slices.Index(late, i); j >= 0 {
					err = <-lateDone[j]
				} else {
					err = got[k]
					k++
				}
				if !errors.Is(err, tt.wantErrs[i]) {
					t.Errorf("write %d: err %v, want %v", i, err, tt.wantErrs[i])
				}
			}
			db.mu.Lock()
			defer db.mu.Unlock()
			if !slices.Equal(sortedCopy(db.committed), sortedCopy(tt.wantCommitted)) {
				t.Errorf("committed %v, want %v", db.committed, tt.wantCommitted)
			}
			if db.txs != tt.wantTxs {
				t.Errorf("%d transactions, want %d", db.txs, tt.wantTxs)
			}
		})
	}
}

func TestGroupCommitClosed(t *testing.T) {
	db := &fakeDB{}
	g := newGroupCommit(4, time.Hour, db.inTx)
	if err := g.do(context.Background(), write("a", nil)); err != nil {
		t.Fatal(err)
	}
	g.close()
	if err := g.do(context.Background(), write("b", nil)); !errors.Is(err, errStoreClosed) {
		t.Errorf("write after close: %v, want %v", err, errStoreClosed)
	}
	if fmt.Sprint(db.committed) != "[a]" {
		t.Errorf("committed %v, want [a]", db.committed)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestGroupCommitLater(t *testing.T) {
	t.Run("a write that can wait rides along with the next one that cannot", func(t *testing.T) {
		db := &fakeDB{}
		g := newGroupCommit(64, time.Hour, db.inTx)
		defer g.close()
		later := holdLater(t, g, write("progress", nil))
		time.Sleep(10 * time.Millisecond) // held, not committed
		db.mu.Lock()
		txs := db.txs
		db.mu.Unlock()
		if txs != 0 {
			t.Fatalf("%d transactions before any write that cannot wait", txs)
		}
		if err := g.do(context.Background(), write("claim", nil)); err != nil {
			t.Fatal(err)
		}
		if err := <-later; err != nil {
			t.Fatal(err)
		}
		if db.txs != 1 || !slices.Equal(sortedCopy(db.committed), []string{"claim", "progress"}) {
			t.Errorf("%d transactions committing %v, want 1 with claim and progress", db.txs, db.committed)
		}
	})
	t.Run("alone, it waits no longer than linger", func(t *testing.T) {
		db := &fakeDB{}
		g := newGroupCommit(64, 20*time.Millisecond, db.inTx)
		defer g.close()
		start := time.Now()
		if err := g.later(context.Background(), write("progress", nil)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 20*time.Millisecond || d > 5*time.Second {
			t.Errorf("committed after %s, want after the linger of 20ms", d)
		}
		if db.txs != 1 {
			t.Errorf("%d transactions, want 1", db.txs)
		}
	})
	t.Run("close writes what waits", func(t *testing.T) {
		db := &fakeDB{}
		g := newGroupCommit(64, time.Hour, db.inTx)
		later := holdLater(t, g, write("progress", nil))
		g.close()
		if err := <-later; err != nil {
			t.Errorf("held write at close: %v", err)
		}
		if !slices.Equal(db.committed, []string{"progress"}) {
			t.Errorf("committed %v, want [progress]", db.committed)
		}
	})
}

// holdLater hands the writer a write that can wait, as later does, and
// returns once the writer holds it.
func holdLater(t *testing.T, g *groupCommit[*fakeTx], fn func(context.Context, *fakeTx) error) chan error {
	t.Helper()
	done := make(chan error, 1)
	g.queue <- &pendingWrite[*fakeTx]{later: true, ctx: context.Background(), fn: fn, done: done}
	waitFor(t, func() bool { return len(g.queue) == 0 })
	return done
}

func TestGroupCommitDurable(t *testing.T) {
	db := &fakeDB{hold: make(chan struct{})}
	g := newGroupCommit(64, time.Hour, db.inTx)
	defer g.close()
	fns := []func(context.Context, *fakeTx) error{write("claim", nil), write("final", nil)}
	first := make(chan error, 1)
	go func() { first <- g.do(context.Background(), write("first", nil)) }()
	waitFor(t, func() bool { db.mu.Lock(); defer db.mu.Unlock(); return db.txs == 1 })
	errs := make(chan error, 2)
	go func() { errs <- g.do(context.Background(), fns[0]) }()
	go func() { errs <- g.durable(context.Background(), fns[1]) }()
	waitFor(t, func() bool { return len(g.queue) == 2 })
	close(db.hold)
	for range 3 {
		select {
		case err := <-first:
			if err != nil {
				t.Fatal(err)
			}
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if !slices.Equal(db.durable, []bool{false, true}) {
		t.Errorf("durable per transaction %v, want [false true]: the one with the durable write is durable", db.durable)
	}
}
