package experiments

import (
	"context"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/webhook"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// NotifyPolicy admits notify URLs (webhook.Config).
type NotifyPolicy interface {
	// Admit returns an Invalid error naming the allowed hosts when a URL
	// of urls is not allowed.
	Admit(urls []string) error
}

// admitNotify checks a POST's notify URLs before anything is claimed or
// created: a refusal leaves nothing behind.
func (s *Service) admitNotify(urls []string) error {
	switch {
	case len(urls) == 0:
		return nil
	case s.Notify == nil:
		return failure.New(failure.Invalid, `"notify" is not enabled: the backend's webhooks file (--webhooks-file) has no allowNotify; leave "notify" out`)
	case s.History == nil:
		return failure.New(failure.Invalid, `"notify" needs the history (--history-dsn), where deliveries are kept; leave "notify" out`)
	}
	return s.Notify.Admit(urls)
}

// deliveriesTimeout bounds the read of an experiment's deliveries.
const deliveriesTimeout = 2 * time.Second

// deliveries are the webhook deliveries of experiment id, best effort: a
// status is still answered when they cannot be read.
func (s *Service) deliveries(ctx context.Context, id string) []wire.Delivery {
	if s.History == nil {
		return nil
	}
	// Bounded on its own: a live Job's status must not wait for a
	// database that does not answer.
	ctx, cancel := context.WithTimeout(ctx, deliveriesTimeout)
	defer cancel()
	ds, err := s.History.Deliveries(ctx, id)
	if err != nil {
		s.log().Debug("read the webhook deliveries of an experiment", "id", id, "err", err)
		return nil
	}
	out := make([]wire.Delivery, 0, len(ds))
	for _, d := range ds {
		w := wire.Delivery{Kind: d.Kind, Target: d.Target, Event: d.Seq, EventState: d.Event.State, State: d.State,
			Attempts: d.Attempts, LastCode: d.LastCode, LastError: d.LastError, DoneAt: d.DoneAt}
		if d.Kind == history.DeliveryNotify {
			// The query or credentials may carry a token.
			w.Target = webhook.Redact(d.Target)
		}
		if d.State == history.DeliveryPending {
			next := d.NextAt
			w.NextAttempt = &next
		}
		out = append(out, w)
	}
	return out
}
