//go:build e2e

// Package e2e proves gmini end to end on a real cluster: kind where a Docker
// engine runs, a local node of host processes everywhere else. Run it with
// `make e2e` (go test -tags e2e ./e2e/). GMINI_E2E_PROVIDER forces a
// provider (auto, kind, local); GMINI_E2E_KEEP=1 leaves the cluster running.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/manifests"
)

const clusterName = "gmini-e2e"

var (
	testenv  env.Environment
	repoRoot string
	logger   = slog.New(slog.NewTextHandler(os.Stderr, nil))
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	root, err := manifests.RepoRoot(".")
	if err != nil {
		logger.Error("find repository root", "err", err)
		return 1
	}
	repoRoot = root
	out := filepath.Join(root, "_output")

	start := time.Now()
	provider, kind, err := cluster.New(ctx, cluster.Options{
		Provider: os.Getenv("GMINI_E2E_PROVIDER"),
		RepoRoot: root,
		Log:      logger,
	})
	if err != nil {
		logger.Error("prepare cluster", "err", err)
		return 1
	}
	tars, err := deploy.BuildImages(ctx, logger, root, filepath.Join(out, "images"), "dev")
	if err != nil {
		logger.Error("build images", "err", err)
		return 1
	}
	logger.Info("prepared", "provider", kind, "elapsed", time.Since(start).Round(time.Second))

	testenv = env.NewWithConfig(envconf.New())
	testenv.Setup(
		envfuncs.CreateClusterWithOpts(provider, clusterName),
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			return ctx, deploy.LoadImages(ctx, logger, provider, tars)
		},
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			return ctx, deploy.Apply(ctx, logger, cfg.Client().RESTConfig(), filepath.Join(root, "overlays", "dev"))
		},
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			client, err := kubernetes.NewForConfig(cfg.Client().RESTConfig())
			if err != nil {
				return ctx, err
			}
			return ctx, deploy.WaitBackend(ctx, logger, client, deploy.Namespace, 3*time.Minute)
		},
	)
	logsDir := filepath.Join(out, "e2e-logs")
	testenv.Finish(func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		_ = os.RemoveAll(logsDir)
		if err := provider.ExportLogs(ctx, logsDir); err != nil {
			logger.Warn("export cluster logs", "err", err)
		}
		if os.Getenv("GMINI_E2E_KEEP") == "1" {
			logger.Info("leaving the cluster running (GMINI_E2E_KEEP=1)", "kubeconfig", provider.GetKubeconfig())
			return ctx, nil
		}
		// Destroy the provider itself rather than envfuncs.DestroyCluster,
		// which finds it only when Create succeeded: a half-created cluster
		// must be torn down too.
		return ctx, destroy(ctx, provider)
	})
	code := testenv.Run(m)
	if code != 0 {
		printLogTails(logsDir, 30)
	}
	logger.Info("e2e finished", "exit", code, "elapsed", time.Since(start).Round(time.Second))
	return code
}

func destroy(ctx context.Context, p support.E2EClusterProvider) error {
	start := time.Now()
	if err := p.Destroy(ctx); err != nil {
		logger.Error("destroy cluster", "err", err)
		return err
	}
	logger.Info("cluster destroyed", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// printLogTails shows the end of every component log, so a CI failure can
// be diagnosed from the CI output alone.
func printLogTails(dir string, n int) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(os.Stderr, "\n==== last %d lines of %s ====\n%s\n", len(lines), path, strings.Join(lines, "\n"))
		return nil
	})
}
