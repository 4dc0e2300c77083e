package main

// The events part (-only events): how long a change of an experiment's
// state takes from the Job status write that causes it to the Server-Sent
// Event at the clients that follow it, with 1, 100 and 500 followers, and
// what followers cost the backend while nothing happens.
//
// It runs on a node-less cluster of its own (-events-cluster), with one
// backend process keeping history in SQLite. No pod ever runs there, so
// the benchmark plays the Job controller: once the controller has started
// a Job (its startTime) and the backend has recorded it Pending, the
// benchmark writes the Complete condition through the status subresource
// (jobstatus.MarkComplete, what the controller writes once the pod
// succeeded). The backend's recorder sees it through its informer, stores
// the outcome (an event with the store's seq), and each replica's Hub,
// polling the store, fans it out to the streams. The delay is timed from
// just before that UpdateStatus is sent to the moment a follower's Go
// client hands the event to its callback.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/internal/jobstatus"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// partEvents is the -only name of this part.
const partEvents = "events"

const (
	// eventsNamespace holds the part's backend and Jobs.
	eventsNamespace = "gmini-bench-events"
	// stateSucceeded is the state a Complete condition gives (README,
	// States): the event every delay is timed by.
	stateSucceeded = "Succeeded"
	// eachEvery paces the status writes when each follower watches its
	// own experiment: one write per follower, so more of them per second
	// than with every follower on one stream.
	eachEvery = 50 * time.Millisecond
	// settle lets the backend and the API server finish what a step
	// started (connections, the Job controller's reaction) before memory
	// and CPU are read.
	settle = 3 * time.Second
	// arrivalWait bounds the wait for the last events after the last
	// status write.
	arrivalWait = 30 * time.Second
)

// eventsOptions are the flags of the events part.
type eventsOptions struct {
	cluster   string
	followers []int         // followers of GET /events, one delay row each
	writes    int           // status writes timed per row of GET /events followers
	every     time.Duration // between two of those writes
	idle      int           // idle followers, of events and of logs
	window    time.Duration // the CPU window, without and with idle followers
}

// register adds the part's flags to fs, with their defaults.
func (e *eventsOptions) register(fs *flag.FlagSet) {
	e.followers = []int{1, 100, 500}
	fs.StringVar(&e.cluster, "events-cluster", "gmini-bench-events", "name of the node-less cluster of the events part")
	fs.Func("event-followers", "comma-separated numbers of clients following GET /events at once, one delay row each (default 1,100,500)", func(s string) error {
		n, err := parseCounts(s, 1, 2000)
		if err == nil {
			e.followers = n
		}
		return err
	})
	fs.IntVar(&e.writes, "event-writes", 40, "Job status writes timed per row of the events part's GET /events followers")
	fs.DurationVar(&e.every, "event-every", 250*time.Millisecond, "pause between two timed Job status writes (GET /events rows)")
	fs.IntVar(&e.idle, "idle-followers", 500, "idle followers of the events part: event streams, then log follows, then as many experiments each watched by one client")
	fs.DurationVar(&e.window, "idle-window", 20*time.Second, "how long the backend's CPU is read without and with the idle followers")
}

func (e eventsOptions) validate() error {
	if e.writes < 1 || e.writes > 1000 || e.every < 0 || e.idle < 1 || e.idle > 2000 || e.window < time.Second {
		return errors.New("event-writes must be 1-1000, event-every not negative, idle-followers 1-2000, idle-window at least 1s")
	}
	return nil
}

// parseCounts reads a comma-separated list of counts, each within lo..hi.
func parseCounts(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q: want numbers %d to %d, comma-separated", f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

// delayRow is one row of the delay table.
type delayRow struct {
	endpoint  string
	followers int
	writes    int
	every     time.Duration
	// delays: status write sent → event at a follower, one per event
	// received; stored: the store's time of the change → event at a
	// follower (what the Hub's poll and the stream add).
	delays, stored []time.Duration
	writeRTT       []time.Duration // the UpdateStatus calls
	missing        int             // events a follower never received
	failed         int             // followers whose stream failed
}

// idleRow is what n followers that receive nothing cost.
type idleRow struct {
	what   string
	n      int
	failed int
	// before: no follower; with: n connected; idled: n connected, at the
	// end of the CPU window; after: all gone again.
	before, with, idled, after snapshot
	window                     time.Duration
	cpuBefore, cpuWith         time.Duration // the backend's, over window
	apiBefore, apiWith         time.Duration // kube-apiserver + etcd, over window
	reqsBefore, reqsWith       float64       // API server requests (all clients) over window
}

// snapshot is the backend's memory and goroutines at one moment.
type snapshot struct {
	mem                backendproc.Memory
	goroutines         float64
	heapInuse, stackIn float64
	// stacks is the goroutine profile (debug=1: goroutines grouped by
	// stack), to name what did not end.
	stacks string
}

// eventsReport is what the events part prints.
type eventsReport struct {
	delays []delayRow
	idle   []idleRow
	// backend is how the measured backend ran.
	backend string
}

// eventsBench is what the part's steps share.
type eventsBench struct {
	log     *slog.Logger
	o       eventsOptions
	admin   kubernetes.Interface
	apiPIDs []int
	b       *backendRun
	api     *gmini.Client // calls with a timeout
	streams *gmini.Client // streams: no timeout
	hc      *http.Client  // /metrics
	// streamsHTTP sends the streams; debug is the backend's
	// --debug-listen address.
	streamsHTTP *http.Client
	debug       string
	logDir      string
	batches     int
	rep         *eventsReport
}

// eventsBenchmark creates the part's cluster, starts the backend and runs
// the measurements in order: the delay with each number of GET /events
// followers, idle event streams, idle log follows, then the delay with
// each follower watching its own experiment. The cluster and the backend
// are undone on the way out.
func eventsBenchmark(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, o options, bin string) (*eventsReport, error) {
	if _, err := c.Create(ctx); err != nil {
		return nil, fmt.Errorf("create cluster %s: %w", o.events.cluster, err)
	}
	defer func() {
		if err := c.Destroy(context.WithoutCancel(ctx)); err != nil {
			log.Error("destroy cluster", "name", o.events.cluster, "err", err)
		}
	}()
	base := c.KubernetesRestConfig()
	admin, err := clientset(base, -1, 0)
	if err != nil {
		return nil, err
	}
	apiPIDs, err := controlPlanePIDs(c)
	if err != nil {
		return nil, err
	}
	logDir := l.Logs(o.events.cluster)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	env := &benchEnv{log: log, l: l, cfg: base, admin: admin, kubeconfig: c.GetKubeconfig(), bin: bin, logDir: logDir, extra: o.backendArgs}
	defer env.close()
	db := filepath.Join(logDir, "history-events.db")
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		_ = os.Remove(f)
	}
	// Bounds above what the part opens, so no follower is refused; they
	// hold nothing per slot.
	most := max(o.events.idle, maxOf(o.events.followers))
	// --debug-listen: its heap profile forces a GC before memory is
	// read, so Go's heap counts live objects, not garbage.
	args := []string{"--max-event-streams", strconv.Itoa(2 * most), "--max-log-follows", strconv.Itoa(2 * o.events.idle), "--debug-listen", "127.0.0.1:0"}
	b, err := env.backend(ctx, "", rowName(variantSQLite), eventsNamespace, append([]string{"--history-dsn", "sqlite:" + db}, args...))
	if err != nil {
		return nil, err
	}
	defer func() {
		if _, err := b.proc.Stop(context.WithoutCancel(ctx)); err != nil {
			log.Error("stop backend", "err", err)
		}
	}()
	s := &eventsBench{log: log, o: o.events, admin: admin, apiPIDs: apiPIDs, b: b, logDir: logDir,
		hc: &http.Client{Timeout: 30 * time.Second},
		// Each stream holds its own connection for as long as it lasts.
		streamsHTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * most, IdleConnTimeout: time.Minute}},
		rep:         &eventsReport{backend: "history in SQLite, " + strings.Join(append(args, o.backendArgs...), " ")}}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	// Warm the whole path once (informer, store, Hub, a stream), untimed.
	if _, err := s.delayAll(ctx, 1, 3); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	for _, n := range s.o.followers {
		r, err := s.delayAll(ctx, n, s.o.writes)
		if err != nil {
			return nil, err
		}
		s.rep.delays = append(s.rep.delays, r)
	}
	// Each idle row on a backend started afresh (same database): the
	// memory the followers take is pages the process touches for them,
	// not pages freed by the rows before and used again.
	if err := s.restart(ctx); err != nil {
		return nil, err
	}
	idle, err := s.idleCost(ctx, "events", "GET /events", "gmini_event_streams", s.o.idle, func(ctx context.Context, _ int) error {
		return s.streams.Events(ctx, gmini.EventFilter{}, 0, func(wire.Event) error { return nil })
	})
	if err != nil {
		return nil, err
	}
	s.rep.idle = append(s.rep.idle, idle)
	// One experiment per follower, all Pending (no node: their pods are
	// never scheduled), for the log follows and then the watches.
	batch, err := s.readyBatch(ctx, "idle", s.o.idle)
	if err != nil {
		return nil, err
	}
	if err := s.restart(ctx); err != nil {
		return nil, err
	}
	idle, err = s.idleCost(ctx, "logs", "GET /experiments/{id}/logs?follow=true (SSE), each of its own Pending experiment", "gmini_log_followers", s.o.idle, func(ctx context.Context, i int) error {
		return s.streams.FollowLogsSSE(ctx, batch[i].id, "", func(gmini.LogEvent) error { return nil })
	})
	if err != nil {
		return nil, err
	}
	s.rep.idle = append(s.rep.idle, idle)
	each, err := s.delayEach(ctx, batch)
	if err != nil {
		return nil, err
	}
	s.rep.delays = append(s.rep.delays, each)
	return s.rep, clean(ctx, admin, eventsNamespace)
}

func maxOf(ns []int) int {
	m := 0
	for _, n := range ns {
		m = max(m, n)
	}
	return m
}

// connect makes the clients of the backend's current address, finds its
// debug address in its log, and waits until it records.
func (s *eventsBench) connect(ctx context.Context) error {
	var err error
	if s.api, err = gmini.New(s.b.proc.URL(), gmini.WithHTTPClient(&http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}})); err != nil {
		return err
	}
	if s.streams, err = gmini.New(s.b.proc.URL(), gmini.WithHTTPClient(s.streamsHTTP)); err != nil {
		return err
	}
	data, err := os.ReadFile(s.b.proc.LogPath())
	if err != nil {
		return fmt.Errorf("read the backend's log: %w", err)
	}
	if s.debug = lastDebugAddr(string(data)); s.debug == "" {
		return errors.New("the backend did not log its --debug-listen address")
	}
	return s.waitLeader(ctx)
}

// debugListening matches the backend's line naming its profiles' address,
// in both log formats.
var debugListening = regexp.MustCompile(`msg="serving profiles" addr=(\S+)|"msg":"serving profiles","addr":"([^"]+)"`)

// lastDebugAddr is the address of the last "serving profiles" line of
// log: the running process's, after restarts.
func lastDebugAddr(log string) string {
	m := debugListening.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1] + m[len(m)-1][2]
}

// restart stops the backend and starts it again on the same database.
func (s *eventsBench) restart(ctx context.Context) error {
	if _, err := s.b.proc.Stop(ctx); err != nil {
		return fmt.Errorf("stop the backend: %w", err)
	}
	if err := s.b.proc.Start(ctx); err != nil {
		return fmt.Errorf("start the backend again: %w", err)
	}
	return s.connect(ctx)
}

// waitLeader waits until the backend records: it is the one replica, so
// it takes the Lease at once.
func (s *eventsBench) waitLeader(ctx context.Context) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		v, err := s.metric(ctx, "gmini_history_leader")
		if err != nil || v != 1 {
			return false, nil
		}
		// /readyz does not wait for the database (on purpose): a list
		// from the history does, and a POST answers 503 until it is open.
		_, err = s.api.List(ctx, gmini.ListOptions{Limit: 1})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the backend to record history (gmini_history_leader 1) and to list from it: %w", err)
	}
	return nil
}

// metric reads one metric of the backend's /metrics, its samples summed.
func (s *eventsBench) metric(ctx context.Context, name string) (float64, error) {
	text, err := httpGet(ctx, s.hc, s.b.proc.URL()+"/metrics")
	if err != nil {
		return 0, err
	}
	v, ok := metricSum(text, name)
	if !ok {
		return 0, fmt.Errorf("no %s in the backend's /metrics", name)
	}
	return v, nil
}

// waitMetric waits until the backend's metric name is want.
func (s *eventsBench) waitMetric(ctx context.Context, name string, want float64) error {
	var last float64
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		v, err := s.metric(ctx, name)
		last = v
		return err == nil && v == want, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s %v (last %v): %w", name, want, last, err)
	}
	return nil
}

// httpGet reads url (a Prometheus text endpoint, a profile) and wants 200.
func httpGet(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %s", url, res.StatusCode, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// metricSum adds up every sample of metric name in Prometheus' text
// format, whatever its labels; false when there is none.
func metricSum(text, name string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" {
			continue
		}
		switch rest[0] {
		case '{':
			end := labelsEnd(rest)
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		case ' ', '\t':
		default:
			continue // another metric whose name starts with name
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// labelsEnd is the index of the '}' that closes the label set s starts
// with, skipping quoted values (which may hold '}' and escaped quotes);
// -1 if it is not closed.
func labelsEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}

// experimentRef is one experiment of a batch and its Job.
type experimentRef struct {
	id, job string
}

// readyBatch submits n experiments and waits until every one is recorded
// Pending and its Job started by the Job controller (its startTime, which
// the status write needs): after that nothing changes about them until the
// benchmark writes their status.
func (s *eventsBench) readyBatch(ctx context.Context, name string, n int) ([]experimentRef, error) {
	s.batches++
	prefix := fmt.Sprintf("ev%d-%s", s.batches, name)
	batch := make([]experimentRef, n)
	if _, err := runCreates(ctx, "events: submit "+prefix, min(n, 16), n, func(ctx context.Context, i int) error {
		id := fmt.Sprintf("%s-%d", prefix, i)
		sub, err := s.api.Submit(ctx, map[string]any{"id": id, "key": fmt.Sprintf("k-%d", i)})
		if err != nil {
			return fmt.Errorf("POST /experiment %s: %w", id, err)
		}
		if !sub.Created {
			return fmt.Errorf("POST /experiment %s: %w", id, errExisting)
		}
		batch[i] = experimentRef{id: id, job: sub.Job}
		return nil
	}); err != nil {
		return nil, err
	}
	want := make(map[string]bool, n)
	for _, e := range batch {
		want[e.id] = true
	}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		jobs, err := s.admin.BatchV1().Jobs(eventsNamespace).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
		if err != nil {
			return false, nil
		}
		started := 0
		for i := range jobs.Items {
			if id, ok := jobspec.Owns(&jobs.Items[i]); ok && want[id] && jobs.Items[i].Status.StartTime != nil {
				started++
			}
		}
		if started < n {
			return false, nil
		}
		pending := 0
		err = s.api.ListAll(ctx, gmini.ListOptions{State: "Pending", Limit: 1000}, func(st wire.Status) bool {
			if want[st.ID] {
				pending++
			}
			return true
		})
		return err == nil && pending == n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for %d experiments %s-* to be started and recorded Pending: %w", n, prefix, err)
	}
	return batch, nil
}

// complete marks job Complete as the Job controller would and returns when
// the write was sent (before the call) and how long the call took. A
// conflict (the controller wrote the status in between) reads the Job
// again and sends again, timed from that send.
func (s *eventsBench) complete(ctx context.Context, name string) (time.Time, time.Duration, error) {
	jobs := s.admin.BatchV1().Jobs(eventsNamespace)
	for try := 0; ; try++ {
		job, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("get job %s: %w", name, err)
		}
		if !jobstatus.MarkComplete(&job.Status, time.Now(), "set by gmini-bench: the benchmark's cluster has no node to run the pod") {
			return time.Time{}, 0, fmt.Errorf("job %s finished before the benchmark marked it", name)
		}
		t0 := time.Now()
		_, err = jobs.UpdateStatus(ctx, job, metav1.UpdateOptions{})
		rtt := time.Since(t0)
		if err == nil {
			return t0, rtt, nil
		}
		if !apierrors.IsConflict(err) || try == 5 {
			return time.Time{}, 0, fmt.Errorf("mark job %s Complete: %w", name, err)
		}
	}
}

// arrivals holds when each follower got the Succeeded event of each
// experiment; each follower writes only its own slots.
type arrivals struct {
	at, stored [][]time.Time // [follower][experiment]
	got        atomic.Int64
	mu         sync.Mutex
	failed     int
	firstErr   error
}

func newArrivals(followers, experiments int) *arrivals {
	a := &arrivals{at: make([][]time.Time, followers), stored: make([][]time.Time, followers)}
	for f := range followers {
		a.at[f], a.stored[f] = make([]time.Time, experiments), make([]time.Time, experiments)
	}
	return a
}

// note records follower f's receipt of e, of experiment i, the first time.
func (a *arrivals) note(f, i int, e wire.Event) {
	if e.State != stateSucceeded || !a.at[f][i].IsZero() {
		return
	}
	a.at[f][i], a.stored[f][i] = time.Now(), e.Time
	a.got.Add(1)
}

// fail counts a follower whose stream ended with an error.
func (a *arrivals) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failed++
	if a.firstErr == nil {
		a.firstErr = err
	}
}

// delaysOf turns sends and arrivals into delays, one per event received:
// arrival minus the send of its experiment's write, and arrival minus the
// store's time of the change; missing counts the events that never came.
// exp maps a follower's slot to its experiment's index in sent. A slot
// whose experiment's write was never sent counts for nothing.
func delaysOf(sent []time.Time, a *arrivals, exp func(f, slot int) int) (delays, stored []time.Duration, missing int) {
	for f, row := range a.at {
		for slot, t := range row {
			switch i := exp(f, slot); {
			case sent[i].IsZero():
			case t.IsZero():
				missing++
			default:
				delays = append(delays, t.Sub(sent[i]))
				stored = append(stored, t.Sub(a.stored[f][slot]))
			}
		}
	}
	return delays, stored, missing
}

// logSlowestWrites logs the three writes whose events reached the
// followers latest (by their median delay), each with its spread over the
// followers: one write late for every follower is a pause somewhere before
// or in the Hub's poll; a long spread is the streams' delivery.
func (s *eventsBench) logSlowestWrites(sent []time.Time, a *arrivals) {
	type write struct {
		i                          int
		min, med, max, storedToMed time.Duration
	}
	var ws []write
	for i, t0 := range sent {
		var d, st []time.Duration
		for f := range a.at {
			if at := a.at[f][i]; !at.IsZero() && !t0.IsZero() {
				d, st = append(d, at.Sub(t0)), append(st, at.Sub(a.stored[f][i]))
			}
		}
		if len(d) == 0 {
			continue
		}
		ws = append(ws, write{i: i, min: pct(d, 0), med: pct(d, 50), max: pct(d, 100), storedToMed: pct(st, 50)})
	}
	slices.SortFunc(ws, func(x, y write) int { return cmp.Compare(y.med, x.med) })
	for _, w := range ws[:min(3, len(ws))] {
		s.log.Info("events: one of the slowest writes", "write", w.i, "at", sent[w.i].Sub(sent[0]).Round(time.Millisecond),
			"delay min", w.min, "median", w.med, "max", w.max, "stored → client median", w.storedToMed)
	}
}

// Follower slots: with every follower on GET /events, slot i of each is
// experiment i; with one experiment per follower, follower f's one slot
// is experiment f.
func slotIsExperiment(_, slot int) int  { return slot }
func followerIsExperiment(f, _ int) int { return f }

// delayAll times writes status writes, one every s.o.every, with n clients
// following GET /events (every change, from now on): each event reaches
// every follower.
func (s *eventsBench) delayAll(ctx context.Context, n, writes int) (delayRow, error) {
	batch, err := s.readyBatch(ctx, fmt.Sprintf("all%d", n), writes)
	if err != nil {
		return delayRow{}, err
	}
	index := make(map[string]int, len(batch))
	for i, e := range batch {
		index[e.id] = i
	}
	a := newArrivals(n, len(batch))
	r, err := s.timeWrites(ctx, batch, a, s.o.every, slotIsExperiment, func(ctx context.Context, f int) {
		err := s.streams.Events(ctx, gmini.EventFilter{}, 0, func(e wire.Event) error {
			if i, ok := index[e.Experiment]; ok {
				a.note(f, i, e)
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			a.fail(err)
		}
	})
	r.endpoint, r.followers = "GET /events (every change; each event reaches every follower)", n
	if err != nil {
		return r, err
	}
	s.log.Info("events: delay", "followers", n, "events", len(r.delays), "missing", r.missing,
		"p50", pct(r.delays, 50), "p99", pct(r.delays, 99), "max", pct(r.delays, 100))
	return r, clean(ctx, s.admin, eventsNamespace)
}

// delayEach times one status write per experiment of batch, one every
// eachEvery, each experiment watched by one client of its own
// (GET /experiments/{id}/events, which ends with done once it is final).
func (s *eventsBench) delayEach(ctx context.Context, batch []experimentRef) (delayRow, error) {
	a := newArrivals(len(batch), 1)
	r, err := s.timeWrites(ctx, batch, a, eachEvery, followerIsExperiment, func(ctx context.Context, f int) {
		_, err := s.streams.WatchExperiment(ctx, batch[f].id, 0, func(e wire.Event) error {
			if e.Experiment == batch[f].id {
				a.note(f, 0, e)
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			a.fail(err)
		}
	})
	r.endpoint, r.followers = "GET /experiments/{id}/events (each follower watches its own experiment)", len(batch)
	if err != nil {
		return r, err
	}
	s.log.Info("events: delay, one experiment each", "followers", len(batch), "events", len(r.delays), "missing", r.missing,
		"p50", pct(r.delays, 50), "p99", pct(r.delays, 99), "max", pct(r.delays, 100))
	return r, nil
}

// timeWrites connects one follower per row of a, waits until the backend
// serves them all, marks batch's Jobs Complete one every every, and waits
// until every follower has every event it should get (or arrivalWait
// after the last write); exp says which experiment a follower's slot is.
func (s *eventsBench) timeWrites(ctx context.Context, batch []experimentRef, a *arrivals, every time.Duration, exp func(f, slot int) int, follow func(ctx context.Context, f int)) (delayRow, error) {
	followers := len(a.at)
	r := delayRow{writes: len(batch), every: every}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for f := range followers {
		wg.Go(func() { follow(fctx, f) })
	}
	stop := func() { cancel(); wg.Wait() }
	if err := s.waitMetric(ctx, "gmini_event_streams", float64(followers)); err != nil {
		stop()
		return r, err
	}
	// As in the idle rows: the writes time a steady state, not the
	// moments after n connections arrived at once. What those moments
	// cost is in the log (an event written right after 500 followers
	// connected reached some of them 1.5 s later: docs/benchmarks.md).
	time.Sleep(settle)
	sent := make([]time.Time, len(batch))
	next := time.Now()
	for i, e := range batch {
		time.Sleep(time.Until(next))
		t0, rtt, err := s.complete(ctx, e.job)
		if err != nil {
			stop()
			return r, err
		}
		sent[i] = t0
		r.writeRTT = append(r.writeRTT, rtt)
		next = t0.Add(jittered(every, rand.Float64()))
	}
	want := int64(followers * len(a.at[0]))
	_ = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, arrivalWait, true, func(context.Context) (bool, error) {
		return a.got.Load() >= want, nil
	})
	stop()
	r.delays, r.stored, r.missing = delaysOf(sent, a, exp)
	if len(a.at[0]) > 1 {
		s.logSlowestWrites(sent, a)
	}
	r.failed = a.failed
	if a.failed > 0 {
		s.log.Warn("events: followers failed", "count", a.failed, "first", a.firstErr)
	}
	// Every stream gone before the next step measures anything.
	return r, s.waitMetric(ctx, "gmini_event_streams", 0)
}

// jittered is every moved by up to ±20 % (u uniform in [0, 1)): writes at
// a fixed pace would meet the Hub's fixed poll at a few phases only (every
// 250 ms against 200 ms: four), not at every point of its period.
func jittered(every time.Duration, u float64) time.Duration {
	return time.Duration(float64(every) * (0.8 + 0.4*u))
}

// idleCost reads the backend's memory, goroutines and CPU without
// followers, with n followers connected that receive nothing, and after
// they left. gauge is the backend's metric that counts them.
func (s *eventsBench) idleCost(ctx context.Context, name, what, gauge string, n int, follow func(ctx context.Context, i int) error) (idleRow, error) {
	r := idleRow{what: what, n: n, window: s.o.window}
	time.Sleep(settle)
	var err error
	if r.before, err = s.snapshot(ctx); err != nil {
		return r, err
	}
	if r.cpuBefore, r.apiBefore, r.reqsBefore, err = s.cpuWindow(ctx); err != nil {
		return r, err
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Go(func() {
			if err := follow(fctx, i); err != nil && fctx.Err() == nil {
				mu.Lock()
				r.failed++
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		})
	}
	stop := func() { cancel(); wg.Wait() }
	if err := s.waitMetric(ctx, gauge, float64(n)); err != nil {
		stop()
		return r, fmt.Errorf("%s: %w (followers failed: %v)", what, err, firstErr)
	}
	time.Sleep(settle)
	if r.with, err = s.snapshot(ctx); err != nil {
		stop()
		return r, err
	}
	// The heap profile with the followers, for `go tool pprof`.
	if prof, err := httpGet(ctx, s.hc, "http://"+s.debug+"/debug/pprof/heap"); err == nil {
		path := filepath.Join(s.logDir, "idle-"+name+"-heap.pb.gz")
		if err := os.WriteFile(path, []byte(prof), 0o644); err == nil {
			s.log.Info("events: heap profile with the idle followers", "what", what, "path", path)
		}
	}
	if r.cpuWith, r.apiWith, r.reqsWith, err = s.cpuWindow(ctx); err != nil {
		stop()
		return r, err
	}
	// Again at the window's end: what the Go runtime kept of the memory
	// the connections' setup touched, it has partly given back by then.
	if r.idled, err = s.snapshot(ctx); err != nil {
		stop()
		return r, err
	}
	stop()
	if r.failed > 0 {
		return r, fmt.Errorf("%s: %d of %d idle followers failed: %w", what, r.failed, n, firstErr)
	}
	if err := s.waitMetric(ctx, gauge, 0); err != nil {
		return r, err
	}
	// Goroutines end a moment after their streams: wait for the count to
	// come back, or settle where it stays.
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		g, err := s.metric(ctx, "go_goroutines")
		return err == nil && g <= r.before.goroutines, nil
	})
	time.Sleep(settle)
	if r.after, err = s.snapshot(ctx); err != nil {
		return r, err
	}
	if left := grown(goroutineGroups(r.before.stacks), goroutineGroups(r.after.stacks)); len(left) > 0 {
		s.log.Info("events: goroutines more after the followers left than before them", "what", what, "groups", strings.Join(left, "; "))
	}
	s.log.Info("events: idle followers", "what", what, "n", n,
		"rss before", mib(r.before.mem.RSS), "with", mib(r.with.mem.RSS), "idled", mib(r.idled.mem.RSS), "after", mib(r.after.mem.RSS),
		"goroutines", fmt.Sprintf("%.0f/%.0f/%.0f", r.before.goroutines, r.with.goroutines, r.after.goroutines),
		"cpu before", r.cpuBefore, "with", r.cpuWith)
	return r, nil
}

func (s *eventsBench) snapshot(ctx context.Context) (snapshot, error) {
	// The heap profile with gc=1 runs a GC first; its body is not needed.
	if _, err := httpGet(ctx, s.hc, "http://"+s.debug+"/debug/pprof/heap?gc=1"); err != nil {
		return snapshot{}, fmt.Errorf("force a GC in the backend: %w", err)
	}
	text, err := httpGet(ctx, s.hc, s.b.proc.URL()+"/metrics")
	if err != nil {
		return snapshot{}, err
	}
	stacks, err := httpGet(ctx, s.hc, "http://"+s.debug+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		return snapshot{}, fmt.Errorf("read the backend's goroutines: %w", err)
	}
	sn := snapshot{mem: s.b.proc.Memory(), stacks: stacks}
	for _, m := range []struct {
		name string
		v    *float64
	}{{"go_goroutines", &sn.goroutines}, {"go_memstats_heap_inuse_bytes", &sn.heapInuse}, {"go_memstats_stack_inuse_bytes", &sn.stackIn}} {
		v, ok := metricSum(text, m.name)
		if !ok {
			return snapshot{}, fmt.Errorf("no %s in the backend's /metrics", m.name)
		}
		*m.v = v
	}
	if sn.mem.RSS == 0 {
		return snapshot{}, errors.New("cannot read the backend's memory from /proc")
	}
	return sn, nil
}

// goroutineGroups reads a goroutine profile in its debug=1 text form
// (groups of goroutines with one stack, each "<count> @ <pcs>" then one
// "#\t<pc>\t<function>+<offset>\t<file>:<line>" line per frame) into a
// count per stack, the stack named by its functions, innermost first.
func goroutineGroups(text string) map[string]int {
	groups := map[string]int{}
	for _, block := range strings.Split(text, "\n\n") {
		// The first block starts with the profile's own header line.
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if strings.HasPrefix(lines[0], "goroutine profile:") {
			lines = lines[1:]
		}
		if len(lines) == 0 {
			continue
		}
		head, _, ok := strings.Cut(lines[0], " @ ")
		n, err := strconv.Atoi(head)
		if !ok || err != nil {
			continue
		}
		var frames []string
		for _, l := range lines[1:] {
			f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "#"))
			if len(f) >= 2 {
				fn, _, _ := strings.Cut(f[1], "+0x")
				frames = append(frames, fn)
			}
		}
		groups[strings.Join(frames, " < ")] += n
	}
	return groups
}

// grown lists the stacks with more goroutines in after than in before, as
// "+<more> <where it waits> < … < <where it started>": the innermost frame
// outside the runtime and the outermost one.
func grown(before, after map[string]int) []string {
	var out []string
	for stack, n := range after {
		more := n - before[stack]
		if more <= 0 {
			continue
		}
		frames := strings.Split(stack, " < ")
		inner := frames[0]
		for _, fn := range frames {
			if !strings.HasPrefix(fn, "runtime.") {
				inner = fn
				break
			}
		}
		where := inner
		if outer := frames[len(frames)-1]; outer != inner {
			where += " < … < " + outer
		}
		out = append(out, fmt.Sprintf("+%d %s", more, where))
	}
	slices.Sort(out)
	return out
}

// cpuWindow reads, over s.o.window, the CPU the backend and kube-apiserver
// + etcd spent and the requests the API server served (all clients: the
// backend, the Job controller and the benchmark's two reads of the count).
func (s *eventsBench) cpuWindow(ctx context.Context) (backend, api time.Duration, reqs float64, err error) {
	r0, err := s.apiRequests(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	b0, a0 := s.b.proc.CPU(), cpuOf(s.apiPIDs)
	select {
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	case <-time.After(s.o.window):
	}
	backend, api = s.b.proc.CPU()-b0, cpuOf(s.apiPIDs)-a0
	r1, err := s.apiRequests(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return backend, api, r1 - r0, nil
}

// apiRequests is the API server's count of requests served so far.
func (s *eventsBench) apiRequests(ctx context.Context) (float64, error) {
	raw, err := s.admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the API server's metrics: %w", err)
	}
	v, ok := metricSum(string(raw), "apiserver_request_total")
	if !ok {
		return 0, errors.New("no apiserver_request_total in the API server's metrics")
	}
	return v, nil
}

// print writes the part's tables; nothing when the part did not run.
func (r *eventsReport) print(w io.Writer) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\n### Status events: Job status write → SSE event at each follower (cluster without a node)\n\n")
	fmt.Fprintf(w, "One backend process (%s). Per row, its experiments are submitted and wait Pending (their pods are never scheduled); "+
		"the followers connect (the Go client: Events, or WatchExperiment); then the benchmark writes each Job's Complete condition "+
		"(UpdateStatus, as the Job controller would), paced as the row says (each pause moved by up to ±20 %%, so that writes meet the Hub's poll at every phase of it). "+
		"A delay runs from just before that write is sent to the moment the follower's client hands the Succeeded event to its callback; "+
		"every event received counts (followers × writes). "+
		"\"stored → client\" runs from the store's time of the change (the event's time) to the same moment: the Hub's poll (every 200 ms) and the stream.\n\n", r.backend)
	fmt.Fprintln(w, "| followers | endpoint | status writes, pace | events timed | missing | p50 | p99 | max | stored → client p50 / p99 | status write round trip p50 / p99 |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, d := range r.delays {
		missing := strconv.Itoa(d.missing)
		if d.failed > 0 {
			missing += fmt.Sprintf(" (%d followers failed)", d.failed)
		}
		fmt.Fprintf(w, "| %d | %s | %d, one every %s ±20 %% | %d | %s | %s | %s | %s | %s / %s | %s / %s |\n", d.followers, d.endpoint, d.writes, d.every,
			len(d.delays), missing, ms(pct(d.delays, 50)), ms(pct(d.delays, 99)), ms(pct(d.delays, 100)),
			ms(pct(d.stored, 50)), ms(pct(d.stored, 99)), ms(pct(d.writeRTT, 50)), ms(pct(d.writeRTT, 99)))
	}
	if len(r.idle) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Idle followers: what they cost the backend (nothing changes while they are connected)\n\n")
	fmt.Fprintln(w, "Each row on a backend started again just before (same database), so the followers' memory is pages touched for them. "+
		"Memory, read right after a GC the benchmark forces (the heap profile of --debug-listen, ?gc=1): VmRSS and RssAnon of /proc/<pid>/status, "+
		"Go's heap in use and stacks from the backend's /metrics; \"with\" 3 s after the last follower was served, \"idled\" with the same followers at the end of the CPU window; "+
		"per follower: (with − before) / followers, and (idled − before) / followers. CPU: utime + stime of /proc/<pid>/stat over the window, as a share of one CPU; "+
		"API requests: the API server's apiserver_request_total over the window, every client's.")
	fmt.Fprintln(w, "\n| followers | endpoint | RSS before / with / idled / after | RSS per follower, with / idled | anonymous per follower, with / idled | Go heap / stacks per follower | goroutines before / with / after | backend CPU before / with | kube-apiserver + etcd CPU before / with | API requests/s before / with |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.idle {
		n := float64(x.n)
		heap, stacks := (x.with.heapInuse-x.before.heapInuse)/n, (x.with.stackIn-x.before.stackIn)/n
		fmt.Fprintf(w, "| %d | %s | %s / %s / %s / %s | %s / %s | %s / %s | %s / %s | %.0f / %.0f / %.0f | %s / %s | %s / %s | %.1f / %.1f |\n", x.n, x.what,
			mib(x.before.mem.RSS), mib(x.with.mem.RSS), mib(x.idled.mem.RSS), mib(x.after.mem.RSS),
			kib((float64(x.with.mem.RSS)-float64(x.before.mem.RSS))/n), kib((float64(x.idled.mem.RSS)-float64(x.before.mem.RSS))/n),
			kib((float64(x.with.mem.Anon)-float64(x.before.mem.Anon))/n), kib((float64(x.idled.mem.Anon)-float64(x.before.mem.Anon))/n), kib(heap), kib(stacks),
			x.before.goroutines, x.with.goroutines, x.after.goroutines,
			share(x.cpuBefore, x.window), share(x.cpuWith, x.window), share(x.apiBefore, x.window), share(x.apiWith, x.window),
			x.reqsBefore/x.window.Seconds(), x.reqsWith/x.window.Seconds())
	}
	fmt.Fprintf(w, "\nCPU window: %s each. Webhook throughput: `BenchmarkDeliver` (apps/backend/internal/webhook), not this part.\n", r.idle[0].window)
}

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// share is CPU time d over window as a share of one CPU.
func share(d, window time.Duration) string {
	if window <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", math.Round(1000*d.Seconds()/window.Seconds())/10)
}
