package history

import (
	"context"
	"errors"
	"sync"
	"time"
)

// groupCommit runs the writes of concurrent callers together, in one
// transaction at a time (group commit): while one transaction runs, the
// writes that arrive wait, and the next transaction takes all of them. A
// commit costs about the same for one write as for twenty (SQLite appends
// each changed page to its WAL once per commit, and the new records share
// pages), so under load the cost per write falls, and an idle store adds
// no wait: a lone write starts at once.
//
// A write that can wait (progress, which the recorder writes; see later)
// is held for up to linger, so that it rides along with the next write
// that cannot (a POST's claim) instead of paying for a commit of its own.
//
// A write is a function of the transaction (T: *sql.Tx, pgx.Tx) that may
// run more than once: if any write of a transaction fails, or its commit
// does, the transaction is rolled back and each of its writes runs again
// in a transaction of its own, so each caller gets its own outcome and one
// bad write never fails another's.
type groupCommit[T any] struct {
	// inTx runs fn in one transaction and commits it; an error from fn
	// or from the commit rolls everything back. With durable the commit
	// returns only once it would survive a power loss.
	inTx   func(ctx context.Context, durable bool, fn func(T) error) error
	max    int
	linger time.Duration
	queue  chan *pendingWrite[T]

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

type pendingWrite[T any] struct {
	later   bool // may wait for another write's transaction
	durable bool // its commit must survive a power loss
	ctx     context.Context
	fn      func(ctx context.Context, tx T) error
	done    chan error // buffered: the writer never waits for a caller
}

// errStoreClosed answers writes made after Close.
var errStoreClosed = errors.New("history: the store is closed")

// newGroupCommit starts the writer; at most maxBatch writes share a
// transaction, and a write made with later waits at most linger.
func newGroupCommit[T any](maxBatch int, linger time.Duration, inTx func(context.Context, bool, func(T) error) error) *groupCommit[T] {
	g := &groupCommit[T]{
		inTx:   inTx,
		max:    maxBatch,
		linger: linger,
		queue:  make(chan *pendingWrite[T], maxBatch),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go g.loop()
	return g
}

// do runs fn in a transaction shared with other writes and returns once it
// is committed or failed. If ctx ends first, do returns ctx's error while
// the write may still commit: every write of the store is idempotent, so
// the caller's retry does no harm.
func (g *groupCommit[T]) do(ctx context.Context, fn func(ctx context.Context, tx T) error) error {
	return g.write(ctx, &pendingWrite[T]{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// durable is do for a write whose commit must survive a power loss, not
// only a crash of the process: the transaction it shares is made durable.
func (g *groupCommit[T]) durable(ctx context.Context, fn func(ctx context.Context, tx T) error) error {
	return g.write(ctx, &pendingWrite[T]{durable: true, ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// later is do for a write that may wait up to linger for the transaction
// of a write that cannot.
func (g *groupCommit[T]) later(ctx context.Context, fn func(ctx context.Context, tx T) error) error {
	return g.write(ctx, &pendingWrite[T]{later: true, ctx: ctx, fn: fn, done: make(chan error, 1)})
}

func (g *groupCommit[T]) write(ctx context.Context, w *pendingWrite[T]) error {
	select {
	case g.queue <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.stop:
		return errStoreClosed
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		// The writer answers all it took before it ends; a write
		// queued after its last look is never taken.
		select {
		case err := <-w.done:
			return err
		default:
			return errStoreClosed
		}
	}
}

// close lets the writer finish what is queued and waits for it.
func (g *groupCommit[T]) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
}

func (g *groupCommit[T]) loop() {
	defer close(g.done)
	var held []*pendingWrite[T] // writes that can wait, waiting
	var timer *time.Timer
	var expired <-chan time.Time
	for {
		var batch []*pendingWrite[T]
		stopping := false
		select {
		case w := <-g.queue:
			if w.later && len(held)+1 < g.max {
				held = append(held, w)
				if expired == nil {
					timer = time.NewTimer(g.linger)
					expired = timer.C
				}
				continue
			}
			batch = append(held, w)
		case <-expired:
			batch = held
		case <-g.stop:
			// Everything handed over before the stop is still written.
			batch, stopping = held, true
		}
		held = nil
		if timer != nil {
			timer.Stop()
			timer, expired = nil, nil
		}
	fill:
		for len(batch) < g.max || stopping {
			select {
			case w := <-g.queue:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		g.commit(batch)
		if stopping {
			return
		}
	}
}

// commit runs batch in one transaction, or, if that fails and there was
// more than one write, each write alone.
func (g *groupCommit[T]) commit(batch []*pendingWrite[T]) {
	// Callers that gave up while queued are not written.
	live := batch[:0]
	for _, w := range batch {
		if err := w.ctx.Err(); err != nil {
			w.done <- err
			continue
		}
		live = append(live, w)
	}
	if len(live) == 0 {
		return
	}
	// The transaction itself is not bound to one caller's context: one
	// caller giving up must not roll back the others' writes.
	ctx := context.Background()
	durable := false
	for _, w := range live {
		durable = durable || w.durable
	}
	err := g.inTx(ctx, durable, func(tx T) error {
		for _, w := range live {
			if err := w.fn(w.ctx, tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(live) == 1 {
		for _, w := range live {
			w.done <- err
		}
		return
	}
	for _, w := range live {
		w.done <- g.inTx(ctx, w.durable, func(tx T) error { return w.fn(w.ctx, tx) })
	}
}
