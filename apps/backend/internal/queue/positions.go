package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// maxPositions bounds the pending Workloads read per LocalQueue: a
// Workload further back gets no position. Each costs a few hundred bytes
// of the answer.
const maxPositions = 5000

// fetchTimeout bounds one visibility call. It runs apart from the request
// that started it, so that request's end does not fail the others waiting.
const fetchTimeout = 3 * time.Second

// positions caches, per LocalQueue, the positions Kueue's visibility API
// gives its pending Workloads, for ttl: any number of status requests
// cost one call per LocalQueue and ttl, and concurrent requests share the
// call under way. A failed call is cached too, so a visibility API that
// is down is not asked once per request.
type positions struct {
	ttl   time.Duration
	now   func() time.Time
	fetch func(ctx context.Context, queue string) (map[string]int32, error)

	mu      sync.Mutex
	byQueue map[string]*positionsFlight
}

type positionsFlight struct {
	*flight[map[string]int32]
	at time.Time // when the call finished
}

func newPositions(ttl time.Duration, now func() time.Time, fetch func(context.Context, string) (map[string]int32, error)) *positions {
	return &positions{ttl: ttl, now: now, fetch: fetch, byQueue: map[string]*positionsFlight{}}
}

// get returns the position of Workload name in LocalQueue queue, false
// when unknown (not pending, beyond maxPositions, or the call failed).
func (p *positions) get(ctx context.Context, queue, name string) (int32, bool) {
	p.mu.Lock()
	f := p.byQueue[queue]
	if f == nil || f.finished() && p.now().Sub(f.at) >= p.ttl {
		f = &positionsFlight{flight: newFlight[map[string]int32]()}
		p.byQueue[queue] = f
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
			defer cancel()
			pos, err := p.fetch(ctx, queue)
			p.mu.Lock()
			f.at = p.now()
			p.mu.Unlock()
			f.finish(pos, err)
		}()
	}
	p.mu.Unlock()
	pos, err := f.wait(ctx)
	if err != nil {
		return 0, false
	}
	v, ok := pos[name]
	return v, ok
}

// pendingWorkloads is the part of the visibility API's
// PendingWorkloadsSummary read here (apis/visibility/v1beta2).
type pendingWorkloads struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		PositionInLocalQueue int32 `json:"positionInLocalQueue"`
	} `json:"items"`
}

// fetchPositions asks Kueue's visibility API for the pending Workloads of
// LocalQueue queue: GET /apis/visibility.kueue.x-k8s.io/<version>/
// namespaces/<ns>/localqueues/<queue>/pendingworkloads.
func (q *Queues) fetchPositions(ctx context.Context, queue string) (map[string]int32, error) {
	pos, err := q.callVisibility(ctx, queue)
	result := "ok"
	if err != nil {
		result = "error"
		q.log.Debug("queue positions unavailable", "localqueue", queue, "err", err)
	}
	q.lookups.WithLabelValues(result).Inc()
	return pos, err
}

func (q *Queues) callVisibility(ctx context.Context, queue string) (map[string]int32, error) {
	if q.cfg.REST == nil {
		return nil, fmt.Errorf("no client for Kueue's visibility API")
	}
	version, err := q.visibilityVersion()
	if err != nil {
		return nil, err
	}
	raw, err := q.cfg.REST.Get().
		AbsPath("/apis", VisibilityGroup, version, "namespaces", q.cfg.Namespace, "localqueues", queue, "pendingworkloads").
		Param("limit", strconv.Itoa(maxPositions)).
		Do(ctx).Raw()
	if err != nil {
		return nil, fmt.Errorf("pending workloads of localqueue %s/%s: %w", q.cfg.Namespace, queue, err)
	}
	var summary pendingWorkloads
	if err := json.Unmarshal(raw, &summary); err != nil {
		return nil, fmt.Errorf("pending workloads of localqueue %s/%s: decode: %w", q.cfg.Namespace, queue, err)
	}
	pos := make(map[string]int32, len(summary.Items))
	for _, it := range summary.Items {
		pos[it.Metadata.Name] = it.PositionInLocalQueue
	}
	return pos, nil
}

// visibilityVersion is the newest version of the visibility API that is
// served, found once (a failure is asked again at the next call, which
// positions bounds).
func (q *Queues) visibilityVersion() (string, error) {
	q.mu.Lock()
	v := q.visibility
	q.mu.Unlock()
	if v != "" {
		return v, nil
	}
	for _, v := range versions {
		_, err := q.cfg.Discovery.ServerResourcesForGroupVersion(VisibilityGroup + "/" + v)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("discovery of %s/%s: %w", VisibilityGroup, v, err)
		}
		q.mu.Lock()
		q.visibility = v
		q.mu.Unlock()
		return v, nil
	}
	return "", fmt.Errorf("kueue's visibility API (%s) is not served", VisibilityGroup)
}
