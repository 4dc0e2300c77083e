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
	"slices"
	"sort"
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
	// DefaultWindow is how many of the newest events a Hub keeps, once
	// for all its streams: a stream that falls further behind reads what
	// it missed from the store instead (see Stream).
	DefaultWindow = 4096
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
//
// It keeps one window of the newest events for all streams; a stream
// holds only a cursor into it and a wake-up channel, so an idle follower
// costs a few hundred bytes of the Hub, however many events pass.
type Hub struct {
	src    Source
	poll   time.Duration
	window int
	log    *slog.Logger

	// mu guards what follows; streams read the window under its read
	// lock, so 500 of them woken at once do not queue behind each other.
	mu   sync.RWMutex
	subs map[*sub]struct{}
	// recent holds every event with a Seq in (from, last], oldest first,
	// at most window of them.
	recent []history.Event
	from   int64
	// last is the newest Seq the Hub has read (or, while nobody
	// listens, the newest the store had).
	last int64
	// ready is closed once last is known (the first poll).
	ready chan struct{}
}

// sub is one stream's subscription: a wake-up when events it may want
// come.
type sub struct {
	filter Filter
	wake   chan struct{}
}

// Options tune a Hub; zero values take the defaults.
type Options struct {
	Poll time.Duration
	// Window is how many recent events the Hub keeps for streams that
	// read slower than events come.
	Window int
	Log    *slog.Logger
}

// NewHub returns a Hub of src; Run makes it poll.
func NewHub(src Source, o Options) *Hub {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Hub{src: src, poll: o.Poll, window: o.Window, log: o.Log, subs: map[*sub]struct{}{}, ready: make(chan struct{})}
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
			h.last, h.from = last, last
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

// fanOut reads every event after last into the window and wakes the
// streams that may want them.
func (h *Hub) fanOut(ctx context.Context) error {
	for {
		h.mu.Lock()
		after, idle := h.last, len(h.subs) == 0
		h.mu.Unlock()
		if idle {
			// Nobody listens: only keep up with where the store is.
			last, err := h.src.LastEvent(ctx)
			if err == nil {
				h.mu.Lock()
				// Only while still nobody listens: a stream that
				// subscribed meanwhile may have read the store before
				// the newest of these events, and gets them from the
				// window.
				if len(h.subs) == 0 && last > h.last {
					h.last, h.from, h.recent = last, last, nil
				}
				h.mu.Unlock()
			}
			return err
		}
		evs, err := h.src.Events(ctx, history.EventQuery{After: after, Limit: history.MaxEventBatch})
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		h.mu.Lock()
		h.recent = append(h.recent, evs...)
		if drop := len(h.recent) - h.window; drop > 0 {
			h.from = h.recent[drop-1].Seq
			h.recent = h.recent[:copy(h.recent, h.recent[drop:])]
		}
		h.last = evs[len(evs)-1].Seq
		for s := range h.subs {
			if slices.ContainsFunc(evs, s.filter.match) {
				select {
				case s.wake <- struct{}{}:
				default: // woken already
				}
			}
		}
		h.mu.Unlock()
		if len(evs) < history.MaxEventBatch {
			return nil
		}
	}
}

// subscribe registers a stream that has sent every event up to after, and
// returns its cursor in the window: every event after it reaches the
// window. store reports that the window no longer holds all of what
// follows after (or never did): the stream reads that from the store.
func (h *Hub) subscribe(ctx context.Context, f Filter, after int64) (s *sub, cursor int64, store bool, err error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, 0, false, ctx.Err()
	}
	s = &sub{filter: f, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	if after < h.from {
		return s, h.last, true, nil
	}
	// What the stream lacks is in the window, or still to come: a stream
	// that starts now, or resumes from a recent event, reads no store.
	return s, min(after, h.last), false, nil
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

// readBatch bounds the events a stream copies out of the window at once.
const readBatch = 64

// read copies up to readBatch events of f after cursor from the window,
// and returns the new cursor: the Seq of the last event looked at, matched
// or not. behind reports that the window no longer holds what follows
// cursor: the stream must read it from the store.
func (h *Hub) read(f Filter, cursor int64, into []history.Event) (evs []history.Event, next int64, behind bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if cursor < h.from {
		return into, h.last, true
	}
	i := sort.Search(len(h.recent), func(i int) bool { return h.recent[i].Seq > cursor })
	next = cursor
	for ; i < len(h.recent) && len(into) < readBatch; i++ {
		e := h.recent[i]
		next = e.Seq
		if f.match(e) {
			into = append(into, e)
		}
	}
	return into, next, false
}

// ErrStop is returned by a send function to end a stream without error
// (its experiment ended).
var ErrStop = errors.New("events: stream done")

// Stream sends send every event of f after Seq after, oldest first, each
// once, until ctx ends or send returns an error (ErrStop ends it with nil).
// It first reads from the store what is stored after after, then what the
// Hub fans out; a stream holds no events of its own (at most readBatch
// while it sends them): one whose client reads slower than events come
// falls behind the Hub's window and goes back to the store for what it
// missed.
func (h *Hub) Stream(ctx context.Context, f Filter, after int64, send func(history.Event) error) error {
	fl, err := h.Follow(ctx, f, after, send)
	if err != nil {
		return err
	}
	defer fl.Close()
	return fl.Live(ctx)
}

// Following is a stream that has sent what the store held when it
// started: Live sends the rest. It is Stream in two steps, so that a
// caller can read the store on one goroutine and wait for what comes
// on another, whose stack then stays small while it waits.
type Following struct {
	h    *Hub
	s    *sub
	send func(history.Event) error
	// cursor is where the stream is in the Hub's window, after the Seq
	// of the last event sent.
	cursor, after int64
	// done: send returned ErrStop; Live has nothing to do.
	done bool
}

// Follow subscribes f and sends what the store holds after after. Close
// releases the subscription.
func (h *Hub) Follow(ctx context.Context, f Filter, after int64, send func(history.Event) error) (*Following, error) {
	// Subscribe before reading the store: an event the store does not
	// have yet reaches the window after cursor; one it has is sent from
	// the store and skipped in the window (Seq <= after).
	s, cursor, store, err := h.subscribe(ctx, f, after)
	if err != nil {
		return nil, err
	}
	fl := &Following{h: h, s: s, send: send, cursor: cursor, after: after}
	if store {
		fl.after, err = h.catchUp(ctx, f, after, send)
	}
	switch {
	case errors.Is(err, ErrStop):
		fl.done = true
	case err != nil:
		fl.Close()
		return nil, err
	}
	return fl, nil
}

// Live sends what the Hub fans out until ctx ends or send returns an
// error (ErrStop ends it with nil).
func (fl *Following) Live(ctx context.Context) error {
	var err error
	for !fl.done {
		if fl.cursor, fl.after, err = fl.h.live(ctx, fl.s, fl.cursor, fl.after, fl.send); err != nil {
			break
		}
		// The stream fell behind the window: what it missed is in the
		// store, and cursor is where the window was when it looked.
		if fl.after, err = fl.h.catchUp(ctx, fl.s.filter, fl.after, fl.send); err != nil {
			break
		}
	}
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// Close ends the subscription.
func (fl *Following) Close() { fl.h.unsubscribe(fl.s) }

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

// live sends the window's events of s after cursor (those after after)
// until the stream falls behind the window: it then returns (nil error)
// where the window is, for the stream to read the rest from the store.
func (h *Hub) live(ctx context.Context, s *sub, cursor, after int64, send func(history.Event) error) (int64, int64, error) {
	var batch []history.Event
	for {
		evs, next, behind := h.read(s.filter, cursor, batch[:0])
		if behind {
			return next, after, nil
		}
		cursor = next
		for _, e := range evs {
			if e.Seq <= after {
				continue
			}
			if err := send(e); err != nil {
				return cursor, after, err
			}
			after = e.Seq
		}
		if len(evs) == readBatch {
			batch = evs // more may be waiting
			continue
		}
		// Read to the window's end: an idle stream keeps no buffer.
		batch = nil
		select {
		case <-ctx.Done():
			return cursor, after, ctx.Err()
		case <-s.wake:
		}
	}
}
