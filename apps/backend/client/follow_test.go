package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
)

// TestFollowLogsAgainstTheBackend: plain and SSE follows of the real
// handler stream every attempt as it is written and end with the
// experiment.
func TestFollowLogsAgainstTheBackend(t *testing.T) {
	ctx := context.Background()
	env := apitest.Backend(t)
	c := newClient(t, env.URL)
	if _, err := c.Submit(ctx, map[string]any{"id": "f-1"}); err != nil {
		t.Fatal(err)
	}
	env.Attempt(t, "f-1", "p1", 100, 1)
	env.Logs.Write("p1", "crashed\n")
	env.Logs.End("p1")
	env.Attempt(t, "f-1", "p2", 200, -1)
	env.Logs.Write("p2", "Running Experiment: f-1\n")

	var plain bytes.Buffer
	plainDone := make(chan error, 1)
	go func() { plainDone <- c.FollowLogs(ctx, "f-1", &plain) }()
	var events []client.LogEvent
	sseDone := make(chan error, 1)
	go func() {
		sseDone <- c.FollowLogsSSE(ctx, "f-1", "", func(ev client.LogEvent) error { events = append(events, ev); return nil })
	}()
	time.Sleep(50 * time.Millisecond)
	env.Logs.Write("p2", "done\n")
	env.Logs.End("p2")
	env.Attempt(t, "f-1", "p2", 200, 0)
	env.Finish(t, "f-1", true)

	const want = "==> attempt 1 of 2: pod p1 (Failed, exit 1) <==\ncrashed\n==> attempt 2 of 2: pod p2 (Running) <==\nRunning Experiment: f-1\ndone\n"
	if err := <-plainDone; err != nil || plain.String() != want {
		t.Errorf("FollowLogs = %q, %v; want %q", plain.String(), err, want)
	}
	if err := <-sseDone; err != nil {
		t.Fatalf("FollowLogsSSE = %v", err)
	}
	var got strings.Builder
	for _, ev := range events {
		switch ev.Type {
		case client.EventAttempt:
			got.WriteString(string(ev.Data) + "\n")
		case client.EventOutput:
			got.Write(ev.Data)
		}
	}
	last := events[len(events)-1]
	if got.String() != want || last.Type != client.EventDone || last.End.State != "Succeeded" || last.End.ExitCode == nil || *last.End.ExitCode != 0 {
		t.Errorf("FollowLogsSSE events %q ending %+v; want %q and done Succeeded, exit 0", got.String(), last, want)
	}
	if err := c.FollowLogs(ctx, "nope", io.Discard); client.StatusCode(err) != http.StatusNotFound {
		t.Errorf("FollowLogs of an unknown experiment = %v, want a 404", err)
	}
	if err := c.FollowLogsSSE(ctx, "nope", "", func(client.LogEvent) error { return nil }); client.StatusCode(err) != http.StatusNotFound {
		t.Errorf("FollowLogsSSE of an unknown experiment = %v, want a 404, not retried", err)
	}
}

// droppingServer serves an event stream that breaks after each event
// but the last: every reconnection must carry the last id, and gets the
// events after it.
func droppingServer(t *testing.T) (*httptest.Server, func() []string) {
	t.Helper()
	events := []string{
		"id: 1:3\ndata: ab\ndata: \n\n",
		": ping\n\nid: 1:5\ndata: cd\n\n",
		"event: error\ndata: {\"error\": \"the API server is unreachable\"}\n\n",
		"id: 1:6\ndata: \ndata: \n\n",
		"event: done\ndata: {\"state\":\"Failed\",\"source\":\"history\"}\n\n",
	}
	ids := []string{"", "1:3", "1:5", "1:5", "1:6"}
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last := r.Header.Get("Last-Event-ID")
		seen = append(seen, last)
		n := len(seen)
		mu.Unlock()
		if r.URL.Query().Get("follow") != "true" || r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "not a follow", http.StatusBadRequest)
			return
		}
		if n > len(events) {
			http.Error(w, "too many requests", http.StatusBadRequest)
			return
		}
		if n == 2 {
			// A reconnection refused for now: retried.
			w.Header().Set("Retry-After", "0")
			http.Error(w, `{"error": "busy"}`, http.StatusServiceUnavailable)
			mu.Lock()
			seen[n-1] += " (503)"
			events = append(events[:1], events...)
			ids = append(ids[:1], ids...)
			mu.Unlock()
			return
		}
		if last != ids[n-1] {
			http.Error(w, fmt.Sprintf("Last-Event-ID %q, want %q", last, ids[n-1]), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "retry: 1\n\n%s", events[n-1])
		// Ending without done is a dropped connection.
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

// TestFollowLogsSSEResumes: a connection that drops, ends with an error
// event, or is refused with 503 is resumed with Last-Event-ID: the caller
// sees each byte once.
func TestFollowLogsSSEResumes(t *testing.T) {
	srv, seen := droppingServer(t)
	c := newClient(t, srv.URL, client.WithReconnectDelay(time.Millisecond))
	var out strings.Builder
	var end string
	err := c.FollowLogsSSE(context.Background(), "e1", "", func(ev client.LogEvent) error {
		switch ev.Type {
		case client.EventOutput:
			out.Write(ev.Data)
		case client.EventDone:
			end = ev.End.State + "/" + ev.End.Source
		}
		return nil
	})
	if err != nil || out.String() != "ab\ncd\n" || end != "Failed/history" {
		t.Errorf("FollowLogsSSE = %q, done %q, %v; want ab\\ncd\\n once, done Failed/history (requests %q)", out.String(), end, err, seen())
	}

	stop := errors.New("enough")
	srv2, _ := droppingServer(t)
	err = newClient(t, srv2.URL).FollowLogsSSE(context.Background(), "e1", "", func(client.LogEvent) error { return stop })
	if !errors.Is(err, stop) {
		t.Errorf("FollowLogsSSE with fn failing = %v, want fn's error", err)
	}
}
