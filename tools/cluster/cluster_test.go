package cluster

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

// TestResolveAutoNeedsTheNodeImage puts a fake docker CLI first on PATH:
// auto picks kind only when the engine answers and has, or can pull,
// kind's node image.
func TestResolveAutoNeedsTheNodeImage(t *testing.T) {
	const answers = "case \"$1\" in info) echo 27.0.1;; "
	for _, tt := range []struct {
		name, script, want string
	}{
		{"no engine", "#!/bin/sh\nexit 1\n", Local},
		{"image present", "#!/bin/sh\n" + answers + "image) echo sha256:1;; *) exit 1;; esac\n", Kind},
		{"image pulled", "#!/bin/sh\n" + answers + "image) exit 1;; pull) exit 0;; *) exit 1;; esac\n", Kind},
		{"image cannot be had", "#!/bin/sh\n" + answers + "image) exit 1;; pull) echo 'dial tcp: i/o timeout' >&2; exit 1;; *) exit 1;; esac\n", Local},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(tt.script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
			if got, err := Resolve(context.Background(), Auto); err != nil || got != tt.want {
				t.Errorf("Resolve(auto) = %q, %v; want %q", got, err, tt.want)
			}
		})
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
