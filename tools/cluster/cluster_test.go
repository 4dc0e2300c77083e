package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
)

func TestResolve(t *testing.T) {
	ctx := context.Background()
	if got, err := Resolve(ctx, Local); err != nil || got != Local {
		t.Errorf("Resolve(local) = %q, %v", got, err)
	}
	if _, err := Resolve(ctx, "minikube"); err == nil || !strings.Contains(err.Error(), "unknown cluster provider") {
		t.Errorf("Resolve(minikube): err = %v", err)
	}
	// Auto must pick one of the two, whatever this machine has.
	if got, err := Resolve(ctx, Auto); err != nil || (got != Kind && got != Local) {
		t.Errorf("Resolve(auto) = %q, %v", got, err)
	}
}

// TestChoose: auto takes kind only when an engine answers and a node image
// can be had; kind asked for where it cannot run is an error naming what
// to do, before anything is created.
func TestChoose(t *testing.T) {
	t.Parallel()
	imgs := NodeImages{Pinned: "kindest/node:v1.34.11@sha256:44e2", Offline: "gmini.local/kind-node:1.34.4-gmini"}
	probe := func(docker bool, mayPull bool, present ...string) Probe {
		return Probe{
			DockerAnswers: func(context.Context) bool { return docker },
			ImagePresent:  func(_ context.Context, img string) bool { return slices.Contains(present, img) },
			MayPull:       mayPull,
		}
	}
	for _, tt := range []struct {
		name      string
		provider  string
		probe     Probe
		imgs      NodeImages
		want      Choice // Reason compared by substring
		wantErr   []string
		wantWhyIn string
	}{
		{name: "local asked for", provider: Local, probe: probe(true, true, imgs.Pinned), imgs: imgs,
			want: Choice{Provider: Local}},
		{name: "auto, no engine", provider: Auto, probe: probe(false, true), imgs: imgs,
			want: Choice{Provider: Local}, wantWhyIn: "no Docker engine answers"},
		{name: "empty is auto", provider: "", probe: probe(false, false), imgs: imgs,
			want: Choice{Provider: Local}},
		{name: "auto, pinned image present", provider: Auto, probe: probe(true, false, imgs.Pinned, imgs.Offline), imgs: imgs,
			want: Choice{Provider: Kind, NodeImage: imgs.Pinned}},
		{name: "auto, offline image present", provider: Auto, probe: probe(true, false, imgs.Offline), imgs: imgs,
			want: Choice{Provider: Kind, NodeImage: imgs.Offline}},
		{name: "auto, no image, pulls allowed", provider: Auto, probe: probe(true, true), imgs: imgs,
			want: Choice{Provider: Kind, NodeImage: imgs.Pinned}, wantWhyIn: "will pull"},
		{name: "auto, no image, no pulls", provider: Auto, probe: probe(true, false), imgs: imgs,
			want: Choice{Provider: Local}, wantWhyIn: "make kind-node-image"},
		{name: "kind, no engine", provider: Kind, probe: probe(false, true), imgs: imgs,
			wantErr: []string{"no Docker engine answers", "make docker", "CLUSTER=local"}},
		{name: "kind, no image, no pulls", provider: Kind, probe: probe(true, false), imgs: imgs,
			wantErr: []string{imgs.Pinned, imgs.Offline, "make kind-node-image", "GMINI_KIND_PULL=1", "CLUSTER=local"}},
		{name: "kind, offline image", provider: Kind, probe: probe(true, false, imgs.Offline), imgs: imgs,
			want: Choice{Provider: Kind, NodeImage: imgs.Offline}},
		{name: "kind's own image wherever it can be pulled", provider: Kind, probe: probe(true, true, imgs.Offline), imgs: imgs,
			want: Choice{Provider: Kind, NodeImage: imgs.Pinned}, wantWhyIn: "will pull"},
		{name: "forced image present", provider: Kind, probe: probe(true, false, "my/node:1", imgs.Pinned),
			imgs: NodeImages{Forced: "my/node:1", Pinned: imgs.Pinned, Offline: imgs.Offline},
			want: Choice{Provider: Kind, NodeImage: "my/node:1"}},
		{name: "forced image missing is not replaced", provider: Auto, probe: probe(true, false, imgs.Pinned),
			imgs: NodeImages{Forced: "my/node:1", Pinned: imgs.Pinned, Offline: imgs.Offline},
			want: Choice{Provider: Local}, wantWhyIn: "my/node:1"},
		{name: "unknown", provider: "minikube", probe: probe(true, true), imgs: imgs,
			wantErr: []string{"unknown cluster provider"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Choose(context.Background(), tt.provider, tt.probe, tt.imgs)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Choose = %+v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got.Reason, tt.wantWhyIn) {
				t.Errorf("reason %q does not say %q", got.Reason, tt.wantWhyIn)
			}
			got.Reason = ""
			if got != tt.want {
				t.Errorf("Choose = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestMachineProbeNeverPulls puts a fake docker CLI first on PATH that
// records its calls: without GMINI_KIND_PULL, the automatic choice only
// inspects, so a machine that must not reach the internet never does.
func TestMachineProbeNeverPulls(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\ncase \"$1\" in info) echo 20.10.24;; *) exit 1;; esac\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("GMINI_KIND_PULL", "")
	t.Setenv("GITHUB_ACTIONS", "")
	t.Setenv("GMINI_KIND_IMAGE", "")
	got, err := Choose(context.Background(), Auto, Machine(), DefaultNodeImages())
	if err != nil || got.Provider != Local {
		t.Errorf("Choose(auto) = %+v, %v; want local", got, err)
	}
	log, _ := os.ReadFile(calls)
	if strings.Contains(string(log), "pull") {
		t.Errorf("the docker CLI was asked to pull:\n%s", log)
	}
	if !strings.Contains(string(log), "image inspect") {
		t.Errorf("the node images were not looked for:\n%s", log)
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
