package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func TestSetsAgainstTheBackend(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, apitest.Server(t).URL)

	var items []json.RawMessage
	for i := range 5 {
		it, err := client.Item(map[string]any{"id": fmt.Sprintf("s-%d", i), "lr": 0.1 * float64(i)})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, it)
	}
	items = append(items, json.RawMessage(`{"experiment": {"id": "bad id"}}`))
	sub, err := c.SubmitSet(ctx, wire.SetRequest{ID: "sweep", Items: items})
	if err != nil || sub.ID != "sweep" || sub.Outcomes != (wire.SetOutcomes{Created: 5, Invalid: 1}) || len(sub.Items) != 6 {
		t.Fatalf("SubmitSet = %+v, %v; want 5 created, 1 invalid", sub, err)
	}
	if last := sub.Items[5]; !last.Failed() || last.Code != http.StatusBadRequest || last.Message == "" {
		t.Errorf("the invalid item = %+v", last)
	}
	again, err := c.SubmitSet(ctx, wire.SetRequest{ID: "sweep", Items: items[:5]})
	if err != nil || again.Outcomes != (wire.SetOutcomes{Existing: 5}) || again.Outcomes.Failed() != 0 {
		t.Errorf("SubmitSet again = %+v, %v; want 5 existing", again.Outcomes, err)
	}

	page, err := c.GetSet(ctx, "sweep", client.ListOptions{Limit: 2})
	if err != nil || page.Total != 5 || len(page.Items) != 2 || page.Continue == "" || page.Source != "history" {
		t.Errorf("GetSet(limit 2) = %+v, %v", page, err)
	}
	all, err := c.GetSetAll(ctx, "sweep", client.ListOptions{Limit: 2})
	if err != nil || all.Total != 5 || len(all.Items) != 5 || all.Continue != "" || all.Counts["Submitted"] != 5 {
		t.Errorf("GetSetAll = %+v, %v; want the 5, Submitted as recorded", all, err)
	}

	cancelled, err := c.CancelSet(ctx, "sweep")
	if err != nil || cancelled.Total != 5 || cancelled.Cancelled != 5 {
		t.Errorf("CancelSet = %+v, %v; want 5 cancelled", cancelled, err)
	}

	for _, tc := range []struct {
		name string
		call func() error
		code int
	}{
		{"a set of none", func() error { _, err := c.SubmitSet(ctx, wire.SetRequest{ID: "s"}); return err }, 400},
		{"a bad set ID", func() error { _, err := c.SubmitSet(ctx, wire.SetRequest{ID: "a b", Items: items[:1]}); return err }, 400},
		{"an unknown set", func() error { _, err := c.GetSet(ctx, "nope", client.ListOptions{}); return err }, 404},
		{"cancel an unknown set", func() error { _, err := c.CancelSet(ctx, "nope"); return err }, 404},
	} {
		if code := client.StatusCode(tc.call()); code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, code, tc.code)
		}
	}
}
