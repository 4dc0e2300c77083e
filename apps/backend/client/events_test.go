package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// eventsServer answers each connection with the next script, after
// recording its Last-Event-ID.
func eventsServer(t *testing.T, scripts ...string) (*Client, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(lastIDs)
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		if n >= len(scripts) {
			http.Error(w, `{"error":"no more"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, scripts[n])
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, WithReconnectDelay(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(lastIDs) }
}

func state(seq int64, id, st string) string {
	return fmt.Sprintf("id: %d\nevent: state\ndata: {\"seq\":%d,\"experiment\":%q,\"state\":%q}\n\n", seq, seq, id, st)
}

func TestWatchExperiment(t *testing.T) {
	tests := []struct {
		name    string
		scripts []string
		after   int64
		want    []string
		lastIDs []string
		done    string
	}{
		{
			name:    "one connection",
			scripts: []string{"id: 0\n\n" + state(1, "e", "Submitted") + ": ping\n\n" + state(2, "e", "Succeeded") + "event: done\ndata: {\"state\":\"Succeeded\"}\n\n"},
			want:    []string{"1 Submitted", "2 Succeeded"},
			lastIDs: []string{""},
			done:    "Succeeded",
		},
		{
			name: "dropped twice, resumed where it was",
			scripts: []string{
				"id: 3\n\n",              // dropped before any event: resume from the mark
				state(4, "e", "Running"), // dropped after one
				state(5, "e", "Failed") + "event: done\ndata: {\"state\":\"Failed\"}\n\n",
			},
			after:   3,
			want:    []string{"4 Running", "5 Failed"},
			lastIDs: []string{"3", "3", "4"},
			done:    "Failed",
		},
		{
			name: "queue positions, which have no id: passed on, and a reconnection resumes after the last change",
			scripts: []string{
				"id: 0\n\n" + state(1, "e", "Queued") + position("e", 4),
				position("e", 3) + position("e", 0) + state(2, "e", "Running") + state(3, "e", "Succeeded") + "event: done\ndata: {\"state\":\"Succeeded\"}\n\n",
			},
			want:    []string{"1 Queued", "position 4", "position 3", "position 0", "2 Running", "3 Succeeded"},
			lastIDs: []string{"", "1"},
			done:    "Succeeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, lastIDs := eventsServer(t, tt.scripts...)
			var got []string
			done, err := c.WatchExperiment(context.Background(), "e", tt.after, func(e wire.Event) error {
				got = append(got, fmt.Sprint(e.Seq, " ", e.State))
				return nil
			}, OnPosition(func(p wire.Position) error {
				got = append(got, fmt.Sprint("position ", *p.Position))
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) || done.State != tt.done || !slices.Equal(lastIDs(), tt.lastIDs) {
				t.Errorf("got %v, done %+v, Last-Event-IDs %q; want %v, %s, %q", got, done, lastIDs(), tt.want, tt.done, tt.lastIDs)
			}
		})
	}
}

func TestWatchRefused(t *testing.T) {
	c, _ := eventsServer(t) // every connection: 404
	_, err := c.WatchExperiment(context.Background(), "nope", 0, func(wire.Event) error { return nil })
	if StatusCode(err) != http.StatusNotFound || err.(*Error).Message != "no more" {
		t.Errorf("err = %v; want the 404 as an *Error", err)
	}
}

func TestEventsFrom(t *testing.T) {
	for _, tt := range []struct {
		after  EventsFrom
		lastID string
	}{{FromNow, ""}, {0, "0"}, {41, "41"}} {
		c, lastIDs := eventsServer(t, state(42, "e", "Running"))
		ctx, cancel := context.WithCancel(context.Background())
		err := c.Events(ctx, EventFilter{State: "Running"}, tt.after, func(wire.Event) error { cancel(); return nil })
		if err != context.Canceled || lastIDs()[0] != tt.lastID {
			t.Errorf("Events after %d: %v, Last-Event-ID %q; want it cancelled by fn, %q", tt.after, err, lastIDs()[0], tt.lastID)
		}
	}
}

// position is a "position" event of experiment id at pos, as the backend
// sends it: no id.
func position(id string, pos int32) string {
	return fmt.Sprintf("event: position\ndata: {\"experiment\":%q,\"name\":\"q\",\"position\":%d}\n\n", id, pos)
}
