package history

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The webhook outbox on PostgreSQL (outbox.go). Its writes commit without
// waiting for the WAL's flush, like claims and progress: what a crash of the
// server loses is redone (an event turned into deliveries again, an
// attempt made again), which at least once allows.

func (s *pgStore) OutboxCursor(ctx context.Context) (int64, error) {
	if _, err := s.fast.Exec(ctx, initCursorSQL); err != nil {
		return 0, s.fail(ctx, err, "read the webhook cursor", "")
	}
	var seq int64
	if err := s.fast.QueryRow(ctx, cursorSQL).Scan(&seq); err != nil {
		return 0, s.fail(ctx, err, "read the webhook cursor", "")
	}
	return seq, nil
}

func (s *pgStore) OutboxEvents(ctx context.Context, after int64, limit int) ([]OutboxEvent, error) {
	if err := checkBatch(limit, MaxEventBatch, "event"); err != nil {
		return nil, err
	}
	rows, err := s.fast.Query(ctx, outboxEventsSQL, after, limit)
	if err != nil {
		return nil, s.fail(ctx, err, "read the events to deliver", "")
	}
	defer rows.Close()
	evs, err := readOutboxEvents(rows)
	if err != nil {
		return nil, s.fail(ctx, err, "read the events to deliver", "")
	}
	return evs, nil
}

// errCursorMoved rolls back AddDeliveries' transaction.
var errCursorMoved = errors.New("the webhook cursor moved")

func (s *pgStore) AddDeliveries(ctx context.Context, from, to int64, ds []NewDelivery, at time.Time) (bool, error) {
	if err := checkNewDeliveries(from, to, ds); err != nil {
		return false, err
	}
	err := pgx.BeginFunc(ctx, s.fast, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, moveCursorSQL, from, to)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errCursorMoved
		}
		var b pgx.Batch
		for _, d := range ds {
			b.Queue(addDeliverySQL, d.Experiment, d.Seq, d.Kind, cleanText(d.Target), dbTime(at))
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	switch {
	case errors.Is(err, errCursorMoved):
		return false, nil
	case err != nil:
		return false, s.fail(ctx, err, "create webhook deliveries", "")
	}
	return true, nil
}

func (s *pgStore) LeaseDeliveries(ctx context.Context, now, until time.Time, limit int) ([]Delivery, error) {
	if err := checkBatch(limit, MaxDeliveryLease, "delivery"); err != nil {
		return nil, err
	}
	rows, err := s.fast.Query(ctx, leaseSQL, dbTime(now), dbTime(until), limit)
	if err != nil {
		return nil, s.fail(ctx, err, "lease webhook deliveries", "")
	}
	ds, err := readDeliveries(rows, false)
	rows.Close()
	if err != nil {
		return nil, s.fail(ctx, err, "lease webhook deliveries", "")
	}
	if len(ds) == 0 {
		return nil, nil
	}
	args := seqArgs(ds)
	rows, err = s.fast.Query(ctx, eventsBySeqSQL(len(args)), args...)
	if err != nil {
		return nil, s.fail(ctx, err, "read the events of webhook deliveries", "")
	}
	defer rows.Close()
	evs, err := readEvents(rows)
	if err != nil {
		return nil, s.fail(ctx, err, "read the events of webhook deliveries", "")
	}
	return withEvents(ds, evs), nil
}

func (s *pgStore) RecordAttempt(ctx context.Context, a Attempt) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	if _, err := s.fast.Exec(ctx, attemptSQL, s.d.attemptArgs(a)...); err != nil {
		return s.fail(ctx, err, "record a webhook attempt", "")
	}
	return nil
}

func (s *pgStore) Deliveries(ctx context.Context, id string) ([]Delivery, error) {
	rows, err := s.fast.Query(ctx, deliveriesSQL, id)
	if err != nil {
		return nil, s.fail(ctx, err, "read the webhook deliveries of", id)
	}
	defer rows.Close()
	ds, err := readDeliveries(rows, true)
	if err != nil {
		return nil, s.fail(ctx, err, "read the webhook deliveries of", id)
	}
	return ds, nil
}

func (s *pgStore) PendingDeliveries(ctx context.Context) (int64, error) {
	var n int64
	if err := s.fast.QueryRow(ctx, pendingSQL).Scan(&n); err != nil {
		return 0, s.fail(ctx, err, "count pending webhook deliveries", "")
	}
	return n, nil
}
