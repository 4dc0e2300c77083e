package historytest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

func events(t *testing.T, s history.Store, q history.EventQuery) []history.Event {
	t.Helper()
	evs, err := s.Events(ctx(t), q)
	if err != nil {
		t.Fatalf("Events(%+v): %v", q, err)
	}
	return evs
}

func states(evs []history.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID+":"+e.State)
	}
	return out
}

// testEvents: one event per change of state, whichever write made it, none
// for a write that changes no state, in increasing Seq.
func testEvents(t *testing.T, open Opener) {
	s := newStore(t, open)
	if seq, err := s.LastEvent(ctx(t)); err != nil || seq != 0 {
		t.Fatalf("LastEvent of an empty store = %d, %v; want 0", seq, err)
	}
	claim(t, s, history.Record{ID: "a", Submitter: "alice", Set: "sweep", CreatedAt: at(0)})
	update(t, s, history.Record{ID: "a", State: history.StateQueued, Reason: "Pending", Message: "waiting for quota"})
	update(t, s, history.Record{ID: "a", State: history.StateQueued, Message: "still waiting"}) // no change of state
	update(t, s, history.Record{ID: "a", State: history.StateRunning, StartedAt: atp(time.Second)})
	update(t, s, history.Record{ID: "a", State: history.StateSubmitted}) // a late claim event changes nothing
	claim(t, s, history.Record{ID: "b", Submitter: "bob", CreatedAt: at(time.Second)})
	finish(t, s, history.Record{ID: "a", State: history.StateSucceeded, ExitCode: ptr(int32(0))}, []byte("out"))
	update(t, s, history.Record{ID: "a", State: history.StateRunning})                              // after the end: refused
	finish(t, s, history.Record{ID: "a", State: history.StateFailed, ExitCode: ptr(int32(1))}, nil) // likewise
	update(t, s, history.Record{ID: "c", State: history.StateRunning, Submitter: "carol"})          // first seen running

	all := events(t, s, history.EventQuery{})
	want := []string{"a:Submitted", "a:Queued", "a:Running", "b:Submitted", "a:Succeeded", "c:Running"}
	if d := cmp.Diff(want, states(all)); d != "" {
		t.Fatalf("events (-want +got):\n%s", d)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Errorf("seq %d after %d: not increasing", all[i].Seq, all[i-1].Seq)
		}
	}
	last, err := s.LastEvent(ctx(t))
	if err != nil || last != all[len(all)-1].Seq {
		t.Errorf("LastEvent = %d, %v; want %d", last, err, all[len(all)-1].Seq)
	}
	q := all[1]
	if q.Set != "sweep" || q.Submitter != "alice" || q.Reason != "Pending" || q.Message != "waiting for quota" || q.At.IsZero() {
		t.Errorf("the Queued event = %+v; want the record's set, submitter, reason and message", q)
	}
	if end := all[4]; end.ExitCode == nil || *end.ExitCode != 0 {
		t.Errorf("the final event's exit code = %v, want 0", end.ExitCode)
	}

	for _, tt := range []struct {
		name string
		q    history.EventQuery
		want []string
	}{
		{"one experiment", history.EventQuery{ID: "a"}, []string{"a:Submitted", "a:Queued", "a:Running", "a:Succeeded"}},
		{"one set", history.EventQuery{Set: "sweep"}, []string{"a:Submitted", "a:Queued", "a:Running", "a:Succeeded"}},
		{"one submitter", history.EventQuery{Submitter: "bob"}, []string{"b:Submitted"}},
		{"one state", history.EventQuery{State: history.StateRunning}, []string{"a:Running", "c:Running"}},
		{"after", history.EventQuery{After: all[2].Seq}, []string{"b:Submitted", "a:Succeeded", "c:Running"}},
		{"after, one experiment", history.EventQuery{After: all[2].Seq, ID: "a"}, []string{"a:Succeeded"}},
		{"limit", history.EventQuery{Limit: 2}, []string{"a:Submitted", "a:Queued"}},
		{"after the last", history.EventQuery{After: last}, nil},
		{"unknown experiment", history.EventQuery{ID: "nobody"}, nil},
		{"a state no record takes", history.EventQuery{State: "Deleting"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, states(events(t, s, tt.q))); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	for _, q := range []history.EventQuery{{Limit: -1}, {Limit: history.MaxEventBatch + 1}, {State: "Done"}} {
		_, err := s.Events(ctx(t), q)
		wantKind(t, fmt.Sprintf("Events(%+v)", q), err, failure.Invalid)
	}
}

// testEventsDeleted: a record's events go with it, and a Seq is never
// handed out twice, not even after the newest events were deleted.
func testEventsDeleted(t *testing.T, open Opener) {
	s := newStore(t, open)
	old := time.Now().Add(-48 * time.Hour)
	claim(t, s, history.Record{ID: "kept"})
	finish(t, s, history.Record{ID: "old", State: history.StateSucceeded, CreatedAt: old, FinishedAt: &old}, nil)
	claim(t, s, history.Record{ID: "refused", Hash: "h"})
	before, err := s.LastEvent(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if deleted, err := s.Unclaim(ctx(t), "refused", "h"); err != nil || !deleted {
		t.Fatalf("Unclaim = %v, %v", deleted, err)
	}
	if _, err := s.Expire(ctx(t), time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"kept:Submitted"}, states(events(t, s, history.EventQuery{}))); d != "" {
		t.Errorf("events after Unclaim and Expire (-want +got):\n%s", d)
	}
	claim(t, s, history.Record{ID: "refused", Hash: "h2"})
	evs := events(t, s, history.EventQuery{ID: "refused"})
	if len(evs) != 1 || evs[0].Seq <= before {
		t.Errorf("the claim after the delete has events %+v; want one with a seq above %d", evs, before)
	}
}

// testEventsInOrder: readers that poll for what is new while two stores
// (two replicas) write at once see every event: none is committed behind
// one already read.
func testEventsInOrder(t *testing.T, open Opener) {
	writers := []history.Store{newStore(t, open), newStore(t, open)}
	reader := newStore(t, open)
	const perWriter, workers = 60, 4
	done := make(chan struct{})
	var polled []history.Event
	var pollErr error
	var readerWG sync.WaitGroup
	readerWG.Go(func() {
		var after int64
		for {
			// Once every write returned, read until nothing is new.
			stop := isClosed(done)
			evs, err := reader.Events(ctx(t), history.EventQuery{After: after, Limit: history.MaxEventBatch})
			if err != nil {
				pollErr = err
				return
			}
			if len(evs) > 0 {
				polled = append(polled, evs...)
				after = evs[len(evs)-1].Seq
			}
			if stop && len(evs) == 0 {
				return
			}
		}
	})
	var wg sync.WaitGroup
	for w, s := range writers {
		for k := range workers {
			wg.Go(func() {
				for i := range perWriter / workers {
					id := fmt.Sprintf("w%d-%d-%d", w, k, i)
					if _, _, err := s.Claim(ctx(t), history.Record{ID: id}); err != nil {
						t.Errorf("Claim(%s): %v", id, err)
						return
					}
					if err := s.Update(ctx(t), history.Record{ID: id, State: history.StateRunning}); err != nil {
						t.Errorf("Update(%s): %v", id, err)
						return
					}
					if _, err := s.Finish(ctx(t), history.Record{ID: id, State: history.StateSucceeded}, nil); err != nil {
						t.Errorf("Finish(%s): %v", id, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(done)
	readerWG.Wait()
	if pollErr != nil {
		t.Fatalf("poll: %v", pollErr)
	}
	var all []history.Event
	for after := int64(0); ; {
		evs := events(t, reader, history.EventQuery{After: after, Limit: history.MaxEventBatch})
		if len(evs) == 0 {
			break
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].Seq
	}
	if want := len(writers) * perWriter * 3; len(all) != want {
		t.Fatalf("%d events stored, want %d", len(all), want)
	}
	seqs := func(evs []history.Event) []int64 {
		var out []int64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}
	if d := cmp.Diff(seqs(all), seqs(polled), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("a reader polling during the writes missed events committed behind ones it had read (-stored +polled):\n%s", d)
	}
	// Per experiment, the events are in the order of its writes.
	byID := map[string][]string{}
	for _, e := range all {
		byID[e.ID] = append(byID[e.ID], e.State)
	}
	for id, st := range byID {
		if !slices.Equal(st, []string{history.StateSubmitted, history.StateRunning, history.StateSucceeded}) {
			t.Errorf("%s: events %v", id, st)
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
