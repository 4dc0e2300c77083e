package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientAgainstTheBackend(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, apitest.Server(t).URL+"/")

	sub, err := c.Submit(ctx, map[string]any{"id": "exp-1", "key": "k"})
	if err != nil || !sub.Created || sub.ID != "exp-1" || sub.Namespace != apitest.Namespace || sub.Status != "/experiments/exp-1" {
		t.Fatalf("Submit = %+v, %v; want created", sub, err)
	}
	again, err := c.Submit(ctx, json.RawMessage(`{"key": "k", "id": "exp-1"}`))
	if err != nil || again.Created || again.Job != sub.Job {
		t.Errorf("Submit of the same experiment = %+v, %v; want the existing Job, nothing created", again, err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		code int
		says string
	}{
		{"another body under the ID", func() error { _, err := c.Submit(ctx, map[string]any{"id": "exp-1", "key": "other"}); return err }, 409, "different body"},
		{"no ID", func() error { _, err := c.Submit(ctx, map[string]any{"key": "k"}); return err }, 400, "id"},
		{"unknown experiment", func() error { _, err := c.Get(ctx, "nope"); return err }, 404, "not found"},
		{"bad state filter", func() error { _, err := c.List(ctx, client.ListOptions{State: "Sleeping"}); return err }, 400, "Sleeping"},
		{"no output yet", func() error { return c.Logs(ctx, "exp-1", io.Discard) }, 409, "no runner pod"},
	} {
		err := tc.call()
		var e *client.Error
		if !errors.As(err, &e) || e.StatusCode != tc.code || !strings.Contains(e.Message, tc.says) || client.StatusCode(err) != tc.code {
			t.Errorf("%s: err = %v; want a %d saying %q", tc.name, err, tc.code, tc.says)
		}
	}

	st, err := c.Get(ctx, "exp-1")
	if err != nil || st.ID != "exp-1" || st.Source != lifecycle.SourceJob || st.PodCounts == nil {
		t.Errorf("Get = %+v, %v; want the live Job's status", st, err)
	}
	for _, id := range []string{"exp-2", "exp-3"} {
		if _, err := c.Submit(ctx, map[string]any{"id": id}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	if err := c.ListAll(ctx, client.ListOptions{Limit: 1}, func(s wire.Status) bool { ids = append(ids, s.ID); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "exp-3,exp-2,exp-1" {
		t.Errorf("ListAll in pages of 1 = %v; want newest first, each once", ids)
	}

	cancelled, err := c.Cancel(ctx, "exp-2")
	if err != nil || !cancelled.Deleted || cancelled.ID != "exp-2" {
		t.Errorf("Cancel = %+v, %v; want the Job deleted", cancelled, err)
	}
}

func TestClientSendsTheTokenAndReadsRetryAfter(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error": "exceeded quota: gmini"}`)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, client.WithToken("s3cret"), client.WithHTTPClient(srv.Client()))
	_, err := c.Submit(context.Background(), map[string]any{"id": "q1"})
	var e *client.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusTooManyRequests || e.RetryAfter != 5*time.Second || e.Message != "exceeded quota: gmini" {
		t.Errorf("err = %#v; want a 429 with Retry-After 5 s and the backend's message", err)
	}
	if got.Get("Authorization") != "Bearer s3cret" || got.Get("Content-Type") != "application/json" {
		t.Errorf("request headers %v; want the bearer token and JSON", got)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the token is in the error: %v", err)
	}
}

func TestClientLogsStreamsTheBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix/experiments/e.1/logs" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "Running Experiment: e.1\n")
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := newClient(t, srv.URL+"/prefix").Logs(context.Background(), "e.1", &out); err != nil || out.String() != "Running Experiment: e.1\n" {
		t.Errorf("Logs = %q, %v", out.String(), err)
	}
}

func TestNewRefusesABadBaseURL(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://host", "http://", "://x"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) accepted it", u)
		}
	}
}

func TestNoAnswerIsNoStatusCode(t *testing.T) {
	c := newClient(t, "http://127.0.0.1:1")
	_, err := c.Get(context.Background(), "x")
	if err == nil || client.StatusCode(err) != 0 {
		t.Errorf("Get from nothing = %v, status %d; want an error without a status code", err, client.StatusCode(err))
	}
}
