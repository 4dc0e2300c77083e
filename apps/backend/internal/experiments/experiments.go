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
	"log/slog"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Service is the experiments of one namespace.
type Service struct {
	Spawner *spawn.Spawner
	Live    *lifecycle.Store
	// History is nil when history is off: the Jobs are then the only
	// record, gone with their TTL.
	History history.Store
	// ClaimGrace is how long a claim may wait for its Job: the longest a
	// POST takes between its claim and its create (the API timeout, with
	// room). A DELETE finding a younger claim without a Job answers 409
	// (the POST may still create it); an older one is a POST that gave up,
	// and the DELETE closes its record. Default DefaultClaimGrace.
	ClaimGrace time.Duration
	// Queues are Kueue's queues; nil when none may be named.
	Queues Queues
	// Notify admits the notify URLs a POST names (the webhooks file's
	// allowNotify); nil when webhooks are off, and a POST naming any is
	// refused.
	Notify NotifyPolicy
	// Log notes what a request could not undo; default: discard.
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultClaimGrace is ClaimGrace's default.
const DefaultClaimGrace = time.Minute

// Submitted is what Submit did.
type Submitted struct {
	ID, Job, Namespace string
	// Created is true when this call made the Job.
	Created bool
	// State is the recorded outcome when the experiment had finished and
	// nothing was run again (Source history).
	State  string
	Source string
	// Set is the experiment set the experiment belongs to: the one that
	// first submitted it, whatever set (if any) this call named.
	Set string
}

// Submit runs exp unless it ran or runs already. The same ID with another
// body is a conflict; the same body is answered with what exists.
//
// With history on, an experiment runs at most once, and the Job that runs
// is the one its record describes. The claim orders a POST against
// everything else: the POST that creates the claim creates the Job at once;
// a POST that finds a claim not yet final (a retry, or one racing a DELETE)
// creates the Job held (suspended), reads the record again, and starts the
// Job only if the record is still not final, else deletes it unstarted.
func (s *Service) Submit(ctx context.Context, exp experiment.Experiment, submitter string) (Submitted, error) {
	// Before the claim: a queue that cannot be used leaves nothing behind.
	queue, err := s.Queue(ctx, exp.Queue)
	if err != nil {
		return Submitted{}, err
	}
	exp.Queue = queue
	if err := s.admitNotify(exp.Notify); err != nil {
		return Submitted{}, err
	}
	if s.History == nil {
		return s.create(ctx, exp, submitter, s.now())
	}
	claim := history.Record{
		ID:        exp.ID,
		Hash:      exp.Hash,
		Namespace: s.Spawner.Namespace,
		Job:       jobspec.JobName(exp.ID),
		Submitter: submitter,
		State:     history.StateSubmitted,
		CreatedAt: s.now(),
		Set:       exp.Set,
		Notify:    exp.Notify,
	}
	rec, created, err := s.History.Claim(ctx, claim)
	if err != nil {
		// Without the store nothing proves the experiment is new.
		return Submitted{}, fmt.Errorf("claim experiment %q in the history: %w", exp.ID, err)
	}
	switch {
	case !created && rec.Hash != exp.Hash:
		return Submitted{}, failure.New(failure.Conflict,
			"experiment %q was already submitted with a different body (job %s, %s); a re-run needs a new ID", exp.ID, rec.Job, rec.State)
	case !created && history.Final(rec.State):
		return fromRecord(rec), nil
	case !created:
		// The Job carries the first claim's time and set, as the record
		// does.
		claim.CreatedAt = rec.CreatedAt
		exp.Set = rec.Set
		return s.resubmit(ctx, exp, submitter, claim)
	}
	sub, err := s.create(ctx, exp, submitter, rec.CreatedAt)
	if err != nil && spawn.NothingCreated(err) {
		// Nothing runs, so nothing must block a fixed retry: a claim
		// left behind would answer it 409 for the whole retention.
		if _, uerr := s.History.Unclaim(context.WithoutCancel(ctx), exp.ID, exp.Hash); uerr != nil {
			s.log().Warn("could not take back the claim of an experiment that created nothing; a retry with another body answers 409 until the claim expires",
				"id", exp.ID, "err", uerr)
		}
	}
	return sub, err
}

func (s *Service) create(ctx context.Context, exp experiment.Experiment, submitter string, at time.Time) (Submitted, error) {
	res, err := s.Spawner.Create(ctx, exp, submitter, at)
	if err != nil {
		return Submitted{}, err
	}
	return fromJob(exp.ID, res), nil
}

// resubmit serves a POST that found exp claimed, not final, by an earlier
// request. Its Job exists (the answer is that Job), or not yet, or not any
// more: the earlier POST failed or is still under way, or a DELETE removed
// the Job and the record is becoming Cancelled. A new Job is therefore made
// held, and started only if the record still allows it.
func (s *Service) resubmit(ctx context.Context, exp experiment.Experiment, submitter string, claim history.Record) (Submitted, error) {
	res, err := s.Spawner.CreateHeld(ctx, exp, submitter, claim.CreatedAt)
	if err != nil {
		return Submitted{}, err
	}
	if !jobspec.HeldForSubmit(res.Job) {
		return fromJob(exp.ID, res), nil
	}
	// This call's Job, or one an earlier resubmit left held when it
	// failed: check it now.
	rec, err := s.History.Get(ctx, exp.ID)
	if failure.KindOf(err) == failure.NotFound {
		// The claim was taken back (its POST created nothing) after this
		// request read it: claim anew for this Job.
		rec, _, err = s.History.Claim(ctx, claim)
	}
	switch {
	case err != nil:
		s.discard(ctx, res.Job)
		return Submitted{}, fmt.Errorf("check the record of experiment %q before starting its job: %w", exp.ID, err)
	case history.Final(rec.State) || rec.Hash != exp.Hash:
		// Cancelled (or, with another body, re-claimed) meanwhile: this
		// Job must not run.
		s.discard(ctx, res.Job)
		if rec.Hash != exp.Hash {
			return Submitted{}, failure.New(failure.Conflict,
				"experiment %q was already submitted with a different body (job %s, %s); a re-run needs a new ID", exp.ID, rec.Job, rec.State)
		}
		return fromRecord(rec), nil
	}
	job, err := s.Spawner.Resume(ctx, res.Job)
	if err != nil {
		s.discard(ctx, res.Job)
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			// Not the API server's failure but a race lost: a DELETE (or
			// another POST) of this experiment removed the held Job since
			// it was made. A retry finds where the experiment stands.
			return Submitted{}, failure.Wrap(failure.Conflict, err,
				"the held job of experiment %q was deleted or replaced while this request submitted it; retry to see its state", exp.ID)
		}
		return Submitted{}, err
	}
	res.Job = job
	return fromJob(exp.ID, res), nil
}

// discard deletes a held Job that must not run, beyond the request's
// deadline: left behind, it would wait suspended until a retry finds it.
func (s *Service) discard(ctx context.Context, job *batchv1.Job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	if err := s.Spawner.Discard(ctx, job); err != nil {
		s.log().Warn("could not delete a held job that must not run; it stays suspended until a retried POST checks it again",
			"job", job.Name, "err", err)
	}
}

// discardTimeout bounds discard's delete once the request has given up.
const discardTimeout = 10 * time.Second

func fromJob(id string, res spawn.Result) Submitted {
	return Submitted{ID: id, Job: res.Job.Name, Namespace: res.Job.Namespace, Created: res.Created, Source: lifecycle.SourceJob,
		Set: res.Job.Labels[jobspec.LabelSet]}
}

func fromRecord(rec history.Record) Submitted {
	return Submitted{ID: rec.ID, Job: rec.Job, Namespace: rec.Namespace, State: rec.State, Source: lifecycle.SourceHistory, Set: rec.Set}
}

// Get returns the experiment's status: its live Job's while it exists,
// else its record's; with history on, with its webhook deliveries.
func (s *Service) Get(ctx context.Context, id string) (lifecycle.Status, error) {
	st, err := s.get(ctx, id)
	if err == nil {
		st.Deliveries = s.deliveries(ctx, id)
	}
	return st, err
}

func (s *Service) get(ctx context.Context, id string) (lifecycle.Status, error) {
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
	// One vocabulary whichever source answers: a state the source never
	// gives (Deleting from records, Cancelled from live Jobs) lists
	// nothing; a name outside it is a 400.
	if opts.State != "" && !state.Known(opts.State) {
		return lifecycle.Page{}, failure.New(failure.Invalid, "state %s is not one of %s", failure.Quote(opts.State), strings.Join(state.All(), ", "))
	}
	if s.History != nil {
		page, err := s.History.List(ctx, history.ListOptions{Limit: opts.Limit, Continue: opts.Continue, State: opts.State})
		if err != nil {
			return lifecycle.Page{}, fmt.Errorf("list experiments from the history: %w", err)
		}
		out := lifecycle.Page{Items: make([]lifecycle.Status, 0, len(page.Items)), Continue: page.Continue}
		for _, rec := range page.Items {
			st := FromRecord(rec)
			s.describeRecord(ctx, rec, &st)
			out.Items = append(out.Items, st)
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
// finished. A claim without a Job is Cancelled at once when its POST has
// given up (older than ClaimGrace), so a retried POST runs nothing; a
// younger one answers Conflict: its POST may still create the Job.
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
	case failure.KindOf(herr) == failure.NotFound:
		return Cancelled{}, err
	case herr != nil:
		return Cancelled{}, fmt.Errorf("experiment %q has no job; read its record: %w", id, herr)
	case rec.State != history.StateSubmitted:
		return Cancelled{ID: id, Job: rec.Job, State: rec.State}, nil
	}
	if age := s.now().Sub(rec.CreatedAt); age < s.claimGrace() {
		return Cancelled{}, failure.New(failure.Conflict,
			"experiment %q is being submitted (claimed %s ago, no job yet); retry in a few seconds", id, age.Round(time.Millisecond))
	}
	stored, err := s.History.Finish(ctx, history.Record{
		ID:      id,
		State:   history.StateCancelled,
		Reason:  "Cancelled",
		Message: "cancelled before its Job was created",
	}, nil)
	if err != nil {
		return Cancelled{}, fmt.Errorf("cancel the claim of experiment %q: %w", id, err)
	}
	return Cancelled{ID: id, Job: stored.Job, State: stored.State}, nil
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
		Set:         rec.Set,
		Source:      lifecycle.SourceHistory,
	}
}

func (s *Service) claimGrace() time.Duration {
	if s.ClaimGrace > 0 {
		return s.ClaimGrace
	}
	return DefaultClaimGrace
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// FollowLogs streams the runner's output to sink from from on until the
// experiment ends (see lifecycle.Store.Follow): from the live pods while
// the Job exists, then, with history on, from the output stored with the
// record, continuing at the position the sink reached, so nothing is sent
// twice across the switch. It waits while the Job is gone and the record
// is not final yet (the recorder stores the outcome and output a moment
// after the Job ends or is deleted). It returns how the experiment ended;
// an error before sink.Begin is the request's (404, 503).
func (s *Service) FollowLogs(ctx context.Context, id string, from lifecycle.Position, sink lifecycle.LogSink, opts lifecycle.FollowOptions) (wire.LogEnd, error) {
	t := &trackedSink{LogSink: sink, pos: from}
	for {
		end, err := s.Live.Follow(ctx, id, t.pos, t, opts)
		if failure.KindOf(err) != failure.NotFound {
			return end, err
		}
		if s.History == nil {
			if t.begun {
				// The Job went (a DELETE, its TTL) and nothing kept its
				// output: the follow ends with what it saw.
				return end, nil
			}
			return end, err
		}
		rec, herr := s.historyGet(ctx, id, opts)
		switch {
		case failure.KindOf(herr) == failure.NotFound:
			if t.begun {
				return end, nil
			}
			return end, err
		case herr != nil:
			return end, fmt.Errorf("experiment %q has no job; read its record to follow its logs: %w", id, herr)
		}
		if err := t.Begin(); err != nil {
			return end, err
		}
		abandoned := rec.State == history.StateSubmitted && s.now().Sub(rec.CreatedAt) > s.claimGrace()
		if !history.Final(rec.State) && !abandoned {
			if err := sleep(ctx, opts.Poll); err != nil {
				return end, err
			}
			continue
		}
		out, lerr := s.historyLogs(ctx, id, opts)
		if lerr != nil && failure.KindOf(lerr) != failure.NotFound {
			return end, fmt.Errorf("experiment %q: read its stored output to follow its logs: %w", id, lerr)
		}
		if err := lifecycle.Replay(out, t.pos, t); err != nil {
			return end, err
		}
		return wire.LogEnd{State: rec.State, Reason: rec.Reason, Message: rec.Message, ExitCode: rec.ExitCode, Source: lifecycle.SourceHistory}, nil
	}
}

func (s *Service) historyGet(ctx context.Context, id string, opts lifecycle.FollowOptions) (history.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout(opts))
	defer cancel()
	return s.History.Get(ctx, id)
}

func (s *Service) historyLogs(ctx context.Context, id string, opts lifecycle.FollowOptions) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout(opts))
	defer cancel()
	return s.History.Logs(ctx, id)
}

func callTimeout(opts lifecycle.FollowOptions) time.Duration {
	if opts.CallTimeout > 0 {
		return opts.CallTimeout
	}
	return 10 * time.Second
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		d = time.Second
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// trackedSink remembers the position its sink reached, for the switch to
// the record, and calls Begin once whichever source calls it.
type trackedSink struct {
	lifecycle.LogSink
	pos   lifecycle.Position
	begun bool
}

func (t *trackedSink) Begin() error {
	if t.begun {
		return nil
	}
	t.begun = true
	return t.LogSink.Begin()
}

func (t *trackedSink) Header(at lifecycle.Position, line string) error {
	t.pos = at
	return t.LogSink.Header(at, line)
}

func (t *trackedSink) Output(end lifecycle.Position, p []byte) error {
	if end.Known() {
		t.pos = end
	}
	return t.LogSink.Output(end, p)
}
