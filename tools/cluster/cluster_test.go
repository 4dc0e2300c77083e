package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
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

// TestFinishErrors: a failed Finish step fails a run whose tests passed,
// and the error is printed; a run without one keeps the tests' code.
func TestFinishErrors(t *testing.T) {
	ok := func(ctx context.Context, _ *envconf.Config) (context.Context, error) { return ctx, nil }
	bad := func(context.Context, *envconf.Config) (context.Context, error) {
		return nil, errors.New("cluster left behind")
	}
	for _, tt := range []struct {
		name        string
		steps       []env.Func
		tests, want int
		wantOut     string
	}{
		{name: "all fine", steps: []env.Func{ok}, tests: 0, want: 0},
		{name: "tests failed", steps: []env.Func{ok}, tests: 1, want: 1},
		{name: "teardown failed", steps: []env.Func{ok, bad}, tests: 0, want: 1, wantOut: "FAIL: teardown: step 1: cluster left behind"},
		{name: "both failed", steps: []env.Func{bad}, tests: 2, want: 2, wantOut: "cluster left behind"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var f FinishErrors
			ctx := context.Background()
			for i, step := range tt.steps {
				next, _ := f.Record(fmt.Sprintf("step %d", i), step)(ctx, envconf.New())
				if next == nil {
					t.Fatal("Record handed on a nil context")
				}
			}
			var out strings.Builder
			if got := f.ExitCode(tt.tests, &out); got != tt.want {
				t.Errorf("ExitCode(%d) = %d, want %d", tt.tests, got, tt.want)
			}
			if !strings.Contains(out.String(), tt.wantOut) || (tt.wantOut == "" && out.Len() > 0) {
				t.Errorf("printed %q, want %q", out.String(), tt.wantOut)
			}
		})
	}
}
