package experiments

import (
	"context"

	"k8s.io/apimachinery/pkg/types"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Queues are Kueue's LocalQueues of the namespace (package queue).
type Queues interface {
	// Resolve returns the queue a POST's Job goes to: requested, else
	// the default, "" for none; an error (Invalid, Unavailable) when it
	// cannot be used.
	Resolve(ctx context.Context, requested string) (string, error)
	lifecycle.QueueDescriber
}

// Queue is the queue exp's Job goes to, "" for none, or why it cannot go
// there. Without Queues no queue is known, and a request naming one is
// refused.
func (s *Service) Queue(ctx context.Context, requested string) (string, error) {
	if s.Queues == nil {
		if requested != "" {
			return "", failure.New(failure.Invalid, "queues are not enabled in namespace %s; leave \"queue\" out", s.Spawner.Namespace)
		}
		return "", nil
	}
	return s.Queues.Resolve(ctx, requested)
}

// describeRecord adds the queue of a record's Job, found by its UID
// through the Workload Kueue made for it: records do not keep the queue,
// and once the Job is gone so is the Workload.
func (s *Service) describeRecord(ctx context.Context, rec history.Record, st *wire.Status) {
	if s.Queues == nil || rec.JobUID == "" || history.Final(rec.State) {
		return
	}
	st.Queue = s.Queues.Describe(ctx, "", types.UID(rec.JobUID), rec.State == state.Queued)
}
