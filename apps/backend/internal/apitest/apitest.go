// Package apitest serves the backend's real HTTP handler for the tests of
// its clients (package client, the gmini command).
package apitest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
)

// Namespace is the namespace the served experiments live in.
const Namespace = "gmini-test"

// Server is the real HTTP handler, with history in SQLite, over a fake
// clientset: clients are tested against the server's own answers.
func Server(t *testing.T) *httptest.Server {
	t.Helper()
	gin.SetMode(gin.TestMode)
	kube := fake.NewClientset()
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
	}}}}
	h := api.NewHandler(api.Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: kube, Namespace: Namespace, Templates: template.Static{Template: tmpl}, Hold: true},
			Live:    &lifecycle.Store{Client: kube, Namespace: Namespace},
			History: store,
		},
		Metrics:    metrics.New(),
		Logger:     slog.New(slog.DiscardHandler),
		Ready:      func(context.Context) error { return nil },
		APITimeout: 5 * time.Second,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
