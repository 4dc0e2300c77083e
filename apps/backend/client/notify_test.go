package client_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
)

// NotifyAt puts "notify" in the body: this backend has no webhooks file,
// and says so about exactly that field.
func TestNotifyAt(t *testing.T) {
	c := newClient(t, apitest.Server(t).URL)
	_, err := c.Submit(context.Background(), map[string]any{"id": "n-1"}, client.NotifyAt("https://hooks.example.com/x"))
	if client.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), `"notify" is not enabled`) {
		t.Errorf("Submit with NotifyAt = %v; want 400 saying notify is not enabled", err)
	}
}
