package experiments

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/webhook"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func notifyPolicy(t *testing.T) *webhook.Config {
	t.Helper()
	c, err := webhook.Parse([]byte("allowNotify: [hooks.example.com, '*.ci.example.org']\nnotifySecret: 0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNotifyCheckedBeforeTheClaim: a notify URL the deployment does not
// allow is refused (400, naming the allowed hosts) before anything is
// claimed or created; an allowed one is kept with the claim.
func TestNotifyCheckedBeforeTheClaim(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		history     bool
		policy      bool
		body        string
		wantErr     []string
		wantCreated bool
	}{
		{name: "allowed", history: true, policy: true, wantCreated: true,
			body: `{"experiment": {"id": "n1"}, "notify": ["https://hooks.example.com/x?token=1", "https://a.ci.example.org/"]}`},
		{name: "a host not allowed", history: true, policy: true,
			body:    `{"experiment": {"id": "n1"}, "notify": ["https://hooks.example.com/x", "https://evil.example/steal"]}`,
			wantErr: []string{`"notify"[1]`, "https://evil.example", "hooks.example.com", "*.ci.example.org"}},
		{name: "http not allowed", history: true, policy: true,
			body:    `{"experiment": {"id": "n1"}, "notify": ["http://hooks.example.com/x"]}`,
			wantErr: []string{"http://hooks.example.com is not allowed"}},
		{name: "notify off", history: true, policy: false,
			body:    `{"experiment": {"id": "n1"}, "notify": ["https://hooks.example.com/x"]}`,
			wantErr: []string{`"notify" is not enabled`}},
		{name: "no history", history: false, policy: true,
			body:    `{"experiment": {"id": "n1"}, "notify": ["https://hooks.example.com/x"]}`,
			wantErr: []string{"needs the history"}},
		{name: "no notify, notify off", history: true, policy: false, wantCreated: true,
			body: `{"experiment": {"id": "n1"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.history)
			if tt.policy {
				f.svc.Notify = notifyPolicy(t)
			}
			exp := decode(t, tt.body)
			res, err := f.svc.Submit(ctx, exp, "alice")
			if len(tt.wantErr) > 0 {
				if failure.KindOf(err) != failure.Invalid {
					t.Fatalf("Submit = %+v, %v; want Invalid", res, err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(failure.MessageOf(err), w) {
						t.Errorf("message %q lacks %q", failure.MessageOf(err), w)
					}
				}
				if n := len(f.jobs(t)); n != 0 {
					t.Errorf("%d Jobs after a refused notify, want none", n)
				}
				if f.store != nil {
					if _, err := f.store.Get(ctx, "n1"); failure.KindOf(err) != failure.NotFound {
						t.Errorf("record after a refused notify: %v; want none claimed", err)
					}
				}
				return
			}
			if err != nil || res.Created != tt.wantCreated {
				t.Fatalf("Submit = %+v, %v", res, err)
			}
			rec, err := f.store.Get(ctx, "n1")
			if err != nil || !cmp.Equal(rec.Notify, exp.Notify) {
				t.Errorf("record = %+v, %v; want the notify URLs %v", rec, err, exp.Notify)
			}
		})
	}
}

// TestGetShowsDeliveries: the status lists the experiment's deliveries, a
// notify URL without its query, a pending one with its next attempt.
func TestGetShowsDeliveries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.Notify = notifyPolicy(t)
	if _, err := f.store.OutboxCursor(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "d1"}, "notify": ["https://hooks.example.com/x?token=secret"]}`), ""); err != nil {
		t.Fatal(err)
	}
	f.finish(t, "d1", history.StateSucceeded, "out")
	evs, err := f.store.OutboxEvents(ctx, 0, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("events = %+v, %v", evs, err)
	}
	end := evs[1].Seq
	created := time.Now().UTC().Truncate(time.Microsecond)
	ds := []history.NewDelivery{
		{Experiment: "d1", Seq: end, Kind: history.DeliverySink, Target: "ops"},
		{Experiment: "d1", Seq: end, Kind: history.DeliveryNotify, Target: "https://hooks.example.com/x?token=secret"},
	}
	if ok, err := f.store.AddDeliveries(ctx, evs[0].Seq-1, end, ds, created); err != nil || !ok {
		t.Fatalf("AddDeliveries = %v, %v", ok, err)
	}
	leased, err := f.store.LeaseDeliveries(ctx, created, created.Add(time.Minute), 10)
	if err != nil || len(leased) != 2 {
		t.Fatalf("leased %d, %v", len(leased), err)
	}
	next := created.Add(time.Hour)
	for _, d := range leased {
		a := history.Attempt{ID: d.ID, State: history.DeliveryDelivered, Code: 200, At: created, NextAt: created}
		if d.Kind == history.DeliveryNotify {
			a = history.Attempt{ID: d.ID, State: history.DeliveryPending, Code: 503, Error: "503 Service Unavailable", At: created, NextAt: next}
		}
		if err := f.store.RecordAttempt(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.svc.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Delivery{
		{Kind: "sink", Target: "ops", Event: end, EventState: history.StateSucceeded, State: "delivered", Attempts: 1, LastCode: 200, DoneAt: &created},
		{Kind: "notify", Target: "https://hooks.example.com/x", Event: end, EventState: history.StateSucceeded, State: "pending", Attempts: 1,
			LastCode: 503, LastError: "503 Service Unavailable", NextAttempt: &next},
	}
	if d := cmp.Diff(want, st.Deliveries); d != "" {
		t.Errorf("deliveries (-want +got):\n%s", d)
	}
}
