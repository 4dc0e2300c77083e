package history

import (
	"context"
	"database/sql"
	"time"
)

// The webhook outbox on SQLite (outbox.go): writes through the writer's
// group commit, reads from the readers.

func (s *sqliteStore) OutboxCursor(ctx context.Context) (int64, error) {
	var seq int64
	err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, initCursorSQL); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, cursorSQL).Scan(&seq)
	})
	if err != nil {
		return 0, s.fail(ctx, err, "read the webhook cursor", "")
	}
	return seq, nil
}

func (s *sqliteStore) OutboxEvents(ctx context.Context, after int64, limit int) ([]OutboxEvent, error) {
	if err := checkBatch(limit, MaxEventBatch, "event"); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, outboxEventsSQL, after, limit)
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

func (s *sqliteStore) AddDeliveries(ctx context.Context, from, to int64, ds []NewDelivery, at time.Time) (bool, error) {
	if err := checkNewDeliveries(from, to, ds); err != nil {
		return false, err
	}
	created := s.d.timeArg(dbTime(at))
	var moved bool
	err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		moved = false // the write may run again, in a transaction of its own
		res, err := tx.ExecContext(ctx, moveCursorSQL, from, to)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		for _, d := range ds {
			if _, err := tx.ExecContext(ctx, addDeliverySQL, d.Experiment, d.Seq, d.Kind, cleanText(d.Target), created); err != nil {
				return err
			}
		}
		moved = true
		return nil
	})
	if err != nil {
		return false, s.fail(ctx, err, "create webhook deliveries", "")
	}
	return moved, nil
}

func (s *sqliteStore) LeaseDeliveries(ctx context.Context, now, until time.Time, limit int) ([]Delivery, error) {
	if err := checkBatch(limit, MaxDeliveryLease, "delivery"); err != nil {
		return nil, err
	}
	var ds []Delivery
	err := s.writes.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, leaseSQL, s.d.timeArg(dbTime(now)), s.d.timeArg(dbTime(until)), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		ds, err = readDeliveries(rows, false)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, err, "lease webhook deliveries", "")
	}
	if len(ds) == 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, eventsBySeqSQL(len(seqArgs(ds))), seqArgs(ds)...)
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

func (s *sqliteStore) RecordAttempt(ctx context.Context, a Attempt) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	args := s.d.attemptArgs(a)
	err := s.writes.later(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, attemptSQL, args...)
		return err
	})
	if err != nil {
		return s.fail(ctx, err, "record a webhook attempt", "")
	}
	return nil
}

func (s *sqliteStore) Deliveries(ctx context.Context, id string) ([]Delivery, error) {
	rows, err := s.r.QueryContext(ctx, deliveriesSQL, id)
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

func (s *sqliteStore) PendingDeliveries(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, pendingSQL).Scan(&n); err != nil {
		return 0, s.fail(ctx, err, "count pending webhook deliveries", "")
	}
	return n, nil
}
