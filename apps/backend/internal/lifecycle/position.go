package lifecycle

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// QueuePosition is where experiment id waits while it is Queued, with its
// position known: read from the Watch's copy of its Job and the queue's
// cached positions, so that asking every few seconds for every followed
// experiment costs the API server nothing beyond one visibility call per
// LocalQueue per PositionTTL. ok is false when the experiment is not
// Queued, or its position is not known (no Watch or queues, the Watch not
// synced yet, Kueue's visibility API not answering).
func (s *Store) QueuePosition(ctx context.Context, id string) (q *wire.Queue, ok bool) {
	if s.Watch == nil || s.Queues == nil {
		return nil, false
	}
	job := s.Watch.job(s.Namespace, jobspec.JobName(id))
	if owner, owned := jobspec.Owns(job); !owned || owner != id {
		return nil, false
	}
	return s.positionOf(ctx, job)
}

// SetQueuePositions are the positions of experiment set set's Queued
// items, by experiment ID, read as QueuePosition reads one: items whose
// position is not known are left out.
func (s *Store) SetQueuePositions(ctx context.Context, set string) map[string]*wire.Queue {
	if s.Watch == nil || s.Queues == nil {
		return nil
	}
	jobs, _ := s.Watch.jobsOfSet(set)
	out := map[string]*wire.Queue{}
	for _, job := range jobs {
		id, owned := jobspec.Owns(job)
		if !owned {
			continue
		}
		if q, ok := s.positionOf(ctx, job); ok {
			out[id] = q
		}
	}
	return out
}

func (s *Store) positionOf(ctx context.Context, job *batchv1.Job) (*wire.Queue, bool) {
	st := FromJob(job)
	if st.State != StateQueued || st.Queue == nil {
		return nil, false
	}
	q := s.Queues.Describe(ctx, st.Queue.Name, job.UID, true)
	return q, q != nil && q.Position != nil
}
