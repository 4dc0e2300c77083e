package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/webhooksig"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const (
	sinkSecret   = "sink-secret-0123456789"
	notifySecret = "notify-secret-0123456789"
	testNS       = "gmini-test"
)

// received is one request the receiver got, as it judged it.
type received struct {
	path    string
	code    int // what it answered
	id      string
	typ     string
	subject string
	source  string
	data    wire.Event
	err     error // a malformed CloudEvent or a bad signature
}

// receiver is an HTTPS server that checks every request as a receiver
// would (a CloudEvent in binary mode, its signature) and answers what
// answer says.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(path string) int
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{answer: func(string) int { return http.StatusOK }}
	rc.srv = httptest.NewTLSServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	got := received{path: r.URL.Path, id: r.Header.Get("ce-id")}
	secret := sinkSecret
	if strings.HasPrefix(r.URL.Path, "/notify") {
		secret = notifySecret
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	switch {
	case msg.ReadEncoding() != binding.EncodingBinary:
		got.err = fmt.Errorf("encoding %v, want binary", msg.ReadEncoding())
	case r.Header.Get("Content-Type") != "application/json":
		got.err = fmt.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
	default:
		ev, err := binding.ToEvent(r.Context(), msg)
		if err == nil {
			err = ev.Validate()
		}
		if err == nil {
			got.typ, got.subject, got.source = ev.Type(), ev.Subject(), ev.Source()
			err = json.Unmarshal(ev.Data(), &got.data)
		}
		if err == nil {
			err = webhooksig.Verify([]byte(secret), r.Header.Get(webhooksig.Header), got.id, body, time.Now(), 0)
		}
		got.err = err
	}
	rc.mu.Lock()
	got.code = rc.answer(r.URL.Path)
	rc.got = append(rc.got, got)
	rc.mu.Unlock()
	w.WriteHeader(got.code)
}

func (rc *receiver) setAnswer(f func(path string) int) {
	rc.mu.Lock()
	rc.answer = f
	rc.mu.Unlock()
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func (rc *receiver) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(rc.srv.Certificate())
	return p
}

// config delivers the final states to the sink /sink and lets notify URLs
// name the receiver, on its IP literal (internal, but named).
func (rc *receiver) config(t testing.TB) *Config {
	t.Helper()
	host := strings.TrimPrefix(rc.srv.URL, "https://")
	c, err := Parse([]byte(fmt.Sprintf(`
sinks:
  - name: ops
    url: %s/sink
    secret: %s
allowNotify: ["%s"]
notifySecret: %s
`, rc.srv.URL, sinkSecret, host, notifySecret)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t testing.TB, path string) history.Store {
	t.Helper()
	s, err := history.Open(context.Background(), "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// run starts a deliverer until the returned stop is called.
func run(t testing.TB, o Options) (stop func()) {
	t.Helper()
	if o.Backoff == (Backoff{}) {
		o.Backoff = Backoff{Base: 10 * time.Millisecond, Cap: 80 * time.Millisecond}
	}
	if o.Poll == 0 {
		o.Poll = 10 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	o.Namespace = testNS
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(o).Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// experiment records an experiment from its claim (with notify URLs) to
// its end, as the API and the recorder do: events Submitted, Running and
// the end.
func experiment(t testing.TB, s history.Store, id, end string, notify ...string) {
	t.Helper()
	ctx := testCtx(t)
	if _, _, err := s.Claim(ctx, history.Record{ID: id, Hash: "h", Notify: notify}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, history.Record{ID: id, State: history.StateRunning}); err != nil {
		t.Fatal(err)
	}
	code := int32(0)
	if end == history.StateFailed {
		code = 1
	}
	if _, err := s.Finish(ctx, history.Record{ID: id, State: end, ExitCode: &code}, []byte("out")); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled reports whether no delivery is pending.
func settled(t testing.TB, s history.Store) func() bool {
	return func() bool {
		n, err := s.PendingDeliveries(testCtx(t))
		return err == nil && n == 0
	}
}

// allDelivered reports whether each of ids has its two deliveries
// (sink and notify) delivered; the last look is logged when the test fails.
func allDelivered(t testing.TB, s history.Store, ids []string) func() bool {
	var last []history.Delivery
	t.Cleanup(func() {
		if t.Failed() {
			for _, d := range last {
				t.Logf("delivery at the last look: %+v", d)
			}
		}
	})
	return func() bool {
		last = nil
		ok := true
		for _, id := range ids {
			ds, err := s.Deliveries(testCtx(t), id)
			if err != nil || len(ds) != 2 {
				return false
			}
			for _, d := range ds {
				ok = ok && d.State == history.DeliveryDelivered
			}
			last = append(last, ds...)
		}
		return ok
	}
}

// finalEvents are the seqs of the experiments' final events, by ID.
func finalEvents(t testing.TB, s history.Store) map[string]int64 {
	t.Helper()
	evs, err := s.Events(testCtx(t), history.EventQuery{Limit: history.MaxEventBatch})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range evs {
		if history.Final(e.State) {
			out[e.ID] = e.Seq
		}
	}
	return out
}

// TestDeliverDownThenUp: a receiver answering 503 gets the same event again
// and again, with the same ce-id, until it is up; then every final event
// is delivered to the sink and to the experiment's notify URL, each event
// with its own ce-id, the same for both targets, every request signed and
// a valid CloudEvent; intermediate states are not sent (final states by
// default).
func TestDeliverDownThenUp(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.setAnswer(func(string) int { return http.StatusServiceUnavailable })
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	m := metrics.New()
	if _, err := s.OutboxCursor(testCtx(t)); err != nil { // deliveries from now on
		t.Fatal(err)
	}
	ids := []string{"e1", "e2", "e3", "e4", "e5"}
	for i, id := range ids {
		end := history.StateSucceeded
		if i == 4 {
			end = history.StateFailed
		}
		experiment(t, s, id, end, rc.srv.URL+"/notify/"+id+"?token=t0k3n")
	}
	run(t, Options{Store: s, Config: rc.config(t), Metrics: m, RootCAs: rc.roots(), MaxAge: time.Minute})
	waitFor(t, "three refused attempts of each delivery", 20*time.Second, func() bool { return len(rc.requests()) >= 3*2*len(ids) })
	rc.setAnswer(func(string) int { return http.StatusOK })
	waitFor(t, "every delivery done", 20*time.Second, settled(t, s))

	final := finalEvents(t, s)
	byDelivery := map[string][]received{} // path → requests
	okIDs := map[string]map[string]int{"sink": {}, "notify": {}}
	for _, r := range rc.requests() {
		if r.err != nil {
			t.Errorf("request to %s (ce-id %s): %v", r.path, r.id, r.err)
			continue
		}
		key := r.path + " " + r.subject
		byDelivery[key] = append(byDelivery[key], r)
		want, ok := final[r.subject]
		if !ok || r.id != fmt.Sprint(want) || r.data.Seq != want || r.data.Experiment != r.subject {
			t.Errorf("request for %s: ce-id %s, data %+v; want its final event %d", r.subject, r.id, r.data, want)
		}
		if wantType := EventType(r.data.State); r.typ != wantType || r.source != "/namespaces/"+testNS+"/experiments" {
			t.Errorf("request for %s: type %q, source %q; want %q and the namespace's", r.subject, r.typ, r.source, wantType)
		}
		if r.code == http.StatusOK {
			kind := "sink"
			if strings.HasPrefix(r.path, "/notify") {
				kind = "notify"
			}
			okIDs[kind][r.id]++
		}
	}
	if len(byDelivery) != 2*len(ids) {
		t.Errorf("%d deliveries reached the receiver, want %d (sink and notify of each experiment)", len(byDelivery), 2*len(ids))
	}
	for key, rs := range byDelivery {
		if len(rs) < 3 || rs[len(rs)-1].code != http.StatusOK {
			t.Errorf("%s: %d attempts, the last answered %d; want at least 3, the last 200", key, len(rs), rs[len(rs)-1].code)
		}
	}
	for kind, got := range okIDs {
		if len(got) != len(ids) {
			t.Errorf("%s: %d distinct ce-ids delivered, want one per event, %d", kind, len(got), len(ids))
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("%s: ce-id %s delivered %d times, want once", kind, id, n)
			}
		}
	}
	for _, id := range ids {
		ds, err := s.Deliveries(testCtx(t), id)
		if err != nil || len(ds) != 2 {
			t.Fatalf("Deliveries(%s) = %+v, %v; want 2", id, ds, err)
		}
		for _, d := range ds {
			if d.State != history.DeliveryDelivered || d.LastCode != http.StatusOK || d.Attempts < 3 || d.DoneAt == nil || !history.Final(d.Event.State) {
				t.Errorf("delivery %+v: want delivered, 200, after 3 attempts or more, of the final event", d)
			}
		}
	}
	// The counters move just after the store's write that settled.
	waitFor(t, "gmini_webhook_deliveries_total{result=delivered} at 2 per experiment", 5*time.Second, func() bool {
		return testutil.ToFloat64(m.Webhook.Deliveries.WithLabelValues("delivered")) == float64(2*len(ids))
	})
	if got := testutil.ToFloat64(m.Webhook.Attempts.WithLabelValues("5xx")); got < float64(2*2*len(ids)) {
		t.Errorf("gmini_webhook_attempts_total{outcome=5xx} = %v, want 2 or more per delivery", got)
	}
}

// TestDeliverGone: a 410 fails the delivery at once, without retries,
// while the other target of the same event is delivered.
func TestDeliverGone(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.setAnswer(func(path string) int {
		if strings.HasPrefix(path, "/notify") {
			return http.StatusGone
		}
		return http.StatusNoContent
	})
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	m := metrics.New()
	if _, err := s.OutboxCursor(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	experiment(t, s, "g1", history.StateCancelled, rc.srv.URL+"/notify/g1")
	run(t, Options{Store: s, Config: rc.config(t), Metrics: m, RootCAs: rc.roots(), MaxAge: time.Minute})
	waitFor(t, "every delivery done", 20*time.Second, settled(t, s))
	time.Sleep(100 * time.Millisecond) // room for a wrong retry
	ds, err := s.Deliveries(testCtx(t), "g1")
	if err != nil || len(ds) != 2 {
		t.Fatalf("Deliveries = %+v, %v", ds, err)
	}
	for _, d := range ds {
		want, code := history.DeliveryDelivered, http.StatusNoContent
		if d.Kind == history.DeliveryNotify {
			want, code = history.DeliveryFailed, http.StatusGone
		}
		if d.State != want || d.LastCode != code || d.Attempts != 1 {
			t.Errorf("%s delivery: %s, code %d, %d attempts; want %s, %d, 1", d.Kind, d.State, d.LastCode, d.Attempts, want, code)
		}
	}
	if n := len(rc.requests()); n != 2 {
		t.Errorf("receiver got %d requests, want 2: no retry after a 410", n)
	}
	waitFor(t, "gmini_webhook_deliveries_total{result=failed} at 1", 5*time.Second, func() bool {
		return testutil.ToFloat64(m.Webhook.Deliveries.WithLabelValues("failed")) == 1
	})
}

// TestDeliverGivesUp: a receiver that never answers 2xx is tried until the
// delivery's give-up age, then the delivery fails, saying why.
func TestDeliverGivesUp(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.setAnswer(func(string) int { return http.StatusInternalServerError })
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	if _, err := s.OutboxCursor(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	experiment(t, s, "x1", history.StateSucceeded)
	start := time.Now()
	run(t, Options{Store: s, Config: rc.config(t), RootCAs: rc.roots(), MaxAge: 300 * time.Millisecond})
	waitFor(t, "the delivery given up", 10*time.Second, func() bool {
		ds, err := s.Deliveries(testCtx(t), "x1")
		return err == nil && len(ds) == 1 && ds[0].State != history.DeliveryPending
	})
	ds, err := s.Deliveries(testCtx(t), "x1")
	if err != nil || len(ds) != 1 {
		t.Fatalf("Deliveries = %+v, %v", ds, err)
	}
	d := ds[0]
	if d.State != history.DeliveryFailed || d.Attempts < 3 || !strings.Contains(d.LastError, "given up") || d.LastCode != 500 {
		t.Errorf("delivery %+v: want failed after several attempts, given up, last code 500", d)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("given up after %s, before the give-up age", took)
	}
}

// TestDeliverHandOver: deliverers that follow each other, as replicas do
// when the lease moves (stopped mid-way with deliveries pending and events
// not read yet), and two that overlap, lose nothing and create each
// delivery once.
func TestDeliverHandOver(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	rc.setAnswer(func(string) int { return http.StatusServiceUnavailable })
	path := filepath.Join(t.TempDir(), "history.db")
	first, second := openStore(t, path), openStore(t, path) // two replicas' stores
	if _, err := first.OutboxCursor(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cfg := rc.config(t)
	o := func(s history.Store) Options {
		return Options{Store: s, Config: cfg, RootCAs: rc.roots(), MaxAge: time.Minute}
	}
	var ids []string
	add := func(n int) {
		for range n {
			id := fmt.Sprintf("h%02d", len(ids))
			ids = append(ids, id)
			experiment(t, first, id, history.StateSucceeded, rc.srv.URL+"/notify/"+id)
		}
	}

	// The first leader: attempts, all refused, then it stops.
	add(4)
	stopFirst := run(t, o(first))
	waitFor(t, "attempts by the first deliverer", 20*time.Second, func() bool { return len(rc.requests()) >= 8 })
	stopFirst()
	// Changes while no replica delivers.
	add(3)
	// The next leader, with the receiver back.
	rc.setAnswer(func(string) int { return http.StatusOK })
	stopSecond := run(t, o(second))
	waitFor(t, "every delivery done by the second deliverer", 20*time.Second, allDelivered(t, second, ids))
	stopSecond()

	// Two at once, as during a hand-over whose old leader has not
	// noticed yet.
	add(5)
	run(t, o(first))
	run(t, o(second))
	waitFor(t, "every delivery done by two deliverers at once", 20*time.Second, allDelivered(t, first, ids))

	final := finalEvents(t, first)
	delivered := map[string]bool{}
	for _, r := range rc.requests() {
		if r.err != nil {
			t.Errorf("request %s: %v", r.path, r.err)
		}
		if r.code == http.StatusOK {
			delivered[r.path+" "+r.id] = true
		}
	}
	for _, id := range ids {
		ds, err := second.Deliveries(testCtx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 {
			t.Errorf("%s: %d deliveries, want 2 (one sink, one notify): creation lost or doubled", id, len(ds))
		}
		for _, d := range ds {
			if d.State != history.DeliveryDelivered {
				t.Errorf("%s: %s delivery %s", id, d.Kind, d.State)
			}
		}
		for _, p := range []string{"/sink", "/notify/" + id} {
			if !delivered[fmt.Sprintf("%s %d", p, final[id])] {
				t.Errorf("%s: event %d never answered 200 at %s", id, final[id], p)
			}
		}
	}
	if len(final) != 12 {
		t.Errorf("%d final events, want 12", len(final))
	}
}

// TestDeliverErrorsHideTheQuery: a failed attempt's error, stored and
// shown, names the URL without its query, which may carry a token.
func TestDeliverErrorsHideTheQuery(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	c, err := Parse([]byte(fmt.Sprintf("sinks:\n  - {name: ops, url: 'https://%s/in?token=hunter2', secret: %s}\n", addr, sinkSecret)))
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	if _, err := s.OutboxCursor(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	experiment(t, s, "q1", history.StateSucceeded)
	run(t, Options{Store: s, Config: c, MaxAge: time.Minute, Backoff: Backoff{Base: time.Hour, Cap: time.Hour}})
	var d history.Delivery
	waitFor(t, "a failed attempt", 10*time.Second, func() bool {
		ds, err := s.Deliveries(testCtx(t), "q1")
		if err != nil || len(ds) != 1 || ds[0].Attempts == 0 {
			return false
		}
		d = ds[0]
		return true
	})
	if d.State != history.DeliveryPending || d.LastCode != 0 || !strings.Contains(d.LastError, addr+"/in") || strings.Contains(d.LastError, "hunter2") {
		t.Errorf("delivery after a refused connection: %+v; want pending, no code, an error naming the URL without its query", d)
	}
}

// BenchmarkDeliver measures webhook throughput: b.N experiments end while
// the receiver answers 503, each with two deliveries (the sink and its
// notify URL); the clock runs from the moment the receiver answers 200
// until no delivery is pending: a backlog drained, as after an outage.
// The receiver is a local HTTPS server that checks every CloudEvent and
// signature, as a careful receiver would. Run with
// `go test -run '^$' -bench Deliver -benchtime 2000x ./internal/webhook/`.
func BenchmarkDeliver(b *testing.B) {
	rc := newReceiver(b)
	rc.setAnswer(func(string) int { return http.StatusServiceUnavailable })
	s := openStore(b, filepath.Join(b.TempDir(), "h.db"))
	// A store's first deliverer starts after the newest event: place the
	// cursor before any, or the deliverer, started a moment late, would
	// skip the first experiments.
	if _, err := s.OutboxCursor(testCtx(b)); err != nil {
		b.Fatal(err)
	}
	stop := run(b, Options{Store: s, Config: rc.config(b), RootCAs: rc.roots(),
		Backoff: Backoff{Base: 50 * time.Millisecond, Cap: 200 * time.Millisecond}})
	notify := rc.srv.URL + "/notify"
	for i := range b.N {
		experiment(b, s, fmt.Sprintf("bench-%06d", i), history.StateSucceeded, notify)
	}
	waitFor(b, "every delivery created", 5*time.Minute, func() bool {
		n, err := s.PendingDeliveries(testCtx(b))
		return err == nil && n == int64(2*b.N)
	})
	before := len(rc.requests())
	b.ResetTimer()
	start := time.Now()
	rc.setAnswer(func(string) int { return http.StatusOK })
	waitFor(b, "every delivery made", 10*time.Minute, settled(b, s))
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	ok := map[string]int{}
	for _, r := range rc.requests() {
		if r.err != nil {
			b.Fatalf("a bad request: %v", r.err)
		}
		if r.code == http.StatusOK {
			ok[r.path+" "+r.id]++
		}
	}
	if len(ok) != 2*b.N {
		b.Fatalf("%d deliveries answered 200, want %d", len(ok), 2*b.N)
	}
	b.ReportMetric(float64(2*b.N)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(len(rc.requests())-before)/float64(2*b.N), "requests/delivery")
}
