//go:build e2e

// Package e2e proves gmini end to end on a real cluster: kind where a Docker
// engine runs, a local node of host processes everywhere else. Run it with
// `make e2e` (go test -tags e2e ./e2e/). GMINI_E2E_PROVIDER forces a
// provider (auto, kind, local); GMINI_E2E_KEEP=1 leaves the cluster running.
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
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

const clusterName = "gmini-e2e"

var (
	testenv env.Environment
	logger  = slog.New(slog.NewTextHandler(os.Stderr, nil))
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
	provider, err := cluster.New(ctx, logger, l, kind, clusterName, true)
	if err != nil {
		logger.Error("prepare cluster", "err", err)
		return 1
	}
	images := deploy.Images{Layout: l, Tag: "dev"}
	logsDir := l.Logs("e2e")

	testenv = env.NewWithConfig(envconf.New())
	testenv.Setup(
		deploy.BuildImages(logger, images),
		envfuncs.CreateClusterWithOpts(provider, clusterName),
		deploy.LoadImages(logger, clusterName, images),
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
