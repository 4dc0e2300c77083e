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

// FinishErrors collects what a suite's Finish steps return. e2e-framework's
// env.Run runs every Finish step even when one fails, but only logs the
// error at klog verbosity 2 and returns the tests' exit code, so a teardown
// that failed (a backend that would not stop, a cluster left behind) would
// pass the run.
type FinishErrors []error

// Record wraps a Finish step so its error is kept for ExitCode.
func (f *FinishErrors) Record(what string, step env.Func) env.Func {
	return func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		next, err := step(ctx, cfg)
		if err != nil {
			*f = append(*f, fmt.Errorf("%s: %w", what, err))
		}
		if next == nil {
			// env.Run hands this context to the next step.
			next = ctx
		}
		return next, err
	}
}

// ExitCode is the tests' exit code, or 1 if a Finish step failed; the
// errors go to w.
func (f FinishErrors) ExitCode(tests int, w io.Writer) int {
	if len(f) == 0 {
		return tests
	}
	fmt.Fprintf(w, "FAIL: teardown: %v\n", errors.Join(f...))
	if tests != 0 {
		return tests
	}
	return 1
}
