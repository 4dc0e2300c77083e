package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

// leaseName is the Lease the replicas compete for to record history.
const leaseName = "gmini-backend-recorder"

// lazyStore opens the history database in the background and keeps trying
// until it succeeds, so the backend starts, serves live Jobs and answers
// /healthz while its database is unreachable; until then every store call
// fails as Unavailable (a POST answers 503 with Retry-After) with the last
// reason.
type lazyStore struct {
	mu     sync.Mutex
	store  history.Store
	err    error
	closed bool
}

// openRetry bounds the wait between two attempts to open the database.
const openRetry = 5 * time.Second

func openHistory(ctx context.Context, dsn, namespace string, log *slog.Logger) *lazyStore {
	l := &lazyStore{err: failure.New(failure.Unavailable, "the history database is not connected yet")}
	go func() {
		wait := 250 * time.Millisecond
		for attempt := 1; ; attempt++ {
			st, err := history.Open(ctx, dsn, log)
			if err == nil {
				// Another namespace's database is a misconfiguration, not
				// an outage, but it is retried all the same: fixing it
				// (a new DSN in the Secret) needs no restart then.
				if err = st.Own(ctx, namespace); err != nil {
					st.Close()
					st = nil
				}
			}
			l.mu.Lock()
			if l.closed {
				l.mu.Unlock()
				if st != nil {
					st.Close()
				}
				return
			}
			l.store, l.err = st, err
			l.mu.Unlock()
			if err == nil {
				log.Info("history database open", "attempts", attempt)
				return
			}
			if attempt == 1 || attempt%10 == 0 {
				log.Warn("cannot open the history database; POST /experiment answers 503 until it opens", "attempts", attempt, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, openRetry)
		}
	}()
	return l
}

func (l *lazyStore) get() (history.Store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store == nil {
		return nil, failure.Wrap(failure.Unavailable, l.err, "history database not open")
	}
	return l.store, nil
}

func (l *lazyStore) Claim(ctx context.Context, rec history.Record) (history.Record, bool, error) {
	s, err := l.get()
	if err != nil {
		return history.Record{}, false, err
	}
	return s.Claim(ctx, rec)
}

func (l *lazyStore) Unclaim(ctx context.Context, id, hash string) (bool, error) {
	s, err := l.get()
	if err != nil {
		return false, err
	}
	return s.Unclaim(ctx, id, hash)
}

func (l *lazyStore) Update(ctx context.Context, rec history.Record) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Update(ctx, rec)
}

func (l *lazyStore) Finish(ctx context.Context, rec history.Record, logs []byte) (history.Record, error) {
	s, err := l.get()
	if err != nil {
		return history.Record{}, err
	}
	return s.Finish(ctx, rec, logs)
}

func (l *lazyStore) Get(ctx context.Context, id string) (history.Record, error) {
	s, err := l.get()
	if err != nil {
		return history.Record{}, err
	}
	return s.Get(ctx, id)
}

func (l *lazyStore) Logs(ctx context.Context, id string) ([]byte, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Logs(ctx, id)
}

func (l *lazyStore) List(ctx context.Context, opts history.ListOptions) (history.Page, error) {
	s, err := l.get()
	if err != nil {
		return history.Page{}, err
	}
	return s.List(ctx, opts)
}

func (l *lazyStore) CountSet(ctx context.Context, set string) (map[string]int, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.CountSet(ctx, set)
}

func (l *lazyStore) Events(ctx context.Context, q history.EventQuery) ([]history.Event, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Events(ctx, q)
}

func (l *lazyStore) LastEvent(ctx context.Context) (int64, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.LastEvent(ctx)
}

func (l *lazyStore) OutboxCursor(ctx context.Context) (int64, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.OutboxCursor(ctx)
}

func (l *lazyStore) OutboxEvents(ctx context.Context, after int64, limit int) ([]history.OutboxEvent, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.OutboxEvents(ctx, after, limit)
}

func (l *lazyStore) AddDeliveries(ctx context.Context, from, to int64, ds []history.NewDelivery, at time.Time) (bool, error) {
	s, err := l.get()
	if err != nil {
		return false, err
	}
	return s.AddDeliveries(ctx, from, to, ds, at)
}

func (l *lazyStore) LeaseDeliveries(ctx context.Context, now, until time.Time, limit int) ([]history.Delivery, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.LeaseDeliveries(ctx, now, until, limit)
}

func (l *lazyStore) RecordAttempt(ctx context.Context, a history.Attempt) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.RecordAttempt(ctx, a)
}

func (l *lazyStore) Deliveries(ctx context.Context, id string) ([]history.Delivery, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Deliveries(ctx, id)
}

func (l *lazyStore) PendingDeliveries(ctx context.Context) (int64, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.PendingDeliveries(ctx)
}

func (l *lazyStore) Expire(ctx context.Context, cutoff time.Time) (int64, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.Expire(ctx, cutoff)
}

func (l *lazyStore) Own(ctx context.Context, namespace string) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Own(ctx, namespace)
}

func (l *lazyStore) Ping(ctx context.Context) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Ping(ctx)
}

func (l *lazyStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.store == nil {
		return nil
	}
	return l.store.Close()
}
