// Package historytest is the conformance suite of history.Store: every
// implementation runs it, so SQLite and PostgreSQL behave the same to the
// backend.
package historytest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
)

// Opener opens a Store for the test t. Each test (and subtest) must get a
// database of its own, empty at first; calling it again with the same t
// must open the same database (the suite checks that data survives a
// reopen, and that two Stores opened at once share it). It must be safe
// for concurrent use.
type Opener func(t *testing.T) history.Store

// Run runs the suite against the Stores open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		run  func(t *testing.T, open Opener)
	}{
		{"Claim", testClaim},
		{"ClaimInvalid", testClaimInvalid},
		{"Unclaim", testUnclaim},
		{"Own", testOwn},
		{"Update", testUpdate},
		{"UpdateInvalid", testUpdateInvalid},
		{"Finish", testFinish},
		{"FinishOnce", testFinishOnce},
		{"NotFound", testNotFound},
		{"ListOrder", testListOrder},
		{"ListPages", testListPages},
		{"ListStableWhileAdding", testListStable},
		{"ListDefaultAndMaxLimit", testListLimits},
		{"ListState", testListState},
		{"ListInvalid", testListInvalid},
		{"Sets", testSets},
		{"SetPages", testSetPages},
		{"Expire", testExpire},
		{"ExpireMany", testExpireMany},
		{"ConcurrentClaims", testConcurrentClaims},
		{"ConcurrentFinish", testConcurrentFinish},
		{"Reopen", testReopen},
		{"ConcurrentOpen", testConcurrentOpen},
		{"Text", testText},
		{"PingClose", testPingClose},
		{"Events", testEvents},
		{"EventsDeleted", testEventsDeleted},
		{"EventsInOrder", testEventsInOrder},
		{"Notify", testNotify},
		{"Outbox", testOutbox},
		{"OutboxDeleted", testOutboxDeleted},
		{"OutboxConcurrent", testOutboxConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, open)
		})
	}
}

// newStore opens a Store closed at the end of t.
func newStore(t *testing.T, open Opener) history.Store {
	t.Helper()
	s := open(t)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func ptr[T any](v T) *T { return &v }

// base is a fixed past instant, so expected times are exact.
var base = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func at(d time.Duration) time.Time   { return base.Add(d) }
func atp(d time.Duration) *time.Time { return ptr(at(d)) }

// ignoreUpdated leaves out what the store sets from its own clock.
var ignoreUpdated = cmpopts.IgnoreFields(history.Record{}, "UpdatedAt")

func claim(t *testing.T, s history.Store, rec history.Record) (history.Record, bool) {
	t.Helper()
	got, created, err := s.Claim(ctx(t), rec)
	if err != nil {
		t.Fatalf("Claim(%s): %v", rec.ID, err)
	}
	return got, created
}

func update(t *testing.T, s history.Store, rec history.Record) {
	t.Helper()
	if err := s.Update(ctx(t), rec); err != nil {
		t.Fatalf("Update(%s, %s): %v", rec.ID, rec.State, err)
	}
}

func finish(t *testing.T, s history.Store, rec history.Record, logs []byte) history.Record {
	t.Helper()
	got, err := s.Finish(ctx(t), rec, logs)
	if err != nil {
		t.Fatalf("Finish(%s, %s): %v", rec.ID, rec.State, err)
	}
	return got
}

func get(t *testing.T, s history.Store, id string) history.Record {
	t.Helper()
	got, err := s.Get(ctx(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func wantKind(t *testing.T, what string, err error, kind failure.Kind) {
	t.Helper()
	if got := failure.KindOf(err); got != kind {
		t.Errorf("%s: error %v has kind %q, want %q", what, err, got, kind)
	}
}

// checkTimes asserts what every stored record satisfies: UTC times, and a
// final record always has its finish time (Expire goes by it).
func checkTimes(t *testing.T, rec history.Record) {
	t.Helper()
	for name, tm := range map[string]*time.Time{"CreatedAt": &rec.CreatedAt, "UpdatedAt": &rec.UpdatedAt, "StartedAt": rec.StartedAt, "FinishedAt": rec.FinishedAt} {
		if tm != nil && tm.Location() != time.UTC {
			t.Errorf("%s of %s is in %v, want UTC", name, rec.ID, tm.Location())
		}
	}
	if rec.CreatedAt.IsZero() || rec.UpdatedAt.IsZero() {
		t.Errorf("record %s has no creation or update time: %+v", rec.ID, rec)
	}
	if history.Final(rec.State) && rec.FinishedAt == nil {
		t.Errorf("final record %s has no FinishedAt", rec.ID)
	}
}

func testClaim(t *testing.T, open Opener) {
	first := history.Record{ID: "exp-1", Hash: "h1", Namespace: "ns", Job: "exp-1-abc", Submitter: "alice", CreatedAt: at(0)}
	tests := []struct {
		name        string
		before      func(t *testing.T, s history.Store)
		rec         history.Record
		wantCreated bool
		want        history.Record
	}{
		{
			name:        "new record is Submitted",
			rec:         first,
			wantCreated: true,
			want:        history.Record{ID: "exp-1", Hash: "h1", Namespace: "ns", Job: "exp-1-abc", Submitter: "alice", State: history.StateSubmitted, CreatedAt: at(0)},
		},
		{
			name:        "given state is kept",
			rec:         history.Record{ID: "exp-2", Hash: "h", State: history.StatePending, CreatedAt: at(0)},
			wantCreated: true,
			want:        history.Record{ID: "exp-2", Hash: "h", State: history.StatePending, CreatedAt: at(0)},
		},
		{
			name:        "same hash again returns the stored record",
			before:      func(t *testing.T, s history.Store) { claim(t, s, first) },
			rec:         history.Record{ID: "exp-1", Hash: "h1", Job: "other-job", CreatedAt: at(time.Hour)},
			wantCreated: false,
			want:        history.Record{ID: "exp-1", Hash: "h1", Namespace: "ns", Job: "exp-1-abc", Submitter: "alice", State: history.StateSubmitted, CreatedAt: at(0)},
		},
		{
			name:        "another hash returns the stored one for the caller to compare",
			before:      func(t *testing.T, s history.Store) { claim(t, s, first) },
			rec:         history.Record{ID: "exp-1", Hash: "h2"},
			wantCreated: false,
			want:        history.Record{ID: "exp-1", Hash: "h1", Namespace: "ns", Job: "exp-1-abc", Submitter: "alice", State: history.StateSubmitted, CreatedAt: at(0)},
		},
		{
			name: "a record that moved on is returned as it is",
			before: func(t *testing.T, s history.Store) {
				claim(t, s, first)
				finish(t, s, history.Record{ID: "exp-1", State: history.StateSucceeded, FinishedAt: atp(time.Minute), ExitCode: ptr[int32](0)}, []byte("out"))
			},
			rec:         first,
			wantCreated: false,
			want: history.Record{ID: "exp-1", Hash: "h1", Namespace: "ns", Job: "exp-1-abc", Submitter: "alice", State: history.StateSucceeded,
				CreatedAt: at(0), FinishedAt: atp(time.Minute), ExitCode: ptr[int32](0), HasLogs: true},
		},
		{
			name:        "times keep at least millisecond precision, in UTC",
			rec:         history.Record{ID: "exp-3", CreatedAt: base.Add(123456789 * time.Nanosecond).In(time.FixedZone("X", 3600))},
			wantCreated: true,
			want:        history.Record{ID: "exp-3", State: history.StateSubmitted, CreatedAt: base.Add(123456 * time.Microsecond)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, open)
			if tt.before != nil {
				tt.before(t, s)
			}
			got, created := claim(t, s, tt.rec)
			if created != tt.wantCreated {
				t.Errorf("created = %v, want %v", created, tt.wantCreated)
			}
			if d := cmp.Diff(tt.want, got, ignoreUpdated); d != "" {
				t.Errorf("Claim returned (-want +got):\n%s", d)
			}
			checkTimes(t, got)
			if d := cmp.Diff(got, get(t, s, tt.rec.ID)); d != "" {
				t.Errorf("Get differs from what Claim returned (-claim +get):\n%s", d)
			}
		})
	}

	t.Run("creation time defaults to now", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, open)
		before := time.Now().Add(-time.Millisecond)
		got, _ := claim(t, s, history.Record{ID: "now"})
		if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Millisecond)) {
			t.Errorf("CreatedAt = %v, want about %v", got.CreatedAt, before)
		}
	})
}

// testUnclaim: only a claim nothing came of is taken back: still
// Submitted, no Job seen, claimed with the same body.
func testUnclaim(t *testing.T, open Opener) {
	s := newStore(t, open)
	claimed := func(id string) history.Record {
		return history.Record{ID: id, Hash: "h1", Job: "exp-" + id, CreatedAt: at(0)}
	}
	for _, tc := range []struct {
		name string
		// after the claim, before Unclaim(id, hash)
		then    func(id string)
		hash    string
		deleted bool
	}{
		{name: "fresh claim", hash: "h1", deleted: true},
		{name: "other body", hash: "h2"},
		{name: "job seen", hash: "h1", then: func(id string) {
			update(t, s, history.Record{ID: id, State: history.StateSubmitted, JobUID: "uid-1"})
		}},
		{name: "pending", hash: "h1", then: func(id string) {
			update(t, s, history.Record{ID: id, State: history.StatePending})
		}},
		{name: "cancelled", hash: "h1", then: func(id string) {
			finish(t, s, history.Record{ID: id, State: history.StateCancelled}, nil)
		}},
	} {
		id := strings.ReplaceAll(tc.name, " ", "-")
		claim(t, s, claimed(id))
		if tc.then != nil {
			tc.then(id)
		}
		before := get(t, s, id)
		deleted, err := s.Unclaim(ctx(t), id, tc.hash)
		if err != nil {
			t.Fatalf("%s: Unclaim: %v", tc.name, err)
		}
		if deleted != tc.deleted {
			t.Errorf("%s: Unclaim deleted = %v, want %v", tc.name, deleted, tc.deleted)
		}
		after, err := s.Get(ctx(t), id)
		switch {
		case tc.deleted && failure.KindOf(err) != failure.NotFound:
			t.Errorf("%s: Get after Unclaim = %+v, %v; want NotFound", tc.name, after, err)
		case !tc.deleted && err != nil:
			t.Errorf("%s: Get after a refused Unclaim: %v", tc.name, err)
		case !tc.deleted:
			if d := cmp.Diff(before, after); d != "" {
				t.Errorf("%s: a refused Unclaim changed the record (-before +after):\n%s", tc.name, d)
			}
		}
		if tc.deleted {
			// The ID is free again: a fixed body claims it anew.
			if _, created := claim(t, s, history.Record{ID: id, Hash: "h3", CreatedAt: at(time.Second)}); !created {
				t.Errorf("%s: Claim after Unclaim did not create a record", tc.name)
			}
		}
	}
	if deleted, err := s.Unclaim(ctx(t), "never-claimed", "h1"); err != nil || deleted {
		t.Errorf("Unclaim of an unknown ID = %v, %v; want false, nil", deleted, err)
	}
}

// testOwn: a database belongs to the first namespace that owns it, or to
// the namespace of the records it held before owners were kept.
func testOwn(t *testing.T, open Opener) {
	t.Run("first owner", func(t *testing.T) {
		s := newStore(t, open)
		for _, step := range []struct {
			namespace string
			ok        bool
		}{{"team-a", true}, {"team-a", true}, {"team-b", false}} {
			err := s.Own(ctx(t), step.namespace)
			if step.ok && err != nil {
				t.Errorf("Own(%s): %v", step.namespace, err)
			}
			if !step.ok {
				wantKind(t, "Own("+step.namespace+") of team-a's database", err, failure.Invalid)
			}
		}
		// Another Store on the same database sees the same owner.
		wantKind(t, "Own(team-b) from a second Store", newStore(t, open).Own(ctx(t), "team-b"), failure.Invalid)
	})
	t.Run("records before owners", func(t *testing.T) {
		s := newStore(t, open)
		claim(t, s, history.Record{ID: "old-1", Namespace: "old-ns", CreatedAt: at(0)})
		wantKind(t, "Own(new-ns) of a database holding old-ns's records", s.Own(ctx(t), "new-ns"), failure.Invalid)
		if err := s.Own(ctx(t), "old-ns"); err != nil {
			t.Errorf("Own(old-ns) of its own records: %v", err)
		}
	})
}

func testClaimInvalid(t *testing.T, open Opener) {
	s := newStore(t, open)
	for _, rec := range []history.Record{{}, {ID: "x", State: "Deleting"}, {ID: "x", State: "running"}, {ID: "bad\xff"}} {
		_, _, err := s.Claim(ctx(t), rec)
		wantKind(t, fmt.Sprintf("Claim(%q, %q)", rec.ID, rec.State), err, failure.Invalid)
	}
}

func testUpdate(t *testing.T, open Opener) {
	type step struct {
		op   string // claim, update, finish
		rec  history.Record
		logs []byte
	}
	const id = "exp-u"
	r := func(state string) history.Record { return history.Record{ID: id, State: state, CreatedAt: at(0)} }
	with := func(rec history.Record, f func(*history.Record)) history.Record { f(&rec); return rec }
	tests := []struct {
		name  string
		steps []step
		want  history.Record
	}{
		{
			name: "progress is stored",
			steps: []step{
				{op: "claim", rec: history.Record{ID: id, Hash: "h", CreatedAt: at(0)}},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Namespace, r.Job, r.JobUID = "ns", "job", "uid-1" })},
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.StartedAt = atp(time.Second) })},
			},
			want: history.Record{ID: id, Hash: "h", Namespace: "ns", Job: "job", JobUID: "uid-1", State: history.StateRunning, CreatedAt: at(0), StartedAt: atp(time.Second)},
		},
		{
			name: "a start time once set is kept",
			steps: []step{
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.StartedAt = atp(time.Second) })},
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.StartedAt = atp(time.Hour) })},
			},
			want: history.Record{ID: id, State: history.StateRunning, CreatedAt: at(0), StartedAt: atp(time.Second)},
		},
		{
			name: "a final state never changes",
			steps: []step{
				{op: "update", rec: with(r(history.StateSucceeded), func(r *history.Record) {
					r.FinishedAt, r.ExitCode, r.Reason = atp(time.Minute), ptr[int32](0), "Completed"
				})},
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.StartedAt, r.Job = atp(time.Hour), "late" })},
				{op: "update", rec: with(r(history.StateFailed), func(r *history.Record) { r.FinishedAt, r.ExitCode = atp(time.Hour), ptr[int32](1) })},
				{op: "finish", rec: with(r(history.StateCancelled), func(r *history.Record) { r.Message = "late" }), logs: []byte("late")},
			},
			want: history.Record{ID: id, State: history.StateSucceeded, Reason: "Completed", CreatedAt: at(0), FinishedAt: atp(time.Minute), ExitCode: ptr[int32](0)},
		},
		{
			name: "a record Update does not find is created",
			steps: []step{
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Hash, r.Job, r.CreatedAt = "h", "job", at(-time.Hour) })},
			},
			want: history.Record{ID: id, Hash: "h", Job: "job", State: history.StatePending, CreatedAt: at(-time.Hour)},
		},
		{
			name: "the creation time never changes",
			steps: []step{
				{op: "claim", rec: history.Record{ID: id, CreatedAt: at(0)}},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.CreatedAt = at(time.Hour) })},
			},
			want: history.Record{ID: id, State: history.StatePending, CreatedAt: at(0)},
		},
		{
			name: "Submitted never replaces another state",
			steps: []step{
				{op: "claim", rec: history.Record{ID: id, CreatedAt: at(0)}},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Reason = "Created" })},
				{op: "update", rec: with(r(history.StateSubmitted), func(r *history.Record) { r.Reason = "stale" })},
			},
			want: history.Record{ID: id, State: history.StatePending, Reason: "Created", CreatedAt: at(0)},
		},
		{
			name: "unknown job, UID and namespace keep the stored ones",
			steps: []step{
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Namespace, r.Job, r.JobUID = "ns", "job", "uid" })},
				{op: "update", rec: r(history.StateRunning)},
			},
			want: history.Record{ID: id, Namespace: "ns", Job: "job", JobUID: "uid", State: history.StateRunning, CreatedAt: at(0)},
		},
		{
			name: "a new Job of the experiment replaces the UID",
			steps: []step{
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Job, r.JobUID = "job", "uid-1" })},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Job, r.JobUID = "job", "uid-2" })},
			},
			want: history.Record{ID: id, Job: "job", JobUID: "uid-2", State: history.StatePending, CreatedAt: at(0)},
		},
		{
			name: "hash and submitter belong to the claim",
			steps: []step{
				{op: "claim", rec: history.Record{ID: id, Hash: "h1", Submitter: "alice", CreatedAt: at(0)}},
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.Hash, r.Submitter = "h2", "bob" })},
			},
			want: history.Record{ID: id, Hash: "h1", Submitter: "alice", State: history.StateRunning, CreatedAt: at(0)},
		},
		{
			name: "reason and message describe the current state",
			steps: []step{
				{op: "update", rec: with(r(history.StateSuspended), func(r *history.Record) { r.Reason, r.Message = "Suspended", "job suspended" })},
				{op: "update", rec: r(history.StateRunning)},
			},
			want: history.Record{ID: id, State: history.StateRunning, CreatedAt: at(0)},
		},
		{
			name: "a known exit code stays when the next update has none",
			steps: []step{
				{op: "update", rec: with(r(history.StateRunning), func(r *history.Record) { r.ExitCode = ptr[int32](3) })},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Reason = state.ReasonRetrying })},
			},
			want: history.Record{ID: id, State: history.StatePending, Reason: state.ReasonRetrying, CreatedAt: at(0), ExitCode: ptr[int32](3)},
		},
		{
			// The moment between a runner's end and the Job controller's
			// decision reads as Pending from the Job's status alone.
			name: "Running does not go back to Pending but for a retry",
			steps: []step{
				{op: "update", rec: r(history.StateRunning)},
				{op: "update", rec: with(r(history.StatePending), func(r *history.Record) { r.Message = "no ready pod" })},
			},
			want: history.Record{ID: id, State: history.StateRunning, CreatedAt: at(0)},
		},
		{
			name: "a final state without a finish time gets one",
			steps: []step{
				{op: "claim", rec: history.Record{ID: id, CreatedAt: at(0)}},
				{op: "update", rec: r(history.StateCancelled)},
			},
			// FinishedAt: now, checked below.
			want: history.Record{ID: id, State: history.StateCancelled, CreatedAt: at(0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, open)
			var last time.Time
			for _, st := range tt.steps {
				switch st.op {
				case "claim":
					claim(t, s, st.rec)
				case "update":
					update(t, s, st.rec)
				case "finish":
					finish(t, s, st.rec, st.logs)
				}
				got := get(t, s, id)
				checkTimes(t, got)
				if got.UpdatedAt.Before(last) {
					t.Errorf("UpdatedAt went back from %v to %v", last, got.UpdatedAt)
				}
				last = got.UpdatedAt
			}
			got := get(t, s, id)
			opts := []cmp.Option{ignoreUpdated}
			if tt.want.FinishedAt == nil && got.FinishedAt != nil && history.Final(got.State) {
				if time.Since(*got.FinishedAt) > time.Minute {
					t.Errorf("FinishedAt = %v, want about now", got.FinishedAt)
				}
				opts = append(opts, cmpopts.IgnoreFields(history.Record{}, "FinishedAt"))
			}
			if d := cmp.Diff(tt.want, got, opts...); d != "" {
				t.Errorf("record after the steps (-want +got):\n%s", d)
			}
		})
	}
}

func testUpdateInvalid(t *testing.T, open Opener) {
	s := newStore(t, open)
	for _, rec := range []history.Record{{State: history.StateRunning}, {ID: "x"}, {ID: "x", State: "Deleting"}} {
		err := s.Update(ctx(t), rec)
		wantKind(t, fmt.Sprintf("Update(%q, %q)", rec.ID, rec.State), err, failure.Invalid)
	}
	for _, state := range []string{"", history.StateRunning, history.StateSubmitted} {
		_, err := s.Finish(ctx(t), history.Record{ID: "x", State: state}, nil)
		wantKind(t, fmt.Sprintf("Finish(x, %q)", state), err, failure.Invalid)
	}
	if _, err := s.Get(ctx(t), "x"); failure.KindOf(err) != failure.NotFound {
		t.Errorf("an invalid write stored something: Get = %v", err)
	}
}

// pattern is n bytes that differ at every offset modulo 251, so a window
// taken at the wrong offset does not compare equal.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func testFinish(t *testing.T, open Opener) {
	const max = history.MaxLogBytes
	tests := []struct {
		name     string
		logs     []byte
		wantLogs []byte // nil: no output stored
	}{
		{"no output", nil, nil},
		{"empty output", []byte{}, []byte{}},
		{"short output", []byte("Running Experiment: exp\n"), []byte("Running Experiment: exp\n")},
		{"one byte under the limit", pattern(max - 1), pattern(max - 1)},
		{"exactly the limit", pattern(max), pattern(max)},
		{"one byte over keeps the last MiB", pattern(max + 1), pattern(max + 1)[1:]},
		{"three MiB keep the last", pattern(3*max + 17), pattern(3*max + 17)[2*max+17:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, open)
			const id = "exp-f"
			claim(t, s, history.Record{ID: id, Hash: "h", CreatedAt: at(0)})
			update(t, s, history.Record{ID: id, State: history.StateRunning, Job: "job", JobUID: "uid", StartedAt: atp(time.Second)})
			got := finish(t, s, history.Record{ID: id, State: history.StateFailed, Reason: "BackoffLimitExceeded", FinishedAt: atp(time.Minute), ExitCode: ptr[int32](2)}, tt.logs)
			want := history.Record{ID: id, Hash: "h", Job: "job", JobUID: "uid", State: history.StateFailed, Reason: "BackoffLimitExceeded",
				CreatedAt: at(0), StartedAt: atp(time.Second), FinishedAt: atp(time.Minute), ExitCode: ptr[int32](2), HasLogs: tt.wantLogs != nil}
			if d := cmp.Diff(want, got, ignoreUpdated); d != "" {
				t.Errorf("Finish returned (-want +got):\n%s", d)
			}
			if d := cmp.Diff(got, get(t, s, id)); d != "" {
				t.Errorf("Get differs from what Finish returned (-finish +get):\n%s", d)
			}
			logs, err := s.Logs(ctx(t), id)
			if tt.wantLogs == nil {
				wantKind(t, "Logs of a record finished without output", err, failure.NotFound)
				return
			}
			if err != nil {
				t.Fatalf("Logs: %v", err)
			}
			if logs == nil || !bytes.Equal(logs, tt.wantLogs) {
				t.Errorf("Logs returned %d bytes (nil: %v), want %d bytes ending as the output did", len(logs), logs == nil, len(tt.wantLogs))
			}
		})
	}

	t.Run("a record Finish does not find is created", func(t *testing.T) {
		t.Parallel()
		s := newStore(t, open)
		got := finish(t, s, history.Record{ID: "lost", Job: "job", State: history.StateSucceeded, CreatedAt: at(0), FinishedAt: atp(time.Minute)}, []byte("ok"))
		want := history.Record{ID: "lost", Job: "job", State: history.StateSucceeded, CreatedAt: at(0), FinishedAt: atp(time.Minute), HasLogs: true}
		if d := cmp.Diff(want, got, ignoreUpdated); d != "" {
			t.Errorf("Finish returned (-want +got):\n%s", d)
		}
	})
}

func testFinishOnce(t *testing.T, open Opener) {
	s := newStore(t, open)
	const id = "exp-once"
	first := finish(t, s, history.Record{ID: id, State: history.StateSucceeded, FinishedAt: atp(time.Minute), ExitCode: ptr[int32](0)}, []byte("first"))
	second := finish(t, s, history.Record{ID: id, State: history.StateFailed, FinishedAt: atp(time.Hour), ExitCode: ptr[int32](1)}, []byte("second"))
	if d := cmp.Diff(first, second); d != "" {
		t.Errorf("a second Finish changed the record or did not return the stored one (-first +second):\n%s", d)
	}
	logs, err := s.Logs(ctx(t), id)
	if err != nil || string(logs) != "first" {
		t.Errorf("Logs = %q, %v; want the first output", logs, err)
	}
	// A record finished without output keeps having none.
	update(t, s, history.Record{ID: "cancelled", State: history.StateCancelled})
	got := finish(t, s, history.Record{ID: "cancelled", State: history.StateSucceeded}, []byte("late"))
	if got.State != history.StateCancelled || got.HasLogs {
		t.Errorf("Finish after a final Update returned %s, HasLogs %v; want Cancelled without output", got.State, got.HasLogs)
	}
}

func testNotFound(t *testing.T, open Opener) {
	s := newStore(t, open)
	claim(t, s, history.Record{ID: "claimed"})
	_, err := s.Get(ctx(t), "absent")
	wantKind(t, "Get(absent)", err, failure.NotFound)
	_, err = s.Logs(ctx(t), "absent")
	wantKind(t, "Logs(absent)", err, failure.NotFound)
	_, err = s.Logs(ctx(t), "claimed")
	wantKind(t, "Logs of a record without output", err, failure.NotFound)
	if err != nil && !strings.Contains(err.Error(), "claimed") {
		t.Errorf("error %q does not name the experiment", err)
	}
}

// seed stores records with the given creation offsets and states, n
// goroutines at a time, and returns their IDs newest first (the List
// order).
func seed(t *testing.T, s history.Store, recs []history.Record) []string {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(recs))
	for _, rec := range recs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if history.Final(rec.State) {
				_, err := s.Finish(ctx(t), rec, nil)
				errs <- err
				return
			}
			if rec.State == "" {
				_, _, err := s.Claim(ctx(t), rec)
				errs <- err
				return
			}
			errs <- s.Update(ctx(t), rec)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	return order(recs)
}

// order is the List order of recs: newest first, then ID descending.
func order(recs []history.Record) []string {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b history.Record) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	ids := make([]string, len(sorted))
	for i, r := range sorted {
		ids[i] = r.ID
	}
	return ids
}

// walk lists every page and returns the IDs in order, failing on an empty
// page that is not the only one. between runs after each page.
func walk(t *testing.T, s history.Store, opts history.ListOptions, between func(page int)) (ids []string, pages int) {
	t.Helper()
	for {
		page, err := s.List(ctx(t), opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		pages++
		if len(page.Items) == 0 && (pages > 1 || page.Continue != "") {
			t.Fatalf("page %d is empty (continue %q)", pages, page.Continue)
		}
		limit := opts.Limit
		if limit == 0 {
			limit = history.DefaultPageSize
		}
		if len(page.Items) > limit {
			t.Fatalf("page %d has %d records, over the limit %d", pages, len(page.Items), limit)
		}
		for _, r := range page.Items {
			ids = append(ids, r.ID)
			if opts.State != "" && r.State != opts.State {
				t.Errorf("List(state %s) returned %s in state %s", opts.State, r.ID, r.State)
			}
		}
		if page.Continue == "" {
			return ids, pages
		}
		if between != nil {
			between(pages)
		}
		opts.Continue = page.Continue
		if pages > 10000 {
			t.Fatal("List never reached a last page")
		}
	}
}

func testListOrder(t *testing.T, open Opener) {
	s := newStore(t, open)
	recs := []history.Record{
		{ID: "b", CreatedAt: at(time.Second)},
		{ID: "a", CreatedAt: at(time.Second)},
		{ID: "c", CreatedAt: at(time.Second)},
		{ID: "old", CreatedAt: at(-time.Hour)},
		{ID: "new", CreatedAt: at(time.Hour), State: history.StateRunning},
		{ID: "mid", CreatedAt: at(time.Millisecond), State: history.StateSucceeded},
		{ID: "Z", CreatedAt: at(time.Second)}, // byte order: "Z" < "a"
	}
	seed(t, s, recs)
	want := []string{"new", "c", "b", "a", "Z", "mid", "old"}
	page, err := s.List(ctx(t), history.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range page.Items {
		got = append(got, r.ID)
		checkTimes(t, r)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("List order (-want +got):\n%s", d)
	}
	if page.Continue != "" {
		t.Errorf("the only page has continue %q", page.Continue)
	}
	// List rows are the records Get returns.
	for _, r := range page.Items {
		if d := cmp.Diff(get(t, s, r.ID), r); d != "" {
			t.Errorf("List row of %s differs from Get (-get +list):\n%s", r.ID, d)
		}
	}
}

// spread makes n records whose creation times collide in groups of three,
// so pages must break ties by ID.
func spread(prefix string, n int, states ...string) []history.Record {
	recs := make([]history.Record, n)
	for i := range recs {
		recs[i] = history.Record{ID: fmt.Sprintf("%s-%03d", prefix, (i*37)%n), CreatedAt: at(time.Duration(i/3) * time.Millisecond)}
		if len(states) > 0 {
			recs[i].State = states[i%len(states)]
		}
	}
	return recs
}

func testListPages(t *testing.T, open Opener) {
	s := newStore(t, open)
	want := seed(t, s, spread("p", 53))
	tests := []struct {
		limit, wantPages int
	}{
		{1, 53}, {2, 27}, {7, 8}, {52, 2}, {53, 1}, {54, 1}, {1000, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit %d", tt.limit), func(t *testing.T) {
			got, pages := walk(t, s, history.ListOptions{Limit: tt.limit}, nil)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("records over all pages (-want +got):\n%s", d)
			}
			if pages != tt.wantPages {
				t.Errorf("%d pages, want %d", pages, tt.wantPages)
			}
		})
	}
}

func testListStable(t *testing.T, open Opener) {
	s := newStore(t, open)
	want := seed(t, s, spread("s", 40))
	// Older than everything, so after every cursor: it must come last.
	const late = "late-but-old"
	want = append(want, late)
	added := 0
	got, _ := walk(t, s, history.ListOptions{Limit: 6}, func(page int) {
		// New claims between pages are newer than the cursor: they must
		// neither repeat a record nor push one off the next page.
		for i := range 3 {
			claim(t, s, history.Record{ID: fmt.Sprintf("new-%d-%d", page, i)})
			added++
		}
		if page == 2 {
			claim(t, s, history.Record{ID: late, CreatedAt: at(-time.Hour)})
		}
	})
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("records over all pages while %d were added (-want +got):\n%s", added, d)
	}
}

func testListLimits(t *testing.T, open Opener) {
	s := newStore(t, open)
	want := seed(t, s, spread("d", history.DefaultPageSize+20))
	page, err := s.List(ctx(t), history.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != history.DefaultPageSize || page.Continue == "" {
		t.Errorf("List without a limit returned %d records (continue %q), want a page of %d and a continue token", len(page.Items), page.Continue, history.DefaultPageSize)
	}
	got, pages := walk(t, s, history.ListOptions{}, nil)
	if pages != 2 || !slices.Equal(got, want) {
		t.Errorf("default pages: %d pages, %d records; want 2 pages of all %d records in order", pages, len(got), len(want))
	}
	page, err = s.List(ctx(t), history.ListOptions{Limit: history.MaxPageSize})
	if err != nil || len(page.Items) != len(want) || page.Continue != "" {
		t.Errorf("List(limit %d) = %d records, continue %q, %v; want all %d in one page", history.MaxPageSize, len(page.Items), page.Continue, err, len(want))
	}
	t.Run("empty store", func(t *testing.T) {
		page, err := newStore(t, open).List(ctx(t), history.ListOptions{})
		if err != nil || len(page.Items) != 0 || page.Continue != "" {
			t.Errorf("List of an empty store = %+v, %v; want no records and no continue token", page, err)
		}
	})
}

func testListState(t *testing.T, open Opener) {
	s := newStore(t, open)
	recs := spread("st", 30, history.StateRunning, history.StateSucceeded, "", history.StateFailed, history.StateRunning)
	seed(t, s, recs)
	for _, state := range []string{history.StateRunning, history.StateSucceeded, history.StateSubmitted, history.StateFailed, history.StateCancelled} {
		t.Run(state, func(t *testing.T) {
			var want []history.Record
			for _, r := range recs {
				if r.State == state || (state == history.StateSubmitted && r.State == "") {
					want = append(want, r)
				}
			}
			got, _ := walk(t, s, history.ListOptions{State: state, Limit: 4}, nil)
			if d := cmp.Diff(order(want), got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("List(state %s) over all pages (-want +got):\n%s", state, d)
			}
		})
	}
}

func testListInvalid(t *testing.T, open Opener) {
	s := newStore(t, open)
	seed(t, s, spread("i", 5))
	page, err := s.List(ctx(t), history.ListOptions{Limit: 2})
	if err != nil || page.Continue == "" {
		t.Fatalf("List(limit 2) = %+v, %v", page, err)
	}
	tok := page.Continue
	// The same token in another format version: opaque to clients, but
	// the suite knows it is base64url with a leading version byte.
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) == 0 {
		t.Fatalf("continue token %q is not base64url: %v", tok, err)
	}
	raw[0]++
	otherVersion := base64.RawURLEncoding.EncodeToString(raw)
	tests := []struct {
		name string
		opts history.ListOptions
		word string // the message names the parameter
	}{
		{"negative limit", history.ListOptions{Limit: -1}, "limit"},
		{"limit over the maximum", history.ListOptions{Limit: history.MaxPageSize + 1}, "limit"},
		{"unknown state", history.ListOptions{State: "Bogus"}, "state"},
		{"state in another case", history.ListOptions{State: "running"}, "state"},
		{"continue not base64", history.ListOptions{Continue: "!!!"}, "continue"},
		{"continue too short", history.ListOptions{Continue: "AAAA"}, "continue"},
		{"continue cut short", history.ListOptions{Continue: tok[:len(tok)/2]}, "continue"},
		{"continue of another version", history.ListOptions{Continue: otherVersion}, "continue"},
		{"continue too long", history.ListOptions{Continue: strings.Repeat("A", 5000)}, "continue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.List(ctx(t), tt.opts)
			wantKind(t, fmt.Sprintf("List(%+v)", tt.opts), err, failure.Invalid)
			if err != nil && !strings.Contains(err.Error(), tt.word) {
				t.Errorf("message %q does not name %q", err, tt.word)
			}
		})
	}
}

// testSets: the claim writes the set; later writes never change or drop
// it; List and CountSet see a set's records only.
func testSets(t *testing.T, open Opener) {
	s := newStore(t, open)
	claim(t, s, history.Record{ID: "a", Hash: "h", Set: "sweep-1", CreatedAt: at(time.Second)})
	claim(t, s, history.Record{ID: "b", Hash: "h", Set: "sweep-1", CreatedAt: at(2 * time.Second)})
	claim(t, s, history.Record{ID: "c", Hash: "h", Set: "sweep-2", CreatedAt: at(3 * time.Second)})
	claim(t, s, history.Record{ID: "d", Hash: "h", CreatedAt: at(4 * time.Second)})
	// A second claim of a, naming another set, finds the first.
	if got, created := claim(t, s, history.Record{ID: "a", Hash: "h", Set: "sweep-2"}); created || got.Set != "sweep-1" {
		t.Errorf("claim of a in another set = %+v, created %v; want the record of sweep-1", got, created)
	}
	// The recorder writes what the Job says: no set, or (a Job edited by
	// hand) another one. The claim's set stays.
	update(t, s, history.Record{ID: "a", State: history.StateRunning})
	update(t, s, history.Record{ID: "b", State: history.StatePending, Set: "other"})
	finish(t, s, history.Record{ID: "b", State: history.StateSucceeded}, nil)
	// A record the recorder makes (its claim lost) takes the Job's set.
	update(t, s, history.Record{ID: "e", State: history.StatePending, Set: "sweep-2", CreatedAt: at(5 * time.Second)})

	for id, want := range map[string]string{"a": "sweep-1", "b": "sweep-1", "c": "sweep-2", "d": "", "e": "sweep-2"} {
		if got := get(t, s, id).Set; got != want {
			t.Errorf("record %s: set %q, want %q", id, got, want)
		}
	}
	for _, tt := range []struct {
		opts history.ListOptions
		want []string
	}{
		{history.ListOptions{Set: "sweep-1"}, []string{"b", "a"}},
		{history.ListOptions{Set: "sweep-2"}, []string{"e", "c"}},
		{history.ListOptions{Set: "sweep-1", State: history.StateSucceeded}, []string{"b"}},
		{history.ListOptions{Set: "sweep-2", State: history.StateSucceeded}, nil},
		{history.ListOptions{Set: "nope"}, nil},
		{history.ListOptions{}, []string{"e", "d", "c", "b", "a"}},
	} {
		got, _ := walk(t, s, tt.opts, nil)
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("List(%+v) (-want +got):\n%s", tt.opts, d)
		}
	}
	for set, want := range map[string]map[string]int{
		"sweep-1": {history.StateRunning: 1, history.StateSucceeded: 1},
		"sweep-2": {history.StateSubmitted: 1, history.StatePending: 1},
		"nope":    {},
	} {
		got, err := s.CountSet(ctx(t), set)
		if err != nil {
			t.Fatalf("CountSet(%s): %v", set, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("CountSet(%s) (-want +got):\n%s", set, d)
		}
	}
	// Expired records leave their set's counts.
	if _, err := s.Expire(ctx(t), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CountSet(ctx(t), "sweep-1"); err != nil || len(got) != 1 || got[history.StateRunning] != 1 {
		t.Errorf("CountSet(sweep-1) after Expire = %v, %v; want only the running one", got, err)
	}
}

// testSetPages: a set's pages hold its records newest first, without gaps
// or repeats, whatever else the store holds.
func testSetPages(t *testing.T, open Opener) {
	s := newStore(t, open)
	in := spread("in", 45)
	for i := range in {
		in[i].Set = "big"
	}
	want := seed(t, s, in)
	seed(t, s, spread("out", 30))
	for _, limit := range []int{1, 7, 45, 1000} {
		got, pages := walk(t, s, history.ListOptions{Set: "big", Limit: limit}, nil)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("limit %d: the set over all pages (-want +got):\n%s", limit, d)
		}
		if wantPages := (45 + limit - 1) / limit; pages != wantPages {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
		}
	}
}

func testExpire(t *testing.T, open Opener) {
	s := newStore(t, open)
	now := time.Now().UTC()
	cutoff := now.Add(-24 * time.Hour)
	old := now.Add(-48 * time.Hour)
	recent := now.Add(-time.Hour)
	tests := []struct {
		rec      history.Record
		logs     []byte
		wantGone bool
	}{
		{history.Record{ID: "old-succeeded", State: history.StateSucceeded, CreatedAt: old, FinishedAt: &old}, []byte("out"), true},
		{history.Record{ID: "old-failed", State: history.StateFailed, CreatedAt: old, FinishedAt: &old}, nil, true},
		{history.Record{ID: "old-cancelled", State: history.StateCancelled, CreatedAt: old, FinishedAt: &old}, []byte("x"), true},
		{history.Record{ID: "old-claim", CreatedAt: old}, nil, true},
		{history.Record{ID: "created-old-finished-recently", State: history.StateSucceeded, CreatedAt: old, FinishedAt: &recent}, []byte("out"), false},
		{history.Record{ID: "finished-at-cutoff", State: history.StateSucceeded, CreatedAt: old, FinishedAt: &cutoff}, nil, false},
		{history.Record{ID: "old-running", State: history.StateRunning, CreatedAt: old, StartedAt: &old}, nil, false},
		{history.Record{ID: "old-pending", State: history.StatePending, CreatedAt: old}, nil, false},
		{history.Record{ID: "old-suspended", State: history.StateSuspended, CreatedAt: old}, nil, false},
		{history.Record{ID: "recent-claim", CreatedAt: recent}, nil, false},
	}
	wantN := int64(0)
	for _, tt := range tests {
		switch {
		case history.Final(tt.rec.State):
			finish(t, s, tt.rec, tt.logs)
		case tt.rec.State == "":
			claim(t, s, tt.rec)
		default:
			update(t, s, tt.rec)
		}
		if tt.wantGone {
			wantN++
		}
	}
	n, err := s.Expire(ctx(t), cutoff)
	if err != nil || n != wantN {
		t.Errorf("Expire = %d, %v; want %d", n, err, wantN)
	}
	for _, tt := range tests {
		_, err := s.Get(ctx(t), tt.rec.ID)
		_, lerr := s.Logs(ctx(t), tt.rec.ID)
		switch {
		case tt.wantGone && failure.KindOf(err) != failure.NotFound:
			t.Errorf("%s: Get = %v after Expire, want NotFound", tt.rec.ID, err)
		case tt.wantGone && failure.KindOf(lerr) != failure.NotFound:
			t.Errorf("%s: its output outlived it: Logs = %v", tt.rec.ID, lerr)
		case !tt.wantGone && err != nil:
			t.Errorf("%s: Get = %v after Expire, want it kept", tt.rec.ID, err)
		case !tt.wantGone && tt.logs != nil && lerr != nil:
			t.Errorf("%s: Logs = %v after Expire, want them kept", tt.rec.ID, lerr)
		}
	}
	if n, err := s.Expire(ctx(t), cutoff); err != nil || n != 0 {
		t.Errorf("second Expire = %d, %v; want 0", n, err)
	}
	// An expired ID is free again.
	if _, created := claim(t, s, history.Record{ID: "old-succeeded"}); !created {
		t.Error("Claim of an expired ID did not create a record")
	}
}

// testExpireMany expires more records than one batch deletes.
func testExpireMany(t *testing.T, open Opener) {
	s := newStore(t, open)
	old := time.Now().Add(-48 * time.Hour)
	recs := make([]history.Record, 1234)
	for i := range recs {
		recs[i] = history.Record{ID: fmt.Sprintf("m-%04d", i), State: history.StateSucceeded, CreatedAt: old, FinishedAt: &old}
	}
	recs = append(recs, history.Record{ID: "keep", State: history.StateRunning, CreatedAt: old})
	seed(t, s, recs)
	n, err := s.Expire(ctx(t), time.Now().Add(-time.Hour))
	if err != nil || n != 1234 {
		t.Errorf("Expire = %d, %v; want 1234", n, err)
	}
	page, err := s.List(ctx(t), history.ListOptions{})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != "keep" {
		t.Errorf("after Expire List = %+v, %v; want only the running record", page, err)
	}
}

func testConcurrentClaims(t *testing.T, open Opener) {
	s := newStore(t, open)
	const n = 20
	type result struct {
		rec     history.Record
		created bool
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			rec, created, err := s.Claim(ctx(t), history.Record{ID: "same", Hash: fmt.Sprintf("h%d", i)})
			results[i] = result{rec, created, err}
		})
	}
	close(start)
	wg.Wait()
	created := 0
	var winner history.Record
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("Claim %d: %v", i, r.err)
		}
		if r.created {
			created++
			winner = r.rec
		}
	}
	if created != 1 {
		t.Fatalf("%d of %d concurrent Claims created the record, want exactly 1", created, n)
	}
	for i, r := range results {
		if d := cmp.Diff(winner, r.rec); d != "" {
			t.Errorf("Claim %d returned another record than the one created (-created +returned):\n%s", i, d)
		}
	}
}

func testConcurrentFinish(t *testing.T, open Opener) {
	s := newStore(t, open)
	t.Run("updates racing a Finish", func(t *testing.T) {
		for round := range 5 {
			id := fmt.Sprintf("race-%d", round)
			claim(t, s, history.Record{ID: id})
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 20 {
				wg.Go(func() {
					<-start
					if i == round*3 {
						_, err := s.Finish(ctx(t), history.Record{ID: id, State: history.StateSucceeded, ExitCode: ptr[int32](0)}, []byte("done"))
						if err != nil {
							t.Errorf("Finish: %v", err)
						}
						return
					}
					state := []string{history.StatePending, history.StateRunning, history.StateSubmitted}[i%3]
					if err := s.Update(ctx(t), history.Record{ID: id, State: state, StartedAt: atp(time.Duration(i) * time.Second)}); err != nil {
						t.Errorf("Update: %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			got := get(t, s, id)
			logs, err := s.Logs(ctx(t), id)
			if got.State != history.StateSucceeded || !got.HasLogs || err != nil || string(logs) != "done" {
				t.Errorf("round %d: after the race the record is %s (HasLogs %v), Logs %q, %v; want Succeeded with its output", round, got.State, got.HasLogs, logs, err)
			}
		}
	})
	t.Run("two Finish calls", func(t *testing.T) {
		for round := range 5 {
			id := fmt.Sprintf("twice-%d", round)
			claim(t, s, history.Record{ID: id})
			var wg sync.WaitGroup
			recs := make([]history.Record, 2)
			for i, state := range []string{history.StateSucceeded, history.StateCancelled} {
				wg.Go(func() {
					var err error
					recs[i], err = s.Finish(ctx(t), history.Record{ID: id, State: state}, []byte(state))
					if err != nil {
						t.Errorf("Finish(%s): %v", state, err)
					}
				})
			}
			wg.Wait()
			got := get(t, s, id)
			logs, _ := s.Logs(ctx(t), id)
			for i, r := range recs {
				if d := cmp.Diff(got, r); d != "" {
					t.Errorf("round %d: Finish %d returned another record than the stored one (-stored +returned):\n%s", round, i, d)
				}
			}
			if string(logs) != got.State {
				t.Errorf("round %d: stored state %s with the output of the other Finish (%q)", round, got.State, logs)
			}
		}
	})
}

func testReopen(t *testing.T, open Opener) {
	s := open(t)
	stored := finish(t, s, history.Record{ID: "kept", Hash: "h", State: history.StateSucceeded, CreatedAt: at(0)}, []byte("output"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// A second Open finds the schema in place: a migration that ran
	// again would fail here (its CREATE TABLE has no IF NOT EXISTS).
	s = newStore(t, open)
	if d := cmp.Diff(stored, get(t, s, "kept")); d != "" {
		t.Errorf("record after reopening (-before +after):\n%s", d)
	}
	if logs, err := s.Logs(ctx(t), "kept"); err != nil || string(logs) != "output" {
		t.Errorf("Logs after reopening = %q, %v", logs, err)
	}
	if _, created := claim(t, s, history.Record{ID: "kept"}); created {
		t.Error("Claim after reopening created a record that exists")
	}
}

// testConcurrentOpen opens one fresh database from two Stores at once, as
// two backend replicas starting together do.
func testConcurrentOpen(t *testing.T, open Opener) {
	stores := make([]history.Store, 3)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i] = newStore(t, open) })
	}
	wg.Wait()
	if t.Failed() {
		// An opener's t.Fatal ended only its goroutine.
		t.FailNow()
	}
	for i, s := range stores {
		id := fmt.Sprintf("from-%d", i)
		claim(t, s, history.Record{ID: id})
		for j, other := range stores {
			if _, err := other.Get(ctx(t), id); err != nil {
				t.Errorf("store %d does not see the claim of store %d: %v", j, i, err)
			}
		}
	}
}

func testText(t *testing.T, open Opener) {
	s := newStore(t, open)
	// Kubernetes messages may carry anything; storing them must not fail.
	update(t, s, history.Record{ID: "text", State: history.StateFailed, Reason: "bad\xffbyte", Message: "nul\x00inside, ünïcode ✓"})
	got := get(t, s, "text")
	if got.Message != "nulinside, ünïcode ✓" || !strings.HasPrefix(got.Reason, "bad") {
		t.Errorf("stored reason %q and message %q", got.Reason, got.Message)
	}
	long := strings.Repeat("m", 64<<10)
	update(t, s, history.Record{ID: "long", State: history.StateRunning, Message: long})
	if got := get(t, s, "long"); got.Message != long {
		t.Errorf("a 64 KiB message came back with %d bytes", len(got.Message))
	}
}

func testPingClose(t *testing.T, open Opener) {
	s := open(t)
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Ping(ctx(t)); err == nil {
		t.Error("Ping after Close succeeded")
	}
}
