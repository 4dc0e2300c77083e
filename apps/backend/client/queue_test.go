package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func TestSubmitInQueue(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(wire.Submission{ID: "e1", Created: true})
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	if _, err := c.Submit(context.Background(), map[string]any{"id": "e1"}, client.InQueue("team-a")); err != nil {
		t.Fatal(err)
	}
	if got != `{"experiment":{"id":"e1"},"queue":"team-a"}` {
		t.Errorf("body %s", got)
	}
	if _, err := c.Submit(context.Background(), map[string]any{"id": "e1"}); err != nil {
		t.Fatal(err)
	}
	if got != `{"experiment":{"id":"e1"}}` {
		t.Errorf("body without a queue %s", got)
	}
	// The real handler, without queues: a 400 that says so.
	c = newClient(t, apitest.Server(t).URL)
	_, err := c.Submit(context.Background(), map[string]any{"id": "e1"}, client.InQueue("team-a"))
	if client.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "queues are not enabled") {
		t.Errorf("Submit to a backend without queues = %v", err)
	}
}
