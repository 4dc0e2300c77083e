package main

// The sets part: one POST /experiment-sets of -set-items experiments
// against the same Jobs made by one client-go client and by single POSTs,
// at the concurrency the backend submits a set's items with
// (--set-concurrency), on the node-less cluster.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/deploy"
)

// rowSet is the sets table's row of the one POST /experiment-sets.
const rowSet = "gmini: one POST /experiment-sets of the whole batch"

// measureSets runs, for -rounds rounds in rotated order, the direct row
// and the single-POST row at -set-concurrency with -set-items Jobs each,
// and one set of -set-items items to the reference backend (started with
// --set-concurrency at the same value). Each round's Jobs are marked
// Complete and deleted, as in the spawn rows; each round's set has its own
// ID and experiment IDs (a set sent again answers "existing"). The Jobs
// are deleted without being marked Complete (runSet says why).
func (s *spawnBench) measureSets(ctx context.Context) error {
	s.inSets = true
	defer func() { s.inSets = false }()
	conc, n := s.o.setConcurrency, s.o.setItems
	runs := []spawnRun{
		{rowDirect, n, nil, deploy.Namespace, func(p string) createFunc { return directCreate(s.direct, s.tmpl, "set-direct-"+p) }},
		{rowGmini, n, s.off, deploy.Namespace, func(p string) createFunc { return gminiPost(s.httpc, s.off, "set-single-"+s.off.id+"-"+p) }},
		{rowSet, n, s.off, deploy.Namespace, nil},
	}
	setHTTP := &http.Client{Timeout: 5 * time.Minute}
	// Warm the set path (its decoder, its first answer) as warmUp did the
	// single POST's.
	cl, err := s.off.client(setHTTP)
	if err != nil {
		return err
	}
	if sub, err := cl.SubmitSet(ctx, setBody("set-warm-"+s.off.id, 20)); err != nil || sub.Outcomes.Created != 20 {
		return fmt.Errorf("sets part: warm-up set: %d of 20 created (%v)", sub.Outcomes.Created, err)
	}
	if err := clean(ctx, s.admin, deploy.Namespace); err != nil {
		return err
	}
	total := map[string]*row{}
	for round := range s.o.rounds {
		for _, r := range rotated(runs, round) {
			var res row
			var err error
			if r.fn == nil {
				res, err = s.runSet(ctx, setHTTP, conc, round, r)
			} else {
				res, err = s.runRow(ctx, conc, round, r)
			}
			if err != nil {
				return fmt.Errorf("sets part: %w", err)
			}
			t := total[r.name]
			if t == nil {
				t = &row{name: r.name, concurrency: conc}
				total[r.name] = t
			}
			t.add(res)
		}
	}
	for _, r := range runs {
		s.rep.sets = append(s.rep.sets, *total[r.name])
	}
	return nil
}

// setBody is the set of round: n items, each exactly a POST /experiment
// body, with IDs no other round or row uses.
func setBody(prefix string, n int) wire.SetRequest {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"experiment": {"id": "bench-%s-%d", "key": "k-%d"}}`, prefix, i, i))
	}
	return wire.SetRequest{ID: "bench-" + prefix, Items: items}
}

// runSet sends one set of r.n items and times it from the request to the
// answer; every item must come back created. Then, as runRow does in this
// part, it reads the CPU spent and deletes the Jobs. The row counts r.n
// Jobs over the set's one request: its latency is the whole set's.
//
// Unlike the spawn rows, no Job of this part is marked Complete: the
// node-less cluster's Job controller starts about 1,000 Jobs in minutes
// (its own client limit), which made one round take 3 minutes. So the CPU
// window of every row of this part ends at its last create, and holds
// whatever the Job controller did on the API server meanwhile.
func (s *spawnBench) runSet(ctx context.Context, hc *http.Client, conc, round int, r spawnRun) (row, error) {
	b := r.backend
	cl, err := b.client(hc)
	if err != nil {
		return row{}, err
	}
	set := setBody(fmt.Sprintf("set-%s-c%d-r%d", b.id, conc, round), r.n)
	backendCPU0, apiCPU0 := b.proc.CPU(), cpuOf(s.apiPIDs)
	t0 := time.Now()
	sub, err := cl.SubmitSet(ctx, set)
	d := time.Since(t0)
	res := row{name: r.name, concurrency: conc, n: r.n, wall: d, lat: []time.Duration{d}}
	if err != nil {
		res.errors = r.n
		return res, fmt.Errorf("%s (set %s): %w", r.name, set.ID, err)
	}
	if sub.Outcomes.Created != r.n || len(sub.Items) != r.n {
		res.errors = r.n - sub.Outcomes.Created
		answers := map[string]int{}
		for _, it := range sub.Items {
			if it.Outcome != wire.OutcomeCreated {
				answers[fmt.Sprintf("%s %d", it.Outcome, it.Code)]++
			}
		}
		return res, fmt.Errorf("%s (set %s): %d of %d items created, %d items answered (%s)", r.name, set.ID, sub.Outcomes.Created, r.n, len(sub.Items), countAnswers(answers))
	}
	res.apiCPU = cpuOf(s.apiPIDs) - apiCPU0
	res.backendCPU = b.proc.CPU() - backendCPU0
	s.log.Info("run", "row", r.name, "set concurrency", conc, "round", round+1, "jobs/s", fmt.Sprintf("%.1f", res.rate()),
		"set answered in", d.Round(time.Millisecond))
	return res, clean(ctx, s.admin, r.namespace)
}
