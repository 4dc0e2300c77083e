package historytest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

// testNotify: a claim's notify URLs are stored and kept once set, like the
// hash: neither a retried claim nor the recorder's writes change them.
func testNotify(t *testing.T, open Opener) {
	s := newStore(t, open)
	urls := []string{"https://hooks.example.com/a?token=x", "https://other.example.com/b"}
	got, created := claim(t, s, history.Record{ID: "n", Hash: "h", Notify: urls})
	if !created || !slices.Equal(got.Notify, urls) {
		t.Fatalf("Claim = %+v, %v; want the notify URLs %v", got, created, urls)
	}
	claim(t, s, history.Record{ID: "n", Hash: "h", Notify: []string{"https://late.example.com/"}})
	update(t, s, history.Record{ID: "n", State: history.StateRunning})
	finish(t, s, history.Record{ID: "n", State: history.StateSucceeded}, nil)
	if got := get(t, s, "n"); !slices.Equal(got.Notify, urls) {
		t.Errorf("notify after a retried claim, progress and finish = %v, want %v", got.Notify, urls)
	}
	claim(t, s, history.Record{ID: "plain", Hash: "h"})
	if got := get(t, s, "plain"); got.Notify != nil {
		t.Errorf("notify of a claim without = %#v, want nil", got.Notify)
	}
	// A record the recorder made (its claim lost) has none.
	update(t, s, history.Record{ID: "seen", State: history.StateRunning})
	if got := get(t, s, "seen"); got.Notify != nil {
		t.Errorf("notify of a record made by Update = %#v, want nil", got.Notify)
	}
	page, err := s.List(ctx(t), history.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range page.Items {
		if rec.ID == "n" && !slices.Equal(rec.Notify, urls) {
			t.Errorf("listed notify = %v, want %v", rec.Notify, urls)
		}
	}
}

func outboxCursor(t *testing.T, s history.Store) int64 {
	t.Helper()
	seq, err := s.OutboxCursor(ctx(t))
	if err != nil {
		t.Fatalf("OutboxCursor: %v", err)
	}
	return seq
}

func deliveries(t *testing.T, s history.Store, id string) []history.Delivery {
	t.Helper()
	ds, err := s.Deliveries(ctx(t), id)
	if err != nil {
		t.Fatalf("Deliveries(%s): %v", id, err)
	}
	return ds
}

func lease(t *testing.T, s history.Store, now time.Time, limit int) []history.Delivery {
	t.Helper()
	ds, err := s.LeaseDeliveries(ctx(t), now, now.Add(time.Minute), limit)
	if err != nil {
		t.Fatalf("LeaseDeliveries: %v", err)
	}
	return ds
}

func pending(t *testing.T, s history.Store) int64 {
	t.Helper()
	n, err := s.PendingDeliveries(ctx(t))
	if err != nil {
		t.Fatalf("PendingDeliveries: %v", err)
	}
	return n
}

// targets names deliveries as kind:target:state.
func targets(ds []history.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s:%s:%s", d.Kind, d.Target, d.State))
	}
	return out
}

// testOutbox: the cursor starts at the newest event; events after it come
// with their notify URLs; deliveries are created with the cursor's move,
// once; leased deliveries are due again only after their lease; attempts
// are recorded, and a delivered or failed delivery never changes again.
func testOutbox(t *testing.T, open Opener) {
	s := newStore(t, open)
	claim(t, s, history.Record{ID: "before", Notify: []string{"https://a.example/"}})
	last, err := s.LastEvent(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	cur := outboxCursor(t, s)
	if cur != last || cur == 0 {
		t.Fatalf("a new cursor = %d, want the newest event %d", cur, last)
	}
	if again := outboxCursor(t, s); again != cur {
		t.Fatalf("the cursor read again = %d, want %d", again, cur)
	}

	urls := []string{"https://a.example/x", "https://b.example/y"}
	claim(t, s, history.Record{ID: "b", Set: "sweep", Notify: urls})
	finish(t, s, history.Record{ID: "b", State: history.StateSucceeded, ExitCode: ptr[int32](0)}, nil)
	evs, err := s.OutboxEvents(ctx(t), cur, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].State != history.StateSubmitted || evs[1].State != history.StateSucceeded {
		t.Fatalf("OutboxEvents after the cursor = %+v; want b's Submitted and Succeeded", evs)
	}
	for _, e := range evs {
		if e.ID != "b" || e.Set != "sweep" || !slices.Equal(e.Notify, urls) || e.Seq <= cur {
			t.Errorf("outbox event %+v: want b's, of set sweep, with its notify URLs, after %d", e, cur)
		}
	}
	end := evs[1].Seq
	ds := []history.NewDelivery{
		{Experiment: "b", Seq: end, Kind: history.DeliverySink, Target: "ops"},
		{Experiment: "b", Seq: end, Kind: history.DeliveryNotify, Target: urls[0]},
		{Experiment: "b", Seq: end, Kind: history.DeliveryNotify, Target: urls[1]},
	}
	created := at(0)
	if moved, err := s.AddDeliveries(ctx(t), cur, end, ds, created); err != nil || !moved {
		t.Fatalf("AddDeliveries = %v, %v; want the cursor moved", moved, err)
	}
	// A second deliverer that read the same cursor creates nothing.
	if moved, err := s.AddDeliveries(ctx(t), cur, end, ds, created); err != nil || moved {
		t.Fatalf("AddDeliveries from a cursor that moved = %v, %v; want false", moved, err)
	}
	if got := outboxCursor(t, s); got != end {
		t.Errorf("cursor = %d, want %d", got, end)
	}
	want := []string{"sink:ops:pending", "notify:" + urls[0] + ":pending", "notify:" + urls[1] + ":pending"}
	got := deliveries(t, s, "b")
	if d := cmp.Diff(want, targets(got)); d != "" {
		t.Fatalf("deliveries (-want +got):\n%s", d)
	}
	for _, d := range got {
		if d.Event.State != history.StateSucceeded || d.Event.Seq != end {
			t.Errorf("delivery's event = %+v, want the state of event %d, Succeeded", d.Event, end)
		}
		if d.Seq != end || d.Experiment != "b" || d.Attempts != 0 || !d.CreatedAt.Equal(created) || !d.NextAt.Equal(created) || d.DoneAt != nil || d.LastCode != 0 {
			t.Errorf("new delivery %+v: want event %d, no attempt, due at its creation %v", d, end, created)
		}
	}
	if n := pending(t, s); n != 3 {
		t.Errorf("PendingDeliveries = %d, want 3", n)
	}

	now := at(time.Hour)
	leased := lease(t, s, now, 10)
	if len(leased) != 3 {
		t.Fatalf("leased %d deliveries, want 3", len(leased))
	}
	for _, d := range leased {
		if d.Event.Seq != end || d.Event.ID != "b" || d.Event.State != history.StateSucceeded || d.Event.ExitCode == nil {
			t.Errorf("leased delivery's event = %+v, want b's Succeeded (seq %d)", d.Event, end)
		}
		if !d.NextAt.Equal(now.Add(time.Minute)) {
			t.Errorf("leased delivery next attempt %v, want the lease's end %v", d.NextAt, now.Add(time.Minute))
		}
	}
	if again := lease(t, s, now, 10); len(again) != 0 {
		t.Errorf("leased again during the lease: %v", targets(again))
	}
	if limited := lease(t, s, now.Add(2*time.Minute), 1); len(limited) != 1 {
		t.Errorf("lease with limit 1 after the lease ended: %d deliveries", len(limited))
	}

	byTarget := map[string]int64{}
	for _, d := range leased {
		byTarget[d.Target] = d.ID
	}
	doneAt := at(2 * time.Hour)
	retryAt := at(3 * time.Hour)
	for _, a := range []history.Attempt{
		{ID: byTarget["ops"], State: history.DeliveryDelivered, Code: 204, At: doneAt, NextAt: doneAt},
		{ID: byTarget[urls[0]], State: history.DeliveryPending, Code: 503, Error: "503 Service Unavailable", At: doneAt, NextAt: retryAt},
		{ID: byTarget[urls[1]], State: history.DeliveryFailed, Code: 410, Error: "410 Gone", At: doneAt, NextAt: doneAt},
	} {
		if err := s.RecordAttempt(ctx(t), a); err != nil {
			t.Fatalf("RecordAttempt(%+v): %v", a, err)
		}
	}
	// Once delivered, a late attempt (a second deliverer's) changes nothing.
	if err := s.RecordAttempt(ctx(t), history.Attempt{ID: byTarget["ops"], State: history.DeliveryFailed, Code: 500, At: retryAt, NextAt: retryAt}); err != nil {
		t.Fatal(err)
	}
	got = deliveries(t, s, "b")
	want = []string{"sink:ops:delivered", "notify:" + urls[0] + ":pending", "notify:" + urls[1] + ":failed"}
	if d := cmp.Diff(want, targets(got)); d != "" {
		t.Fatalf("deliveries after the attempts (-want +got):\n%s", d)
	}
	wantDone := []*time.Time{&doneAt, nil, &doneAt}
	wantCode := []int{204, 503, 410}
	for i, d := range got {
		if d.Attempts != 1 || d.LastCode != wantCode[i] || !cmp.Equal(d.DoneAt, wantDone[i]) {
			t.Errorf("delivery %s: attempts %d, code %d, done %v; want 1, %d, %v", d.Target, d.Attempts, d.LastCode, d.DoneAt, wantCode[i], wantDone[i])
		}
	}
	if got[1].LastError != "503 Service Unavailable" || !got[1].NextAt.Equal(retryAt) {
		t.Errorf("retried delivery: error %q, next %v; want the 503 and %v", got[1].LastError, got[1].NextAt, retryAt)
	}
	if n := pending(t, s); n != 1 {
		t.Errorf("PendingDeliveries = %d, want 1", n)
	}
	if early := lease(t, s, retryAt.Add(-time.Second), 10); len(early) != 0 {
		t.Errorf("leased before the retry is due: %v", targets(early))
	}
	if due := lease(t, s, retryAt, 10); len(due) != 1 || due[0].Target != urls[0] {
		t.Errorf("leased at the retry's time: %v, want the pending notify", targets(due))
	}

	for _, tt := range []struct {
		name string
		err  error
	}{
		{"lease of 0", func() error { _, err := s.LeaseDeliveries(ctx(t), now, now, 0); return err }()},
		{"lease beyond the max", func() error {
			_, err := s.LeaseDeliveries(ctx(t), now, now, history.MaxDeliveryLease+1)
			return err
		}()},
		{"events batch of 0", func() error { _, err := s.OutboxEvents(ctx(t), 0, 0); return err }()},
		{"cursor moved back", func() error { _, err := s.AddDeliveries(ctx(t), end, end-1, nil, now); return err }()},
		{"delivery outside the cursor's move", func() error {
			_, err := s.AddDeliveries(ctx(t), end, end+5, []history.NewDelivery{{Experiment: "b", Seq: end, Kind: history.DeliverySink, Target: "ops"}}, now)
			return err
		}()},
		{"delivery of an unknown kind", func() error {
			_, err := s.AddDeliveries(ctx(t), end, end+1, []history.NewDelivery{{Experiment: "b", Seq: end + 1, Kind: "email", Target: "ops"}}, now)
			return err
		}()},
		{"attempt of an unknown state", s.RecordAttempt(ctx(t), history.Attempt{ID: 1, State: "lost"})},
	} {
		wantKind(t, tt.name, tt.err, failure.Invalid)
	}
	if got := outboxCursor(t, s); got != end {
		t.Errorf("cursor after refused calls = %d, want %d", got, end)
	}
}

// testOutboxDeleted: deliveries go with their record (Expire, Unclaim),
// and an event whose record went before its deliveries were created moves
// the cursor without creating any.
func testOutboxDeleted(t *testing.T, open Opener) {
	s := newStore(t, open)
	cur := outboxCursor(t, s)
	old := time.Now().Add(-48 * time.Hour)
	finish(t, s, history.Record{ID: "old", State: history.StateSucceeded, CreatedAt: old, FinishedAt: &old}, nil)
	claim(t, s, history.Record{ID: "refused", Hash: "h"})
	claim(t, s, history.Record{ID: "kept"})
	evs, err := s.OutboxEvents(ctx(t), cur, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ds []history.NewDelivery
	for _, e := range evs {
		ds = append(ds, history.NewDelivery{Experiment: e.ID, Seq: e.Seq, Kind: history.DeliverySink, Target: "ops"})
	}
	// "refused" goes before its deliveries are made.
	if deleted, err := s.Unclaim(ctx(t), "refused", "h"); err != nil || !deleted {
		t.Fatalf("Unclaim = %v, %v", deleted, err)
	}
	end := evs[len(evs)-1].Seq
	if moved, err := s.AddDeliveries(ctx(t), cur, end, ds, time.Now()); err != nil || !moved {
		t.Fatalf("AddDeliveries = %v, %v", moved, err)
	}
	if got := deliveries(t, s, "refused"); len(got) != 0 {
		t.Errorf("deliveries of a record gone before they were made: %v", targets(got))
	}
	if n := pending(t, s); n != 2 {
		t.Errorf("PendingDeliveries = %d, want old's and kept's", n)
	}
	if _, err := s.Expire(ctx(t), time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := deliveries(t, s, "old"); len(got) != 0 {
		t.Errorf("deliveries of an expired record: %v", targets(got))
	}
	if got := targets(deliveries(t, s, "kept")); !slices.Equal(got, []string{"sink:ops:pending"}) {
		t.Errorf("deliveries of the kept record: %v", got)
	}
	if n := pending(t, s); n != 1 {
		t.Errorf("PendingDeliveries after Expire = %d, want 1", n)
	}
}

// testOutboxConcurrent: two replicas' deliverers racing from one cursor
// create each delivery once, and never lease one delivery both at once.
func testOutboxConcurrent(t *testing.T, open Opener) {
	stores := []history.Store{newStore(t, open), newStore(t, open)}
	cur := outboxCursor(t, stores[0])
	const n = 40
	for i := range n {
		claim(t, stores[i%2], history.Record{ID: fmt.Sprintf("c%02d", i)})
	}
	evs, err := stores[0].OutboxEvents(ctx(t), cur, 100)
	if err != nil || len(evs) != n {
		t.Fatalf("OutboxEvents = %d events, %v; want %d", len(evs), err, n)
	}
	var ds []history.NewDelivery
	for _, e := range evs {
		for _, target := range []string{"a", "b"} {
			ds = append(ds, history.NewDelivery{Experiment: e.ID, Seq: e.Seq, Kind: history.DeliverySink, Target: target})
		}
	}
	end := evs[len(evs)-1].Seq
	var wg sync.WaitGroup
	moved := make([]bool, 4)
	for i := range moved {
		wg.Go(func() {
			var err error
			if moved[i], err = stores[i%2].AddDeliveries(ctx(t), cur, end, ds, time.Now()); err != nil {
				t.Errorf("AddDeliveries: %v", err)
			}
		})
	}
	wg.Wait()
	if k := len(slices.DeleteFunc(slices.Clone(moved), func(b bool) bool { return !b })); k != 1 {
		t.Fatalf("%d of 4 racing AddDeliveries moved the cursor, want 1", k)
	}
	if got := pending(t, stores[0]); got != 2*n {
		t.Fatalf("PendingDeliveries = %d, want %d", got, 2*n)
	}

	now := time.Now().Add(time.Second)
	var mu sync.Mutex
	seen := map[int64]int{}
	for i := range 4 {
		wg.Go(func() {
			for {
				ds, err := stores[i%2].LeaseDeliveries(ctx(t), now, now.Add(time.Hour), 7)
				if err != nil {
					t.Errorf("LeaseDeliveries: %v", err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 2*n {
		t.Errorf("leased %d distinct deliveries, want %d", len(seen), 2*n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("delivery %d leased %d times at once", id, k)
		}
	}
	var all []history.Delivery
	for i := range n {
		all = append(all, deliveries(t, stores[1], fmt.Sprintf("c%02d", i))...)
	}
	if len(all) != 2*n {
		t.Errorf("%d deliveries stored, want %d", len(all), 2*n)
	}
}
