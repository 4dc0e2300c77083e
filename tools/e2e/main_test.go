//go:build e2e

// Package e2e proves gmini end to end on a real cluster: kind where a Docker
// engine runs, a local node of host processes everywhere else. Run it with
// `make e2e` (go test -tags e2e ./e2e/). GMINI_E2E_PROVIDER forces a
// provider (auto, kind, local); GMINI_E2E_KEEP=1 leaves the cluster running;
// GMINI_E2E_CLUSTER names it (default gmini-e2e).
package e2e

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// clusterName is the cluster the suite creates; GMINI_E2E_CLUSTER picks
// another, so two checkouts (or people) can run the suite side by side.
var clusterName = envOr("GMINI_E2E_CLUSTER", "gmini-e2e")

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var (
	testenv env.Environment
	logger  = slog.New(slog.NewTextHandler(os.Stderr, nil))
	// provider is the suite's cluster, for tests that need more of it
	// than the kubeconfig (they check for the capability they need).
	provider cluster.Provider
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	start := time.Now()
	l, err := layout.FromWorkingDir()
	if err != nil {
		logger.Error("find repository root", "err", err)
		return 1
	}
	kind, err := cluster.Resolve(ctx, os.Getenv("GMINI_E2E_PROVIDER"))
	if err != nil {
		logger.Error("choose cluster provider", "err", err)
		return 1
	}
	// NetworkPolicy: the suite shows the overlay's policies enforced
	// (netpol_test.go); the local node runs kube-router for that.
	// Registry: Flux syncs overlays/prod from it, and the nodes pull the
	// pushed images from it (gitops_test.go).
	provider, err = cluster.New(ctx, logger, l, kind, clusterName, true, cluster.NetworkPolicy, cluster.Registry)
	if err != nil {
		logger.Error("prepare cluster", "err", err)
		return 1
	}
	imgs := deploy.Images{Layout: l, Tag: "dev", Extra: []images.Spec{images.NetProbe(l.Root, "dev")}}
	logsDir := l.Logs(clusterName)

	testenv = env.NewWithConfig(envconf.New())
	testenv.Setup(
		deploy.BuildImages(logger, imgs),
		envfuncs.CreateClusterWithOpts(provider, clusterName),
		deploy.LoadImages(logger, clusterName, imgs),
		deploy.ApplyOverlay(logger, l.Overlay("dev")),
		deploy.WaitBackend(logger, deploy.Namespace, 3*time.Minute),
	)
	testenv.Finish(cluster.Teardown(logger, provider, logsDir, os.Getenv("GMINI_E2E_KEEP") == "1"))
	code := testenv.Run(m)
	if code != 0 {
		cluster.PrintLogTails(os.Stderr, logsDir, 30)
	}
	logger.Info("e2e finished", "provider", kind, "exit", code, "elapsed", time.Since(start).Round(time.Second))
	return code
}
