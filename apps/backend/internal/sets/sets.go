// Package sets serves experiment sets: many experiments submitted, read
// and cancelled as one, under a set ID. A set adds no state of its own:
// each item is an ordinary experiment, submitted through
// experiments.Service.Submit exactly as POST /experiment submits it, whose
// Job carries the label jobspec.LabelSet and whose history record (with
// history on) the set's ID. The set is whatever carries its ID.
package sets

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultConcurrency is how many of a set's items are submitted (or
// cancelled) at once by default: enough to keep an API server busy, few
// enough that one set does not crowd out the single POSTs beside it.
const DefaultConcurrency = 16

// Service serves the sets of one namespace.
type Service struct {
	Experiments *experiments.Service
	// Concurrency bounds the items submitted or cancelled at once;
	// default DefaultConcurrency.
	Concurrency int
	// ItemTimeout bounds each item's calls, as the API timeout bounds a
	// single POST's: a claim waits for its Job no longer than for a
	// single POST (experiments.Service.ClaimGrace counts on it).
	ItemTimeout time.Duration
}

// Result is what became of one item of a submitted set.
type Result struct {
	Item
	Sub experiments.Submitted
	// Err is why the item was refused (Item.Err, for an invalid one) or
	// failed: its status code is what POST /experiment would answer.
	Err error
}

// Submit submits every valid item of req, Concurrency at a time, each
// through experiments.Service.Submit, and returns one Result per item in
// request order. Invalid items keep their Err. An item whose experiment
// belongs to another set (or to none: it was submitted on its own) is a
// Conflict: a set is what carries its ID, and an experiment is in one set.
//
// Once an item fails in a way that is worth a retry later (Unavailable,
// TooManyRequests: the API server, the history database or a quota), the
// items not yet started are not tried: they fail the same way, and the
// client sends the set again, which creates nothing twice.
func (s *Service) Submit(ctx context.Context, req Request, submitter string) []Result {
	out := make([]Result, len(req.Items))
	var todo []int
	for i, it := range req.Items {
		out[i] = Result{Item: it, Err: it.Err}
		if it.Err == nil {
			todo = append(todo, i)
		}
	}
	errs := s.each(ctx, len(todo), func(ctx context.Context, k int) error {
		r := &out[todo[k]]
		sub, err := s.Experiments.Submit(ctx, r.Exp, submitter)
		if err != nil {
			return err
		}
		r.Sub = sub
		if sub.Set != req.ID {
			return otherSet(sub, req.ID)
		}
		return nil
	}, func(k int) string { return fmt.Sprintf("item %d (%q)", todo[k], out[todo[k]].ID) })
	for k, err := range errs {
		out[todo[k]].Err = err
	}
	return out
}

// otherSet refuses an item whose experiment exists outside the set.
func otherSet(sub experiments.Submitted, set string) error {
	where := fmt.Sprintf("to set %q", sub.Set)
	if sub.Set == "" {
		where = "to no set (it was submitted on its own)"
	}
	return failure.New(failure.Conflict,
		"experiment %q belongs %s, not to %q (job %s); an experiment is in the first set that submitted it: give it a new ID to run it in this set",
		sub.ID, where, set, sub.Job)
}

// Get returns the counts of set id by state and one page of its
// experiments: from the history records when history is on (so the set
// outlives its Jobs), else from the live Jobs. opts are GET /experiments'.
// A set with no experiment is NotFound.
func (s *Service) Get(ctx context.Context, id string, opts experiments.ListOptions) (wire.Set, error) {
	if opts.State != "" && !state.Known(opts.State) {
		return wire.Set{}, failure.New(failure.Invalid, "state %s is not one of %s", failure.Quote(opts.State), strings.Join(state.All(), ", "))
	}
	out := wire.Set{ID: id, Counts: map[string]int{}}
	for _, st := range state.All() {
		out.Counts[st] = 0
	}
	if h := s.Experiments.History; h != nil {
		out.Source = lifecycle.SourceHistory
		counts, err := h.CountSet(ctx, id)
		if err != nil {
			return wire.Set{}, fmt.Errorf("count the experiments of set %q: %w", id, err)
		}
		for st, n := range counts {
			out.Counts[st] += n
			out.Total += n
		}
		if out.Total == 0 {
			return wire.Set{}, notFound(id, "no record carries it (never submitted, or its records are past the retention)")
		}
		page, err := h.List(ctx, history.ListOptions{Set: id, Limit: opts.Limit, Continue: opts.Continue, State: opts.State})
		if err != nil {
			return wire.Set{}, fmt.Errorf("list the experiments of set %q: %w", id, err)
		}
		out.Items = make([]wire.Status, 0, len(page.Items))
		for _, rec := range page.Items {
			out.Items = append(out.Items, experiments.FromRecord(rec))
		}
		out.Continue = page.Continue
		return out, nil
	}

	out.Source = lifecycle.SourceJob
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = history.DefaultPageSize
	case limit < 0 || limit > history.MaxPageSize:
		return wire.Set{}, failure.New(failure.Invalid, "limit %d: want 1 to %d", limit, history.MaxPageSize)
	}
	err := s.walkJobs(ctx, id, func(st wire.Status) {
		out.Counts[st.State]++
		out.Total++
	})
	if err != nil {
		return wire.Set{}, err
	}
	if out.Total == 0 {
		return wire.Set{}, notFound(id, "no job carries it (never submitted, or its jobs are gone; without history a set lasts as long as its jobs)")
	}
	page, err := s.Experiments.Live.ListSelected(ctx, jobspec.SetSelector(id), int64(limit), opts.Continue, opts.State)
	if err != nil {
		return wire.Set{}, fmt.Errorf("list the experiments of set %q: %w", id, err)
	}
	out.Items, out.Continue = page.Items, page.Continue
	return out, nil
}

func notFound(id, why string) error {
	return failure.New(failure.NotFound, "experiment set %q not found: %s", id, why)
}

// walkPage is how many Jobs one list call of walkJobs reads: memory stays
// bounded by a page whatever the set's size.
const walkPage = 500

// walkJobs calls fn with the status of each live Job of set id.
func (s *Service) walkJobs(ctx context.Context, id string, fn func(wire.Status)) error {
	cont := ""
	for {
		page, err := s.Experiments.Live.ListSelected(ctx, jobspec.SetSelector(id), walkPage, cont, "")
		if err != nil {
			return fmt.Errorf("read the jobs of set %q: %w", id, err)
		}
		for _, st := range page.Items {
			fn(st)
		}
		if page.Continue == "" {
			return nil
		}
		cont = page.Continue
	}
}

// walkRecords calls fn with each record of set id.
func (s *Service) walkRecords(ctx context.Context, id string, fn func(history.Record)) error {
	opts := history.ListOptions{Set: id, Limit: history.MaxPageSize}
	for {
		page, err := s.Experiments.History.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("read the records of set %q: %w", id, err)
		}
		for _, rec := range page.Items {
			fn(rec)
		}
		if page.Continue == "" {
			return nil
		}
		opts.Continue = page.Continue
	}
}

// Cancellation is what Cancel did.
type Cancellation struct {
	ID                         string
	Total, Cancelled, Finished int
	// Failed are the experiments that could not be cancelled now.
	Failed []Failed
}

// Failed is an experiment Cancel could not cancel, and why: its status
// code is what DELETE /experiments/{id} would answer.
type Failed struct {
	ID, Job string
	Err     error
}

// Cancel cancels every experiment of set id that has not finished, each
// through experiments.Service.Cancel as DELETE /experiments/{id} does,
// Concurrency at a time. The set's experiments are its live Jobs and,
// with history on, its records; an experiment either calls finished is
// left alone. A set with no experiment is NotFound.
//
// An experiment a POST of the set is submitting at that moment may answer
// Conflict (its claim has no Job yet): it is among Failed, and a DELETE
// once the POST is done cancels it.
func (s *Service) Cancel(ctx context.Context, id string) (Cancellation, error) {
	done := map[string]bool{} // experiment → finished, by either source
	var ids []string
	note := func(exp, st string) {
		fin, seen := done[exp]
		if !seen {
			ids = append(ids, exp)
		}
		// Deleting: a DELETE or the TTL is removing the Job already.
		done[exp] = fin || state.Final(st) || st == state.Deleting
	}
	// Reading the set is bounded as one request's calls; each cancel then
	// has a bound of its own, as a DELETE of one experiment has.
	readCtx, cancel := s.itemContext(ctx)
	defer cancel()
	if s.Experiments.History != nil {
		if err := s.walkRecords(readCtx, id, func(rec history.Record) { note(rec.ID, rec.State) }); err != nil {
			return Cancellation{}, err
		}
	}
	if err := s.walkJobs(readCtx, id, func(st wire.Status) { note(st.ID, st.State) }); err != nil {
		return Cancellation{}, err
	}
	out := Cancellation{ID: id, Total: len(ids)}
	if out.Total == 0 {
		return Cancellation{}, notFound(id, "no job or record carries it")
	}
	var todo []string
	for _, exp := range ids {
		if done[exp] {
			out.Finished++
		} else {
			todo = append(todo, exp)
		}
	}
	var mu sync.Mutex
	errs := s.each(ctx, len(todo), func(ctx context.Context, k int) error {
		res, err := s.Experiments.Cancel(ctx, todo[k])
		mu.Lock()
		defer mu.Unlock()
		switch {
		case failure.KindOf(err) == failure.NotFound:
			out.Finished++ // gone since it was read: nothing left to cancel
		case err != nil:
			return err
		case res.Deleted || res.State == state.Cancelled:
			out.Cancelled++
		default:
			out.Finished++ // it finished since it was read
		}
		return nil
	}, func(k int) string { return fmt.Sprintf("experiment %q", todo[k]) })
	for k, err := range errs {
		if err != nil {
			out.Failed = append(out.Failed, Failed{ID: todo[k], Job: jobspec.JobName(todo[k]), Err: err})
		}
	}
	return out, nil
}

// each runs fn for 0 to n-1, Concurrency at a time, each call within
// ItemTimeout, and returns their errors by index. Once a call fails with
// a kind worth a retry later, the calls not yet started are skipped and
// fail with the same kind, naming the first (what names call k): they
// would most likely fail the same way, each after its own timeout.
func (s *Service) each(ctx context.Context, n int, fn func(ctx context.Context, k int) error, what func(k int) string) []error {
	errs := make([]error, n)
	workers := s.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	workers = min(workers, n)
	next := make(chan int)
	var mu sync.Mutex
	var trip error // the first retryable failure, once wrapped for the skipped
	go func() {
		defer close(next)
		for k := range n {
			mu.Lock()
			stop := trip
			mu.Unlock()
			if stop != nil {
				for ; k < n; k++ {
					errs[k] = stop
				}
				return
			}
			next <- k
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for k := range next {
				err := s.call(ctx, k, fn)
				errs[k] = err
				if kind := failure.KindOf(err); kind == failure.Unavailable || kind == failure.TooManyRequests {
					mu.Lock()
					if trip == nil {
						trip = failure.Wrap(kind, err, "not tried: %s failed first, and the rest would most likely fail the same way; send the request again after the Retry-After delay (what was done is not done twice)", what(k))
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

func (s *Service) call(ctx context.Context, k int, fn func(ctx context.Context, k int) error) error {
	ctx, cancel := s.itemContext(ctx)
	defer cancel()
	return fn(ctx, k)
}

// itemContext bounds one item's calls by ItemTimeout, when set.
func (s *Service) itemContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.ItemTimeout > 0 {
		return context.WithTimeout(ctx, s.ItemTimeout)
	}
	return context.WithCancel(ctx)
}
