package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Item is a set's item for one experiment, as POST /experiment takes it:
// {"experiment": experiment}, where experiment is anything that encodes to
// a JSON object with an "id". Build items with a "queue" (or anything
// else POST /experiment takes) as json.RawMessage yourself.
func Item(experiment any) (json.RawMessage, error) {
	b, err := json.Marshal(map[string]any{"experiment": experiment})
	if err != nil {
		return nil, fmt.Errorf("gmini: encode the experiment: %w", err)
	}
	return b, nil
}

// SubmitSet POSTs an experiment set: up to wire.MaxSetItems items under
// the set's ID, in one request. The backend answers every item, in order,
// with its own outcome, so a nil error means the set was read, not that
// every item was created: see SetSubmission.Outcomes (Failed) and each
// item's Code. Sending the same set again creates nothing twice; an
// *Error is a refusal of the whole set (400, 413, 429...), which then
// created nothing.
func (c *Client) SubmitSet(ctx context.Context, set wire.SetRequest) (wire.SetSubmission, error) {
	body, err := json.Marshal(set)
	if err != nil {
		return wire.SetSubmission{}, fmt.Errorf("gmini: encode the set: %w", err)
	}
	var s wire.SetSubmission
	return s, c.do(ctx, http.MethodPost, "/experiment-sets", nil, body, &s)
}

// GetSet returns the set's counts by state and one page of its
// experiments (opts as List's); pass the page's Continue back for the
// next.
func (c *Client) GetSet(ctx context.Context, id string, opts ListOptions) (wire.Set, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Continue != "" {
		q.Set("continue", opts.Continue)
	}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	var s wire.Set
	return s, c.do(ctx, http.MethodGet, "/experiment-sets/"+url.PathEscape(id), q, nil, &s)
}

// GetSetAll is GetSet reading every page: the counts of the last page
// read, and every experiment.
func (c *Client) GetSetAll(ctx context.Context, id string, opts ListOptions) (wire.Set, error) {
	var all wire.Set
	for {
		page, err := c.GetSet(ctx, id, opts)
		if err != nil {
			return wire.Set{}, err
		}
		items := append(all.Items, page.Items...)
		all, all.Items, all.Continue = page, items, ""
		if page.Continue == "" {
			return all, nil
		}
		opts.Continue = page.Continue
	}
}

// CancelSet cancels every experiment of the set that has not finished.
// Experiments that could not be cancelled now (a POST of the set was
// still submitting them: 409) are in SetCancellation.Errors; a nil error
// means the set was found.
func (c *Client) CancelSet(ctx context.Context, id string) (wire.SetCancellation, error) {
	var r wire.SetCancellation
	return r, c.do(ctx, http.MethodDelete, "/experiment-sets/"+url.PathEscape(id), nil, nil, &r)
}
