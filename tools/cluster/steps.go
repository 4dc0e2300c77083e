package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/internal/logtail"
)

// Teardown exports the cluster's logs into logsDir and destroys it, unless
// keep is set. It destroys p itself, not what envfuncs stored in the
// context, which is there only when Create succeeded: a half-created
// cluster must be torn down too.
func Teardown(log *slog.Logger, p support.E2EClusterProvider, logsDir string, keep bool) env.Func {
	return func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		_ = os.RemoveAll(logsDir)
		if err := p.ExportLogs(ctx, logsDir); err != nil {
			log.Warn("export cluster logs", "err", err)
		}
		if keep {
			log.Info("leaving the cluster running", "kubeconfig", p.GetKubeconfig())
			return ctx, nil
		}
		t0 := time.Now()
		if err := p.Destroy(ctx); err != nil {
			// e2e-framework logs a failed Finish step only at -v 2.
			log.Error("destroy cluster", "err", err)
			return ctx, fmt.Errorf("destroy cluster: %w", err)
		}
		log.Info("cluster destroyed", "elapsed", time.Since(t0).Round(time.Millisecond))
		return ctx, nil
	}
}

// PrintLogTails writes the last n lines of every log file under dir, so a
// CI failure can be diagnosed from the CI output alone.
func PrintLogTails(w *os.File, dir string, n int) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		lines := logtail.Lines(string(data), n)
		fmt.Fprintf(w, "\n==== last %d lines of %s ====\n%s\n", len(lines), path, strings.Join(lines, "\n"))
		return nil
	})
}
