package queue

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// minAdmissions is how many recent admissions an estimate needs: fewer
// say too little about a rate.
const minAdmissions = 3

// rates remembers when Kueue admitted each LocalQueue's Workloads over
// the last window. They are noted as the Workload informer sees them, not
// read back from the cache, because a finished Job (and its Workload) is
// often deleted within the window (60 s TTL in dev).
type rates struct {
	window time.Duration

	mu      sync.Mutex
	byQueue map[string]*admissions
}

type admissions struct {
	times []time.Time // sorted
	// seen keeps each Workload's admission noted, so the informer's
	// updates and resyncs of one Workload count once; a Workload evicted
	// and admitted again counts again.
	seen map[types.UID]time.Time
}

func newRates(window time.Duration) *rates {
	return &rates{window: window, byQueue: map[string]*admissions{}}
}

// observe notes that Workload uid of LocalQueue queue was admitted at t.
func (r *rates) observe(queue string, uid types.UID, t, now time.Time) {
	if queue == "" || now.Sub(t) > r.window {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.byQueue[queue]
	if a == nil {
		a = &admissions{seen: map[types.UID]time.Time{}}
		r.byQueue[queue] = a
	}
	if prev, ok := a.seen[uid]; ok && prev.Equal(t) {
		return
	}
	a.seen[uid] = t
	i, _ := slices.BinarySearchFunc(a.times, t, func(x, t time.Time) int { return x.Compare(t) })
	a.times = slices.Insert(a.times, i, t)
	a.prune(now.Add(-r.window))
}

// prune forgets admissions before cutoff.
func (a *admissions) prune(cutoff time.Time) {
	i, _ := slices.BinarySearchFunc(a.times, cutoff, func(x, t time.Time) int { return x.Compare(t) })
	a.times = a.times[i:]
	for uid, t := range a.seen {
		if t.Before(cutoff) {
			delete(a.seen, uid)
		}
	}
}

// perSecond is queue's admission rate at now: with n admissions in the
// window, the first at t1, (n-1) / (now - t1). The n-1 intervals between
// admissions span t1 to the last one; measuring to now instead lets the
// rate fall while admissions stop, so a stalled queue's estimates move
// out rather than staying at the last burst's pace. False with fewer than
// minAdmissions.
func (r *rates) perSecond(queue string, now time.Time) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.byQueue[queue]
	if a == nil {
		return 0, false
	}
	a.prune(now.Add(-r.window))
	if len(a.times) < minAdmissions {
		return 0, false
	}
	span := now.Sub(a.times[0]).Seconds()
	if span <= 0 {
		return 0, false
	}
	return float64(len(a.times)-1) / span, true
}

// eta estimates when the Workload at position pos (0: next) of queue is
// admitted: pos+1 more admissions at the queue's recent rate,
//
//	eta = now + (pos + 1) / rate
//
// to the second. It assumes the queue keeps its pace: the quota freed as
// Jobs finish and the queue's share of its ClusterQueue (fair sharing
// among LocalQueues, which the rate of this LocalQueue alone reflects).
func (q *Queues) eta(queue string, pos int32) (time.Time, bool) {
	now := q.cfg.Now()
	rate, ok := q.rates.perSecond(queue, now)
	if !ok {
		return time.Time{}, false
	}
	wait := time.Duration(float64(pos+1) / rate * float64(time.Second))
	return now.Add(wait).UTC().Round(time.Second), true
}
