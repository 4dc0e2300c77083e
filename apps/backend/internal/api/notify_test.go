package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/internal/webhook"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// notifyFixture serves the API with history and a webhooks file that
// lets notify URLs name hooks.example.com only.
func notifyFixture(t *testing.T) (*fixture, history.Store) {
	t.Helper()
	gin.SetMode(gin.TestMode)
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	hooks, err := webhook.Parse([]byte("allowNotify: [hooks.example.com]\nnotifySecret: 0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	m := metrics.New()
	log := &bytes.Buffer{}
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}, Hold: true},
			Live:    &lifecycle.Store{Client: client, Namespace: ns},
			History: store,
			Notify:  hooks,
		},
		Metrics: m,
		Logger:  slog.New(slog.NewJSONHandler(log, nil)),
		Ready:   func(context.Context) error { return nil },
	})
	return &fixture{client: client, handler: h, metrics: m, log: log}, store
}

// TestNotifyOutsideTheAllowList: POST /experiment and a set's item naming a
// notify URL outside allowNotify are refused with 400 naming the allowed
// hosts; nothing is created or claimed. An allowed one is accepted.
func TestNotifyOutsideTheAllowList(t *testing.T) {
	f, store := notifyFixture(t)
	rec := f.post(`{"experiment": {"id": "n1"}, "notify": ["https://evil.example/x?token=1"]}`)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("POST = %d %s, want 400", rec.Code, rec.Body)
	}
	if msg := errorMessage(t, rec); !strings.Contains(msg, "hooks.example.com") || strings.Contains(msg, "token") {
		t.Errorf("message %q: want the allowed hosts named, and not the URL's query", msg)
	}
	rec = f.postSet(setJSON("s1", `{"experiment": {"id": "n2"}, "notify": ["https://evil.example/"]}`, `{"experiment": {"id": "n3"}, "notify": ["https://hooks.example.com/s"]}`))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST set = %d %s", rec.Code, rec.Body)
	}
	var set wire.SetSubmission
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Items) != 2 || set.Items[0].Code != http.StatusBadRequest || !strings.Contains(set.Items[0].Message, "hooks.example.com") || set.Items[1].Code != http.StatusCreated {
		t.Errorf("set items = %+v; want the first refused with 400 naming the allowed host, the second created", set.Items)
	}
	for _, id := range []string{"n1", "n2"} {
		if _, err := store.Get(context.Background(), id); failure.KindOf(err) != failure.NotFound {
			t.Errorf("record of %s after a refused notify: %v; want none", id, err)
		}
	}
	if n := len(f.jobs(t)); n != 1 {
		t.Errorf("%d Jobs, want 1 (n3's)", n)
	}

	rec = f.post(`{"experiment": {"id": "n4"}, "notify": ["https://hooks.example.com/x"]}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("POST with an allowed notify = %d %s", rec.Code, rec.Body)
	}
	got, err := store.Get(context.Background(), "n4")
	if err != nil || len(got.Notify) != 1 || got.Notify[0] != "https://hooks.example.com/x" {
		t.Errorf("record = %+v, %v; want the notify URL kept", got, err)
	}
}
