// Package events streams the history store's state changes (history.Event)
// to the clients that follow them: GET /events, /experiments/{id}/events and
// /experiment-sets/{id}/events.
//
// The store is the source of truth and of order: every event has the Seq the
// database gave it, the same on every replica. A Hub per replica polls the
// store for what is new, once for all its streams, and fans it out; a
// stream that starts, or resumes after a Last-Event-ID, first reads what it
// missed from the store. So a stream sees each event once, in Seq order,
// whichever replica serves it and however often it reconnects, for as long
// as the store keeps the experiment's record (--history-retention).
package events

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

// Source is what a Hub reads: the history store.
type Source interface {
	Events(ctx context.Context, q history.EventQuery) ([]history.Event, error)
	LastEvent(ctx context.Context) (int64, error)
}

// Defaults.
const (
	// DefaultPoll is how often a Hub asks the store for new events: the
	// delay it adds to an event, at most.
	DefaultPoll = 200 * time.Millisecond
	// DefaultBuffer is how many events a stream's subscription holds for
	// a client that reads slower than they come; past it the stream reads
	// the rest from the store instead (see Stream).
	DefaultBuffer = 256
)

// Filter selects events; empty fields select all.
type Filter struct {
	ID, Set, Submitter, State string
}

func (f Filter) match(e history.Event) bool {
	return (f.ID == "" || f.ID == e.ID) && (f.Set == "" || f.Set == e.Set) &&
		(f.Submitter == "" || f.Submitter == e.Submitter) && (f.State == "" || f.State == e.State)
}

func (f Filter) query(after int64) history.EventQuery {
	return history.EventQuery{After: after, ID: f.ID, Set: f.Set, Submitter: f.Submitter, State: f.State}
}

// Hub fans the store's new events out to the streams of one replica.
type Hub struct {
	src    Source
	poll   time.Duration
	buffer int
	log    *slog.Logger

	mu   sync.Mutex
	subs map[*sub]struct{}
	// last is the newest Seq fanned out; a subscription gets the events
	// after it.
	last int64
	// ready is closed once last is known (the first poll).
	ready    chan struct{}
	readyErr error
}

// sub is one stream's subscription.
type sub struct {
	filter Filter
	ch     chan history.Event
	// overflow is closed, and the sub dropped, when ch was full.
	overflow chan struct{}
}

// Options tune a Hub; zero values take the defaults.
type Options struct {
	Poll   time.Duration
	Buffer int
	Log    *slog.Logger
}

// NewHub returns a Hub of src; Run makes it poll.
func NewHub(src Source, o Options) *Hub {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Hub{src: src, poll: o.Poll, buffer: o.Buffer, log: o.Log, subs: map[*sub]struct{}{}, ready: make(chan struct{})}
}

// Run polls the store until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	t := time.NewTicker(h.poll)
	defer t.Stop()
	// The first poll only learns where the store is: the streams read
	// older events themselves.
	for logged := false; ; {
		last, err := h.src.LastEvent(ctx)
		if err == nil {
			h.mu.Lock()
			h.last = last
			h.mu.Unlock()
			close(h.ready)
			break
		}
		if !logged && ctx.Err() == nil {
			h.log.Warn("status events: cannot read the history store; streams wait until it answers", "error", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := h.fanOut(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			h.log.Warn("status events: cannot read new events from the history store; streams wait", "error", err)
			failing = true
		case err == nil && failing:
			h.log.Info("status events: reading the history store again")
			failing = false
		}
	}
}

// fanOut reads every event after last and hands each to the matching subs.
func (h *Hub) fanOut(ctx context.Context) error {
	for {
		h.mu.Lock()
		after, idle := h.last, len(h.subs) == 0
		h.mu.Unlock()
		var evs []history.Event
		var err error
		if idle {
			// Nobody listens: only keep up with where the store is.
			var last int64
			if last, err = h.src.LastEvent(ctx); err == nil {
				h.mu.Lock()
				// Only while still nobody listens: a stream that
				// subscribed meanwhile may have read the store before
				// the newest of these events, and gets them from here.
				if len(h.subs) == 0 {
					h.last = max(h.last, last)
				}
				h.mu.Unlock()
			}
			return err
		}
		if evs, err = h.src.Events(ctx, history.EventQuery{After: after, Limit: history.MaxEventBatch}); err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		h.mu.Lock()
		for _, e := range evs {
			for s := range h.subs {
				if !s.filter.match(e) {
					continue
				}
				select {
				case s.ch <- e:
				default:
					// Never wait for a slow stream: it reads the rest
					// from the store.
					close(s.overflow)
					delete(h.subs, s)
				}
			}
		}
		h.last = evs[len(evs)-1].Seq
		h.mu.Unlock()
		if len(evs) < history.MaxEventBatch {
			return nil
		}
	}
}

func (h *Hub) subscribe(ctx context.Context, f Filter) (*sub, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s := &sub{filter: f, ch: make(chan history.Event, h.buffer), overflow: make(chan struct{})}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s, nil
}

func (h *Hub) unsubscribe(s *sub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// Subscribers is how many streams the Hub serves now.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// ErrStop is returned by a send function to end a stream without error
// (its experiment ended).
var ErrStop = errors.New("events: stream done")

// Stream sends send every event of f after Seq after, oldest first, each
// once, until ctx ends or send returns an error (ErrStop ends it with nil).
// It first reads from the store what is stored after after, then what the
// Hub fans out; a stream whose client reads slower than events come does
// not hold them in memory past the Hub's buffer: it goes back to the store
// for what it missed.
func (h *Hub) Stream(ctx context.Context, f Filter, after int64, send func(history.Event) error) error {
	err := h.stream(ctx, f, after, send)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (h *Hub) stream(ctx context.Context, f Filter, after int64, send func(history.Event) error) error {
	for {
		// Subscribe before reading the store: an event the store does not
		// have yet reaches the subscription; one it has is skipped there.
		s, err := h.subscribe(ctx, f)
		if err != nil {
			return err
		}
		after, err = h.catchUp(ctx, f, after, send)
		if err != nil {
			h.unsubscribe(s)
			return err
		}
		after, err = h.live(ctx, s, after, send)
		h.unsubscribe(s)
		if err != nil {
			return err
		}
		// The subscription overflowed: catch up from the store again.
	}
}

// Replay sends what the store holds of f after after, oldest first, and
// returns: a stream of events that are all stored already (an experiment
// that has ended). ErrStop from send ends it with nil.
func (h *Hub) Replay(ctx context.Context, f Filter, after int64, send func(history.Event) error) error {
	_, err := h.catchUp(ctx, f, after, send)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// catchUp sends what the store holds after after and returns the last Seq sent.
func (h *Hub) catchUp(ctx context.Context, f Filter, after int64, send func(history.Event) error) (int64, error) {
	for {
		evs, err := h.src.Events(ctx, f.query(after))
		if err != nil {
			return after, err
		}
		for _, e := range evs {
			if err := send(e); err != nil {
				return after, err
			}
			after = e.Seq
		}
		if len(evs) < history.DefaultEventBatch {
			return after, nil
		}
	}
}

// live sends the subscription's events until it overflows (nil error).
func (h *Hub) live(ctx context.Context, s *sub, after int64, send func(history.Event) error) (int64, error) {
	for {
		select {
		case <-ctx.Done():
			return after, ctx.Err()
		case e := <-s.ch:
			if e.Seq <= after {
				continue
			}
			if err := send(e); err != nil {
				return after, err
			}
			after = e.Seq
		case <-s.overflow:
			// What is still in ch is in the store too.
			return after, nil
		}
	}
}
