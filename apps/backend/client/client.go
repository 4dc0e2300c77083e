// Package client is the Go client of gmini's HTTP API: submit, read, list,
// read the output of and cancel experiments. It speaks the backend's own
// wire types (package wire), and every refusal is an *Error carrying the
// status code and the backend's message, so callers branch on what
// happened rather than on text.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Client talks to one backend. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
	// reconnect overrides the backend's reconnection delay of a follow.
	reconnect time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends requests with hc (its transport, timeout and
// connection pool) instead of http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithToken sends token as a bearer token, for a backend that runs with
// --auth kubernetes.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client of the backend at baseURL (scheme, host and an
// optional path prefix, such as http://127.0.0.1:8080).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("gmini client: base URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("gmini client: base URL %q: want http:// or https:// and a host", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an answer other than 2xx: the status code and the backend's
// message (its JSON "error", or the body as text when it sent none).
type Error struct {
	StatusCode int
	Message    string
	// RetryAfter is the backend's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("gmini: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// StatusCode is err's HTTP status code when it is an *Error, else 0 (the
// request got no answer).
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// Submit POSTs one experiment: {"experiment": experiment}, where
// experiment is anything that encodes to a JSON object with an "id" (a
// map, a struct, or json.RawMessage). A Submission with Created false is
// the same experiment submitted before: nothing ran again. InQueue names
// the queue.
func (c *Client) Submit(ctx context.Context, experiment any, opts ...SubmitOption) (wire.Submission, error) {
	req := submitRequest{Experiment: experiment}
	for _, o := range opts {
		o(&req)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return wire.Submission{}, fmt.Errorf("gmini: encode the experiment: %w", err)
	}
	var s wire.Submission
	return s, c.do(ctx, http.MethodPost, "/experiment", nil, body, &s)
}

// Get returns the experiment's status.
func (c *Client) Get(ctx context.Context, id string) (wire.Status, error) {
	var s wire.Status
	return s, c.do(ctx, http.MethodGet, "/experiments/"+url.PathEscape(id), nil, nil, &s)
}

// ListOptions select a page of GET /experiments.
type ListOptions struct {
	// Limit is the page size; 0 for the backend's default.
	Limit int
	// Continue is the previous page's Continue; empty for the first page.
	Continue string
	// State keeps only experiments in this state; empty keeps all.
	State string
}

// List returns one page of experiments; pass its Continue back for the next.
func (c *Client) List(ctx context.Context, opts ListOptions) (wire.Page, error) {
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
	var p wire.Page
	return p, c.do(ctx, http.MethodGet, "/experiments", q, nil, &p)
}

// ListAll calls fn with every experiment, page after page, until fn returns
// false or the last page is read.
func (c *Client) ListAll(ctx context.Context, opts ListOptions, fn func(wire.Status) bool) error {
	for {
		page, err := c.List(ctx, opts)
		if err != nil {
			return err
		}
		for _, s := range page.Items {
			if !fn(s) {
				return nil
			}
		}
		if page.Continue == "" {
			return nil
		}
		opts.Continue = page.Continue
	}
}

// Logs copies the runner's output to w.
func (c *Client) Logs(ctx context.Context, id string, w io.Writer) error {
	res, err := c.send(ctx, http.MethodGet, "/experiments/"+url.PathEscape(id)+"/logs", nil, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(w, res.Body); err != nil {
		return fmt.Errorf("gmini: read the output of %s: %w", id, err)
	}
	return nil
}

// Cancel deletes the experiment's Job; with history the record stays.
func (c *Client) Cancel(ctx context.Context, id string) (wire.Cancellation, error) {
	var r wire.Cancellation
	return r, c.do(ctx, http.MethodDelete, "/experiments/"+url.PathEscape(id), nil, nil, &r)
}

// do sends a request and decodes a 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	res, err := c.send(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("gmini: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// maxErrorBody bounds what is read of an error answer.
const maxErrorBody = 64 << 10

// send sends a request; an answer other than 2xx is an *Error, its body
// read and closed.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body []byte) (*http.Response, error) {
	return c.sendWith(ctx, method, path, q, body, nil)
}

// sendWith is send with headers of its own (Accept, Last-Event-ID).
func (c *Client) sendWith(ctx context.Context, method, path string, q url.Values, body []byte, header http.Header) (*http.Response, error) {
	// path's segments are escaped already; joined as text, an ID such as
	// ".." reaches the backend as sent (and is refused there) instead of
	// being resolved away.
	target := c.base.String() + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, r)
	if err != nil {
		return nil, fmt.Errorf("gmini: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gmini: %s %s: %w", method, path, err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return res, nil
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
	e := &Error{StatusCode: res.StatusCode, Message: strings.TrimSpace(string(data))}
	var wb wire.Error
	if json.Unmarshal(data, &wb) == nil && wb.Error != "" {
		e.Message = wb.Error
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return nil, e
}
