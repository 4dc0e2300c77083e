package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// EventFilter selects the changes of GET /events; empty fields select all.
type EventFilter struct {
	State, Set, Submitter string
}

// EventsFrom is where a stream starts: after the event with this Seq (an
// Event's Seq; 0 is before the first event the store has), or FromNow.
type EventsFrom = int64

// FromNow starts a stream of Events with what is stored from now on; for
// WatchExperiment and WatchSet it is the same as 0, their first event.
const FromNow EventsFrom = -1

// WatchExperiment streams the changes of experiment id's state
// (GET /experiments/{id}/events) after Seq after (0: from its first), and
// returns its final state once it ends. fn sees each change once, in
// order, across reconnections (Last-Event-ID); its error ends the stream
// and is returned as is.
//
// With OnPosition, its queue position is passed on too while it is
// Queued: when first known and each time it changes.
func (c *Client) WatchExperiment(ctx context.Context, id string, after EventsFrom, fn func(wire.Event) error, opts ...WatchOption) (wire.EventsDone, error) {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.watchWith(ctx, "watch experiment "+id, "/experiments/"+url.PathEscape(id)+"/events", nil, resumeAfter(after, false), fn, o)
}

// WatchOption adds to WatchExperiment and WatchSet.
type WatchOption func(*watchOptions)

type watchOptions struct {
	onPosition func(wire.Position) error
}

// OnPosition has WatchExperiment and WatchSet call fn with each "position"
// event: where an experiment waits in its LocalQueue while Queued. Positions are not
// stored changes: a reconnection does not replay them, and fn sees the
// position again only when it changes. fn's error ends the watch.
func OnPosition(fn func(wire.Position) error) WatchOption {
	return func(o *watchOptions) { o.onPosition = fn }
}

// WatchSet streams the changes of experiment set id's items
// (GET /experiment-sets/{id}/events) and returns the counts by state once
// every item is final.
//
// With OnPosition, the queue positions of its Queued items are passed on
// too.
func (c *Client) WatchSet(ctx context.Context, id string, after EventsFrom, fn func(wire.Event) error, opts ...WatchOption) (wire.EventsDone, error) {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.watchWith(ctx, "watch experiment set "+id, "/experiment-sets/"+url.PathEscape(id)+"/events", nil, resumeAfter(after, false), fn, o)
}

// Events streams every change that matches f (GET /events) after Seq
// after, or from now on with FromNow, until ctx ends or fn fails: it
// returns ctx's error or fn's.
func (c *Client) Events(ctx context.Context, f EventFilter, after EventsFrom, fn func(wire.Event) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "set": f.Set, "submitter": f.Submitter} {
		if v != "" {
			q.Set(k, v)
		}
	}
	_, err := c.watch(ctx, "watch events", "/events", q, resumeAfter(after, true), fn)
	return err
}

// resumeAfter is the Last-Event-ID of a first connection: none for the
// stream's own start (an experiment's or set's first event, or, for GET
// /events, now), else the seq.
func resumeAfter(after EventsFrom, fromNowByDefault bool) string {
	if after < 0 || after == 0 && !fromNowByDefault {
		return ""
	}
	return strconv.FormatInt(after, 10)
}

func (c *Client) watch(ctx context.Context, what, path string, q url.Values, from string, fn func(wire.Event) error) (wire.EventsDone, error) {
	return c.watchWith(ctx, what, path, q, from, fn, watchOptions{})
}

func (c *Client) watchWith(ctx context.Context, what, path string, q url.Values, from string, fn func(wire.Event) error, o watchOptions) (wire.EventsDone, error) {
	var done wire.EventsDone
	err := c.streamSSE(ctx, what, path, q, from, func(ev sseEvent) error {
		switch ev.name {
		case wire.EventPosition:
			if o.onPosition == nil {
				return nil
			}
			var p wire.Position
			if err := json.Unmarshal(ev.data, &p); err != nil {
				return fmt.Errorf("gmini: %s: decode position: %w", what, err)
			}
			if err := o.onPosition(p); err != nil {
				return fnError{err}
			}
		case wire.EventState:
			var e wire.Event
			if err := json.Unmarshal(ev.data, &e); err != nil {
				return fmt.Errorf("gmini: %s: decode event %s: %w", what, ev.id, err)
			}
			if err := fn(e); err != nil {
				return fnError{err}
			}
		case wire.EventDone:
			if err := json.Unmarshal(ev.data, &done); err != nil {
				return fmt.Errorf("gmini: %s: decode done: %w", what, err)
			}
			return errDone
		}
		return nil
	})
	return done, err
}
