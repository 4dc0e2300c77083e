package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
)

// Defaults of Options.
const (
	DefaultWorkers = 8
	DefaultMaxAge  = 24 * time.Hour
	DefaultTimeout = 10 * time.Second
	DefaultPoll    = time.Second
)

// eventBatch is how many events one creation step reads.
const eventBatch = 500

// leaseMargin is how long past an attempt's timeout its delivery stays
// leased: time to record the outcome.
const leaseMargin = 30 * time.Second

// maxResponseBytes is how much of an answer is read (and thrown away), so
// its connection can be reused.
const maxResponseBytes = 64 << 10

// Options configure a Deliverer.
type Options struct {
	Store history.Store
	// Live is the configuration, read again as it changes; nil: Config,
	// which never does.
	Live   *Live
	Config *Config
	// Namespace is the experiments', for the events' source.
	Namespace string
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	// Workers bound the attempts under way at once; default
	// DefaultWorkers.
	Workers int
	// MaxAge is how long after its creation a delivery is retried
	// before it is given up (failed); default DefaultMaxAge. Events
	// older than that when the deliverer first reads them get no
	// deliveries.
	MaxAge time.Duration
	// Timeout bounds one attempt, connection included; default
	// DefaultTimeout.
	Timeout time.Duration
	// Poll is how often the store is looked at for new events and due
	// deliveries; default DefaultPoll.
	Poll time.Duration
	// Backoff spaces the attempts; default DefaultBackoff.
	Backoff Backoff
	// RootCAs verify the receivers' certificates; nil: the system's.
	RootCAs *x509.CertPool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Deliverer turns events into deliveries and attempts them. Run it on one
// replica at a time (the recorder's lease holder): two at once (during a
// hand-over) still create each delivery once and never attempt one
// delivery at the same moment, but may attempt it twice in a row.
type Deliverer struct {
	o      Options
	log    *slog.Logger
	cursor int64 // -1: read it from the store

	mu sync.Mutex
	// clients are the HTTP clients of cfg's targets, by *SinkTarget and
	// *Pattern: made again when the configuration changes.
	cfg     *Config
	clients map[any]*http.Client
}

// New returns a Deliverer with o's defaults filled in.
func New(o Options) *Deliverer {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Backoff.Base <= 0 || o.Backoff.Cap <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Live == nil {
		o.Live = Static(o.Config)
	}
	d := &Deliverer{o: o, log: o.Log.With("component", "webhook"), cursor: -1}
	d.config()
	return d
}

// config is the configuration in force, and the clients of its targets.
func (d *Deliverer) config() (*Config, map[any]*http.Client) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg := d.o.Live.Current()
	if cfg == d.cfg {
		return d.cfg, d.clients
	}
	for _, c := range d.clients {
		c.CloseIdleConnections()
	}
	d.cfg, d.clients = cfg, map[any]*http.Client{}
	for _, s := range cfg.Sinks {
		d.clients[s] = newClient(s.guard, d.o.Timeout, d.o.RootCAs)
	}
	for _, p := range cfg.Notify {
		d.clients[p] = newClient(p.guard, d.o.Timeout, d.o.RootCAs)
	}
	return d.cfg, d.clients
}

// newClient is the HTTP client of one target: its connections go through
// the guard, never through a proxy, and redirects are not followed (a
// redirect is an answer like any other non-2xx: retried).
func newClient(g guard, timeout time.Duration, roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run creates and attempts deliveries until ctx ends. An attempt under way
// then is interrupted and its delivery made due again at once, for
// whichever replica delivers next (or, should that write fail, once its
// lease passes).
func (d *Deliverer) Run(ctx context.Context) {
	cfg, _ := d.config()
	d.log.Info("delivering webhooks", "config", cfg.String(), "workers", d.o.Workers, "maxAge", d.o.MaxAge.String())
	jobs := make(chan history.Delivery)
	freed := make(chan struct{}, d.o.Workers)
	var wg sync.WaitGroup
	for range d.o.Workers {
		wg.Go(func() {
			for del := range jobs {
				d.attempt(ctx, del)
				freed <- struct{}{}
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
		d.o.Metrics.Webhook.Pending.Set(0)
	}()
	idle := d.o.Workers
	var lastCount time.Time
	var warned time.Time
	warn := func(msg string, err error) {
		if ctx.Err() == nil && time.Since(warned) > time.Minute {
			d.log.Warn(msg, "err", err)
			warned = time.Now()
		}
	}
	for {
		more, err := d.create(ctx)
		if err != nil {
			warn("webhooks: cannot create deliveries from the stored events; retrying", err)
		}
		if idle > 0 {
			// Not cut short by ctx: a lease the store committed after its
			// caller gave up would hold its deliveries until it passes.
			// Leased, they go to the workers, which give them back.
			now := d.o.Now()
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.o.Timeout)
			leased, err := d.o.Store.LeaseDeliveries(lctx, now, now.Add(d.o.Timeout+leaseMargin), min(idle, history.MaxDeliveryLease))
			cancel()
			if err != nil {
				warn("webhooks: cannot read the deliveries due; retrying", err)
			}
			// As many as workers are idle: each send is taken at once,
			// also when ctx has ended (the worker then gives it back).
			for _, del := range leased {
				jobs <- del
				idle--
			}
		}
		if time.Since(lastCount) >= 5*time.Second {
			if n, err := d.o.Store.PendingDeliveries(ctx); err == nil {
				d.o.Metrics.Webhook.Pending.Set(float64(n))
				lastCount = time.Now()
			}
		}
		// A worker done, or the poll: a full batch of events read goes
		// on at once.
		wait := d.o.Poll
		if more {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-freed:
			idle++
		case <-t.C:
		}
		t.Stop()
		for drained := false; !drained; {
			select {
			case <-freed:
				idle++
			default:
				drained = true
			}
		}
	}
}

// create turns the events after the cursor into deliveries; more is true
// when it read a full batch (more may wait).
func (d *Deliverer) create(ctx context.Context) (more bool, err error) {
	if d.cursor < 0 {
		if d.cursor, err = d.o.Store.OutboxCursor(ctx); err != nil {
			d.cursor = -1
			return false, err
		}
	}
	evs, err := d.o.Store.OutboxEvents(ctx, d.cursor, eventBatch)
	if err != nil || len(evs) == 0 {
		return false, err
	}
	now := d.o.Now()
	var ds []history.NewDelivery
	skipped := 0
	for _, e := range evs {
		if now.Sub(e.At) > d.o.MaxAge {
			skipped++
			continue
		}
		ds = append(ds, d.targets(e)...)
	}
	last := evs[len(evs)-1].Seq
	moved, err := d.o.Store.AddDeliveries(ctx, d.cursor, last, ds, now)
	if err != nil {
		return false, err
	}
	if !moved {
		// Another deliverer (the previous leader, finishing) moved it:
		// start again from where it is.
		d.cursor = -1
		return true, nil
	}
	if skipped > 0 {
		d.log.Warn("webhooks: events older than the give-up age get no deliveries", "events", skipped, "maxAge", d.o.MaxAge.String())
	}
	if len(ds) > 0 {
		d.log.Debug("webhook deliveries created", "deliveries", len(ds), "events", len(evs), "cursor", last)
	}
	d.cursor = last
	return len(evs) == eventBatch, nil
}

// targets are the deliveries of e: each sink that wants its state, and
// each notify URL of its experiment when notify URLs get it.
func (d *Deliverer) targets(e history.OutboxEvent) []history.NewDelivery {
	var ds []history.NewDelivery
	cfg, _ := d.config()
	for _, s := range cfg.Sinks {
		if s.Wants(e.State) {
			ds = append(ds, history.NewDelivery{Experiment: e.ID, Seq: e.Seq, Kind: history.DeliverySink, Target: s.Name})
		}
	}
	if cfg.NotifyWants(e.State) {
		var seen []string
		for _, u := range e.Notify {
			if !slices.Contains(seen, u) {
				seen = append(seen, u)
				ds = append(ds, history.NewDelivery{Experiment: e.ID, Seq: e.Seq, Kind: history.DeliveryNotify, Target: u})
			}
		}
	}
	return ds
}

// recordTimeout bounds the write of an attempt's outcome.
const recordTimeout = 5 * time.Second

// attempt makes one attempt of del and records it. The record is written
// also when ctx ends meanwhile (it bounds the attempt, not its record): an
// attempt made and not recorded would wait for its lease to pass.
func (d *Deliverer) attempt(ctx context.Context, del history.Delivery) {
	a, outcome := d.send(ctx, del)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if ctx.Err() != nil && a.Code == 0 && a.State != history.DeliveryFailed {
		// Stopped mid-way, without an answer (the lease lost, or the
		// backend stopping): the receiver may have it or not, so it is
		// due again at once, for the next leader.
		a.State, a.NextAt, a.Error = history.DeliveryPending, d.o.Now(), "interrupted: this replica stopped delivering"
		_ = d.o.Store.RecordAttempt(rctx, a)
		return
	}
	d.o.Metrics.Webhook.Attempts.WithLabelValues(outcome).Inc()
	if err := d.o.Store.RecordAttempt(rctx, a); err != nil {
		// The lease makes it due again: attempted once more.
		d.log.Warn("webhooks: cannot record an attempt; the delivery will be attempted again", "delivery", del.ID, "err", err)
		return
	}
	target := del.Target
	if del.Kind == history.DeliveryNotify {
		target = Redact(target)
	}
	attrs := []any{"experiment", del.Experiment, "event", del.Seq, "state", del.Event.State, "kind", del.Kind,
		"target", target, "attempts", del.Attempts + 1, "code", a.Code}
	switch a.State {
	case history.DeliveryDelivered:
		d.o.Metrics.Webhook.Deliveries.WithLabelValues(history.DeliveryDelivered).Inc()
		d.log.Debug("webhook delivered", attrs...)
	case history.DeliveryFailed:
		d.o.Metrics.Webhook.Deliveries.WithLabelValues(history.DeliveryFailed).Inc()
		d.log.Warn("webhook delivery failed for good", append(attrs, "err", a.Error)...)
	default:
		level := slog.LevelDebug
		if del.Attempts == 0 {
			level = slog.LevelInfo // the first failure of each delivery
		}
		d.log.Log(ctx, level, "webhook attempt failed; will retry", append(attrs, "err", a.Error, "next", a.NextAt)...)
	}
}

// send makes the HTTP request of del and judges its answer.
func (d *Deliverer) send(ctx context.Context, del history.Delivery) (history.Attempt, string) {
	start := d.o.Now()
	a := history.Attempt{ID: del.ID, At: start, NextAt: start}
	target, secret, client, err := d.resolve(del)
	if err != nil {
		a.State, a.Error = history.DeliveryFailed, err.Error()
		return a, "unconfigured"
	}
	ev, err := cloudEvent(d.o.Namespace, del.Event)
	if err != nil {
		a.State, a.Error = history.DeliveryFailed, err.Error()
		return a, "unconfigured"
	}
	actx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, err := newRequest(actx, target, ev, secret, start)
	if err != nil {
		a.State, a.Error = history.DeliveryFailed, err.Error()
		return a, "unconfigured"
	}
	resp, err := client.Do(req)
	now := d.o.Now()
	a.At = now
	var outcome string
	var wait time.Duration
	switch {
	case err != nil:
		outcome, a.Error = classify(err)
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		drain(resp)
		a.State, a.Code, a.NextAt = history.DeliveryDelivered, resp.StatusCode, now
		return a, "2xx"
	case resp.StatusCode == http.StatusGone:
		drain(resp)
		a.State, a.Code, a.NextAt = history.DeliveryFailed, resp.StatusCode, now
		a.Error = "410 Gone: the receiver wants no more deliveries"
		return a, "410"
	default:
		drain(resp)
		a.Code, a.Error = resp.StatusCode, resp.Status
		outcome = fmt.Sprintf("%dxx", resp.StatusCode/100)
		wait = retryAfter(resp.Header, now)
	}
	return d.retry(a, del, now, wait), outcome
}

// retry schedules the next attempt after a failed one, or gives up once
// the delivery is MaxAge old.
func (d *Deliverer) retry(a history.Attempt, del history.Delivery, now time.Time, retryAfter time.Duration) history.Attempt {
	deadline := del.CreatedAt.Add(d.o.MaxAge)
	if !now.Before(deadline) {
		a.State = history.DeliveryFailed
		a.Error = fmt.Sprintf("given up after %d attempts over %s; last: %s", del.Attempts+1, d.o.MaxAge, a.Error)
		a.NextAt = now
		return a
	}
	pause := max(d.o.Backoff.Delay(del.Attempts+1, nil), min(retryAfter, d.o.Backoff.Cap))
	a.State = history.DeliveryPending
	a.NextAt = now.Add(pause)
	if a.NextAt.After(deadline) {
		a.NextAt = deadline // one last attempt at the give-up age
	}
	return a
}

// resolve finds del's URL, secret and client in the configuration as it
// is now: a sink removed or a notify URL no longer allowed is given up.
func (d *Deliverer) resolve(del history.Delivery) (string, []byte, *http.Client, error) {
	cfg, clients := d.config()
	switch del.Kind {
	case history.DeliverySink:
		s, ok := cfg.Sink(del.Target)
		if !ok {
			return "", nil, nil, fmt.Errorf("sink %q is no longer configured", del.Target)
		}
		return s.URL.String(), s.Secret, clients[s], nil
	case history.DeliveryNotify:
		u, p, err := cfg.Match(del.Target)
		if err != nil {
			return "", nil, nil, fmt.Errorf("no longer allowed: %w", err)
		}
		return u.String(), cfg.NotifySecret, clients[p], nil
	}
	return "", nil, nil, fmt.Errorf("unknown delivery kind %q", del.Kind)
}

// classify names a failed request's outcome, and its error without the
// URL's query (which may carry a token, a sink's as a notify URL's).
func classify(err error) (string, string) {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = Redact(ue.URL)
	}
	var ne net.Error
	switch {
	case errors.Is(err, errRefused):
		return "blocked", err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout", err.Error()
	}
	return "network", err.Error()
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
}
