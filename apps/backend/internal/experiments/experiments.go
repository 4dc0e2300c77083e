// Package experiments answers the API's questions about experiments: it
// submits them (spawn), reads them from their live Jobs (lifecycle) and,
// when history is on, from their records once the Jobs are gone
// (history). With history on, an experiment's ID is claimed in the store
// before its Job is made, so a retried POST never runs it twice, however
// long after the first.
package experiments

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Service is the experiments of one namespace.
type Service struct {
	Spawner *spawn.Spawner
	Live    *lifecycle.Store
	// History is nil when history is off: the Jobs are then the only
	// record, gone with their TTL.
	History history.Store
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Submitted is what Submit did.
type Submitted struct {
	ID, Job, Namespace string
	// Created is true when this call made the Job.
	Created bool
	// State is the recorded outcome when the experiment had finished and
	// nothing was run again (Source history).
	State  string
	Source string
}

// Submit runs exp unless it ran or runs already. The same ID with another
// body is a conflict; the same body is answered with what exists.
func (s *Service) Submit(ctx context.Context, exp experiment.Experiment, submitter string) (Submitted, error) {
	if s.History != nil {
		rec, created, err := s.History.Claim(ctx, history.Record{
			ID:        exp.ID,
			Hash:      exp.Hash,
			Namespace: s.Spawner.Namespace,
			Job:       jobspec.JobName(exp.ID),
			Submitter: submitter,
			State:     history.StateSubmitted,
			CreatedAt: s.now(),
		})
		if err != nil {
			// Without the store nothing proves the experiment is new.
			return Submitted{}, fmt.Errorf("claim experiment %q in the history: %w", exp.ID, err)
		}
		switch {
		case !created && rec.Hash != exp.Hash:
			return Submitted{}, failure.New(failure.Conflict,
				"experiment %q was already submitted with a different body (job %s, %s); a re-run needs a new ID", exp.ID, rec.Job, rec.State)
		case !created && history.Final(rec.State):
			return Submitted{ID: rec.ID, Job: rec.Job, Namespace: rec.Namespace, State: rec.State, Source: lifecycle.SourceHistory}, nil
		}
		// New, or claimed and not finished: its Job exists (a retry finds
		// it) or was never made (the claiming request failed after the
		// claim); Create answers both.
	}
	res, err := s.Spawner.Create(ctx, exp, submitter)
	if err != nil {
		return Submitted{}, err
	}
	return Submitted{ID: exp.ID, Job: res.Job.Name, Namespace: res.Job.Namespace, Created: res.Created, Source: lifecycle.SourceJob}, nil
}

// Get returns the experiment's status: its live Job's while it exists,
// else its record's.
func (s *Service) Get(ctx context.Context, id string) (lifecycle.Status, error) {
	st, err := s.Live.Get(ctx, id)
	if err == nil || s.History == nil || failure.KindOf(err) != failure.NotFound {
		return st, err
	}
	rec, herr := s.History.Get(ctx, id)
	switch {
	case herr == nil:
		return FromRecord(rec), nil
	case failure.KindOf(herr) == failure.NotFound:
		return lifecycle.Status{}, failure.New(failure.NotFound,
			"experiment %q not found: never submitted, or its record is past the retention", id)
	}
	return lifecycle.Status{}, fmt.Errorf("experiment %q has no job; read its record: %w", id, herr)
}

// Logs writes the runner's output: the live pods' while they exist, else
// the output stored with the record.
func (s *Service) Logs(ctx context.Context, id string, w io.Writer) error {
	err := s.Live.Logs(ctx, id, w)
	if err == nil || s.History == nil {
		return err
	}
	if k := failure.KindOf(err); k != failure.NotFound && k != failure.Conflict {
		return err
	}
	out, herr := s.History.Logs(ctx, id)
	switch {
	case herr == nil:
		_, werr := w.Write(out)
		return werr
	case failure.KindOf(herr) == failure.NotFound:
		return err // the live answer says best why there is nothing
	}
	return fmt.Errorf("experiment %q: read its stored output: %w", id, herr)
}

// ListOptions select a page of experiments.
type ListOptions struct {
	Limit    int
	Continue string
	State    string
}

// List returns a page of experiments: from history, newest first, when it
// is on; else from the live Jobs, in the API server's order.
func (s *Service) List(ctx context.Context, opts ListOptions) (lifecycle.Page, error) {
	if s.History != nil {
		page, err := s.History.List(ctx, history.ListOptions{Limit: opts.Limit, Continue: opts.Continue, State: opts.State})
		if err != nil {
			return lifecycle.Page{}, fmt.Errorf("list experiments from the history: %w", err)
		}
		out := lifecycle.Page{Items: make([]lifecycle.Status, 0, len(page.Items)), Continue: page.Continue}
		for _, rec := range page.Items {
			out.Items = append(out.Items, FromRecord(rec))
		}
		return out, nil
	}
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = history.DefaultPageSize
	case limit < 0 || limit > history.MaxPageSize:
		return lifecycle.Page{}, failure.New(failure.Invalid, "limit %d: want 1 to %d", limit, history.MaxPageSize)
	}
	if opts.State != "" && !slices.Contains(lifecycle.States, opts.State) {
		return lifecycle.Page{}, failure.New(failure.Invalid, "state %q: want one of %v", opts.State, lifecycle.States)
	}
	return s.Live.List(ctx, int64(limit), opts.Continue, opts.State)
}

// Cancelled is what Cancel did.
type Cancelled struct {
	ID, Job string
	// Deleted is false when there was no Job left to delete; State then
	// is the recorded outcome.
	Deleted bool
	State   string
}

// Cancel deletes the experiment's Job, which stops its runner. With
// history on, the record stays, as Cancelled unless the experiment had
// finished.
func (s *Service) Cancel(ctx context.Context, id string) (Cancelled, error) {
	st, err := s.Live.Delete(ctx, id)
	if err == nil {
		return Cancelled{ID: id, Job: st.Job, Deleted: true, State: st.State}, nil
	}
	if s.History == nil || failure.KindOf(err) != failure.NotFound {
		return Cancelled{}, err
	}
	rec, herr := s.History.Get(ctx, id)
	switch {
	case herr == nil:
		return Cancelled{ID: id, Job: rec.Job, State: rec.State}, nil
	case failure.KindOf(herr) == failure.NotFound:
		return Cancelled{}, err
	}
	return Cancelled{}, fmt.Errorf("experiment %q has no job; read its record: %w", id, herr)
}

// FromRecord shows a record as a status.
func FromRecord(rec history.Record) lifecycle.Status {
	return lifecycle.Status{
		ID:          rec.ID,
		Job:         rec.Job,
		Namespace:   rec.Namespace,
		State:       rec.State,
		Reason:      rec.Reason,
		Message:     rec.Message,
		CreatedAt:   rec.CreatedAt,
		StartedAt:   rec.StartedAt,
		CompletedAt: rec.FinishedAt,
		ExitCode:    rec.ExitCode,
		SubmittedBy: rec.Submitter,
		Source:      lifecycle.SourceHistory,
	}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
