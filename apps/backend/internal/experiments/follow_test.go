package experiments

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

type textSink struct {
	mu    sync.Mutex
	begun bool
	b     strings.Builder
}

func (s *textSink) Begin() error { s.mu.Lock(); s.begun = true; s.mu.Unlock(); return nil }
func (s *textSink) Header(_ lifecycle.Position, line string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line + "\n")
	return nil
}
func (s *textSink) Output(_ lifecycle.Position, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	return nil
}

var fast = lifecycle.FollowOptions{CallTimeout: 5 * time.Second, Poll: 5 * time.Millisecond}

// TestFollowLogsFromTheRecord: without a Job, a follow answers from the
// record once it is final, waits while it is not (the recorder is about to
// store it), ends at once for a claim whose POST gave up, and is a
// NotFound before anything is sent when there is neither.
func TestFollowLogsFromTheRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		history bool
		claim   bool
		age     time.Duration
		finish  string // stored output, finished after a moment; "" for none
		want    string
		state   string
		kind    failure.Kind
	}{
		{name: "neither job nor history", kind: failure.NotFound},
		{name: "neither job nor record", history: true, kind: failure.NotFound},
		{name: "record finished while the follow waits", history: true, claim: true, finish: "out\n", want: "out\n", state: history.StateSucceeded},
		{name: "a claim whose POST gave up", history: true, claim: true, age: 2 * DefaultClaimGrace, state: history.StateSubmitted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.history)
			f.svc.Now = func() time.Time { return t0.Add(tt.age) }
			if tt.claim {
				if _, _, err := f.store.Claim(ctx, history.Record{ID: "e1", Hash: "h", Namespace: ns, Job: "j", CreatedAt: t0}); err != nil {
					t.Fatal(err)
				}
			}
			sink := &textSink{}
			type result struct {
				end wire.LogEnd
				err error
			}
			done := make(chan result, 1)
			go func() {
				end, err := f.svc.FollowLogs(ctx, "e1", lifecycle.Position{}, sink, fast)
				done <- result{end, err}
			}()
			if tt.finish != "" {
				time.Sleep(30 * time.Millisecond)
				select {
				case r := <-done:
					t.Fatalf("the follow ended before the record was final: %+v", r)
				default:
				}
				if _, err := f.store.Finish(ctx, history.Record{ID: "e1", State: history.StateSucceeded}, []byte(tt.finish)); err != nil {
					t.Fatal(err)
				}
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the follow did not end")
			}
			if tt.kind != "" {
				if failure.KindOf(r.err) != tt.kind || sink.begun {
					t.Errorf("FollowLogs = %+v, %v (begun %v); want %s before anything is sent", r.end, r.err, sink.begun, tt.kind)
				}
				return
			}
			if r.err != nil || r.end.State != tt.state || r.end.Source != lifecycle.SourceHistory || sink.b.String() != tt.want {
				t.Errorf("FollowLogs = %+v, %v after %q; want %s from history after %q", r.end, r.err, sink.b.String(), tt.state, tt.want)
			}
		})
	}
}
