package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// eventsEnv is a backend whose history is a SQLite store the test writes,
// as the recorder would.
type eventsEnv struct {
	svc     *experiments.Service
	store   history.Store
	hub     *events.Hub
	metrics *metrics.Metrics
	srv     *httptest.Server
}

func newEventsEnv(t testing.TB, cfg Config) *eventsEnv {
	t.Helper()
	return newEventsEnvPoll(t, cfg, 5*time.Millisecond)
}

// newEventsEnvPoll is newEventsEnv with the Hub polling every poll.
func newEventsEnvPoll(t testing.TB, cfg Config, poll time.Duration) *eventsEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &eventsEnv{store: store, hub: events.NewHub(store, events.Options{Poll: poll}), metrics: metrics.New()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.svc = &experiments.Service{History: store}
	cfg.Experiments = e.svc
	cfg.Metrics, cfg.Logger, cfg.Events, cfg.History = e.metrics, slog.New(slog.DiscardHandler), e.hub, store
	e.srv = httptest.NewServer(NewHandler(cfg))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *eventsEnv) write(t testing.TB, rec history.Record) {
	t.Helper()
	var err error
	switch {
	case rec.State == "":
		_, _, err = e.store.Claim(context.Background(), rec)
	case history.Final(rec.State):
		_, err = e.store.Finish(context.Background(), rec, nil)
	default:
		err = e.store.Update(context.Background(), rec)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// sseStream reads a stream's events as they come.
type sseStream struct {
	res    *http.Response
	events chan sseEvent
}

func (e *eventsEnv) open(t *testing.T, path string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &sseStream{res: res, events: make(chan sseEvent, 100)}
	if res.StatusCode != http.StatusOK {
		return s
	}
	go func() {
		defer close(s.events)
		defer res.Body.Close()
		r := &sseReader{r: bufio.NewReader(res.Body)}
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.name != ":" {
				s.events <- ev
			}
		}
	}()
	return s
}

// next returns the next event: "state id:state" for a state event, "done
// <data>" or "error <data>" for the others, "EOF" when the stream ended.
func (s *sseStream) next(t *testing.T) string {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			return "EOF"
		}
		if ev.name != wire.EventState {
			return ev.name + " " + ev.data
		}
		var w wire.Event
		if err := json.Unmarshal([]byte(ev.data), &w); err != nil {
			t.Fatalf("state event %q: %v", ev.data, err)
		}
		if fmt.Sprint(w.Seq) != ev.id {
			t.Errorf("event id %s, seq %d: want the same", ev.id, w.Seq)
		}
		return w.Experiment + ":" + w.State
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return ""
	}
}

func (s *sseStream) want(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for range want {
		got = append(got, s.next(t))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

func (e *eventsEnv) lastSeq(t *testing.T) string {
	seq, err := e.store.LastEvent(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(seq)
}

func TestExperimentEvents(t *testing.T) {
	e := newEventsEnv(t, Config{})
	e.write(t, history.Record{ID: "e1", Submitter: "alice"})
	s := e.open(t, "/experiments/e1/events", nil)
	if ct := s.res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	s.want(t, "e1:Submitted")
	e.write(t, history.Record{ID: "e1", State: history.StateRunning})
	s.want(t, "e1:Running")
	running := e.lastSeq(t)
	e.write(t, history.Record{ID: "e1", State: history.StateRunning, Message: "no change of state, no event"})
	e.write(t, history.Record{ID: "e2", State: history.StateRunning})
	e.write(t, history.Record{ID: "e1", State: history.StateSucceeded, ExitCode: new(int32(0))})
	s.want(t, "e1:Succeeded", `done {"state":"Succeeded"}`, "EOF")

	t.Run("resumed with Last-Event-ID", func(t *testing.T) {
		s := e.open(t, "/experiments/e1/events", http.Header{"Last-Event-Id": {running}})
		s.want(t, "e1:Succeeded", `done {"state":"Succeeded"}`, "EOF")
	})
	t.Run("resumed after the last", func(t *testing.T) {
		s := e.open(t, "/experiments/e1/events?after="+e.lastSeq(t), nil)
		s.want(t, `done {"state":"Succeeded"}`, "EOF")
	})
	t.Run("resumed while running", func(t *testing.T) {
		s := e.open(t, "/experiments/e2/events", http.Header{"Last-Event-Id": {e.lastSeq(t)}})
		for e.hub.Subscribers() == 0 {
			time.Sleep(time.Millisecond)
		}
		e.write(t, history.Record{ID: "e2", State: history.StateFailed})
		s.want(t, "e2:Failed", `done {"state":"Failed"}`, "EOF")
	})
	for _, tt := range []struct {
		name, path string
		header     http.Header
		code       int
		msg        string
	}{
		{"unknown experiment", "/experiments/nope/events", nil, http.StatusNotFound, "no record"},
		{"bad Last-Event-ID", "/experiments/e1/events", http.Header{"Last-Event-Id": {"1:5"}}, http.StatusBadRequest, "Last-Event-ID"},
		{"bad after", "/experiments/e1/events?after=-1", nil, http.StatusBadRequest, "after"},
		{"bad state", "/events?state=Done", nil, http.StatusBadRequest, "state"},
		{"unknown set", "/experiment-sets/nope/events", nil, http.StatusNotFound, "no experiment set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := e.open(t, tt.path, tt.header)
			defer s.res.Body.Close()
			var body wire.Error
			_ = json.NewDecoder(s.res.Body).Decode(&body)
			if s.res.StatusCode != tt.code || !strings.Contains(body.Error, tt.msg) {
				t.Errorf("%d %q; want %d with %q", s.res.StatusCode, body.Error, tt.code, tt.msg)
			}
		})
	}
	if n := e.hub.Subscribers(); n != 0 {
		t.Errorf("%d subscriptions left after every stream ended", n)
	}
}

func TestAllEvents(t *testing.T) {
	e := newEventsEnv(t, Config{})
	e.write(t, history.Record{ID: "old", Submitter: "alice"})
	all := e.open(t, "/events", nil)
	bob := e.open(t, "/events?submitter=bob", nil)
	running := e.open(t, "/events?state=Running", nil)
	set := e.open(t, "/events?set=s1", nil)
	for e.hub.Subscribers() < 4 {
		time.Sleep(time.Millisecond)
	}
	e.write(t, history.Record{ID: "a", Submitter: "alice", Set: "s1"})
	e.write(t, history.Record{ID: "b", Submitter: "bob"})
	e.write(t, history.Record{ID: "a", State: history.StateRunning})
	e.write(t, history.Record{ID: "b", State: history.StateRunning})
	all.want(t, "a:Submitted", "b:Submitted", "a:Running", "b:Running")
	bob.want(t, "b:Submitted", "b:Running")
	running.want(t, "a:Running", "b:Running")
	set.want(t, "a:Submitted", "a:Running")
	// From the start of the store, on request.
	e.open(t, "/events?after=0", nil).want(t, "old:Submitted", "a:Submitted", "b:Submitted", "a:Running", "b:Running")
}

func TestSetEvents(t *testing.T) {
	e := newEventsEnv(t, Config{})
	e.write(t, history.Record{ID: "a", Set: "s1"})
	e.write(t, history.Record{ID: "b", Set: "s1"})
	s := e.open(t, "/experiment-sets/s1/events", nil)
	s.want(t, "a:Submitted", "b:Submitted")
	e.write(t, history.Record{ID: "a", State: history.StateSucceeded})
	e.write(t, history.Record{ID: "b", State: history.StateCancelled})
	s.want(t, "a:Succeeded", "b:Cancelled", `done {"counts":{"Cancelled":1,"Succeeded":1}}`, "EOF")
	// A finished set replays and ends.
	e.open(t, "/experiment-sets/s1/events", nil).want(t, "a:Submitted", "b:Submitted", "a:Succeeded", "b:Cancelled",
		`done {"counts":{"Cancelled":1,"Succeeded":1}}`, "EOF")
}

func TestEventsBounded(t *testing.T) {
	e := newEventsEnv(t, Config{MaxEventStreams: 1})
	e.write(t, history.Record{ID: "a"})
	first := e.open(t, "/experiments/a/events", nil)
	first.want(t, "a:Submitted")
	second := e.open(t, "/events", nil)
	if second.res.StatusCode != http.StatusTooManyRequests || second.res.Header.Get("Retry-After") == "" {
		t.Errorf("a stream beyond --max-event-streams: %d, Retry-After %q", second.res.StatusCode, second.res.Header.Get("Retry-After"))
	}
	second.res.Body.Close()
	first.res.Body.Close()
	// The client went away: its slot, subscription and gauge are released.
	deadline := time.Now().Add(5 * time.Second)
	for e.hub.Subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.hub.Subscribers(); n != 0 {
		t.Fatalf("%d subscriptions left after the client went away", n)
	}
	third := e.open(t, "/events", nil)
	defer third.res.Body.Close()
	if third.res.StatusCode != http.StatusOK {
		t.Errorf("after the first stream ended: %d", third.res.StatusCode)
	}
}

func TestEventsWithoutHistory(t *testing.T) {
	gin.SetMode(gin.TestMode)
	h := NewHandler(Config{Experiments: &experiments.Service{}, Metrics: metrics.New()})
	for _, path := range []string{"/events", "/experiments/e1/events", "/experiment-sets/s/events"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "--history-dsn") {
			t.Errorf("%s without history: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// TestEventStreamsRelease: clients that go away, however many, leave no
// goroutine, subscription or gauge behind.
func TestEventStreamsRelease(t *testing.T) {
	e := newEventsEnv(t, Config{})
	e.write(t, history.Record{ID: "a"})
	e.srv.Client().Transport.(*http.Transport).DisableKeepAlives = true
	goruntime.GC()
	before := goruntime.NumGoroutine()
	paths := []string{"/events", "/events?after=0", "/experiments/a/events", "/events?state=Running"}
	for i := range 40 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+paths[i%len(paths)], nil)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Body.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		cancel()
		res.Body.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := goruntime.NumGoroutine()
		if n <= before && e.hub.Subscribers() == 0 && strings.Contains(scrapeMetrics(t, e.srv.URL), "gmini_event_streams 0") {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the streams, %d subscriptions:\n%s", n, before, e.hub.Subscribers(), buf[:goruntime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestEventStreamOwnsItsConnection: over HTTP/1.1 a stream answers with a
// body its connection's close ends (no chunks), its events readable as
// SSE by any client; the request's goroutine is gone while the stream
// waits; a backend shutting down ends the stream, closing the
// connection, and releases its slot.
func TestEventStreamOwnsItsConnection(t *testing.T) {
	done := make(chan struct{})
	e := newEventsEnv(t, Config{Done: done, MaxEventStreams: 1})
	e.write(t, history.Record{ID: "a"})
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, r := dialFollower(t, u.Host)
	defer c.Close()
	head := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		head[strings.ToLower(k)] = v
	}
	if head["content-type"] != "text/event-stream; charset=utf-8" || head["connection"] != "close" || head["transfer-encoding"] != "" || head["content-length"] != "" {
		t.Errorf("response head %v: want an event stream ended by the connection's close", head)
	}
	waitSubscribers(t, e, 1)
	e.write(t, history.Record{ID: "a", State: history.StateRunning})
	var frames []string
	for !slices.Contains(frames, "event: state") {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", frames, err)
		}
		frames = append(frames, strings.TrimSpace(line))
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:goruntime.Stack(buf, true)]); strings.Contains(stacks, "api.(*server).allEvents") {
		t.Errorf("the request's handler still runs while its stream waits:\n%s", stacks)
	}
	close(done)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(r); err != nil {
		t.Errorf("the stream did not end with the backend's shutdown: %v (read %q)", err, rest)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.hub.Subscribers() != 0 || !strings.Contains(scrapeMetrics(t, e.srv.URL), "gmini_event_streams 0") {
		if time.Now().After(deadline) {
			t.Fatal("the ended stream's subscription or gauge was not released")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventStreamSlots: a live stream that took its connection keeps its
// place among --max-event-streams after its handler returned, until its
// client leaves; a finished experiment's stream is a replay that keeps
// its connection in net/http (it ends once it has sent what is stored),
// and frees its place when it ends.
func TestEventStreamSlots(t *testing.T) {
	e := newEventsEnv(t, Config{MaxEventStreams: 1})
	e.write(t, history.Record{ID: "a"})
	e.write(t, history.Record{ID: "done"})
	e.write(t, history.Record{ID: "done", State: history.StateSucceeded})
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	c, _ := dialFollower(t, u.Host)
	waitSubscribers(t, e, 1)
	if resp, body := get("/experiments/done/events"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a second stream while a detached one holds the only slot: %d %q, want 429", resp.StatusCode, body)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := get("/experiments/done/events")
		if resp.StatusCode == http.StatusOK {
			if resp.Close || len(resp.TransferEncoding) == 0 {
				t.Errorf("a replay took its connection (close %v, transfer encoding %v): only live streams should", resp.Close, resp.TransferEncoding)
			}
			if !strings.Contains(body, "event: done") {
				t.Errorf("replay of a finished experiment without done:\n%s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a stream whose client left was not freed: %d %q", resp.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The replay ended and gave its place back: a live stream gets it.
	c2, _ := dialFollower(t, u.Host)
	c2.Close()
}
