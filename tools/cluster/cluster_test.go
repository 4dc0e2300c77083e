package cluster

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

func TestResolve(t *testing.T) {
	ctx := context.Background()
	for _, explicit := range []string{Kind, Local} {
		if got, err := Resolve(ctx, explicit); err != nil || got != explicit {
			t.Errorf("Resolve(%q) = %q, %v", explicit, got, err)
		}
	}
	if _, err := Resolve(ctx, "minikube"); err == nil || !strings.Contains(err.Error(), "unknown cluster provider") {
		t.Errorf("Resolve(minikube): err = %v", err)
	}
	// Auto must pick one of the two, whatever this machine has.
	if got, err := Resolve(ctx, Auto); err != nil || (got != Kind && got != Local) {
		t.Errorf("Resolve(auto) = %q, %v", got, err)
	}
}

func TestNewWithoutPrepareNeedsNothingBuilt(t *testing.T) {
	l := layout.Layout{Root: "/checkout"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(context.Background(), log, l, Local, "gmini", false)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := p.(*local.Cluster)
	if !ok {
		t.Fatalf("New(local) = %T", p)
	}
	if got, want := c.GetKubeconfig(), "/checkout/_output/cluster/gmini/kubeconfig"; got != want {
		t.Errorf("kubeconfig %s, want %s", got, want)
	}
	if _, err := New(context.Background(), log, l, Auto, "gmini", false); err == nil {
		t.Error("New(auto) must ask for Resolve first")
	}
}
