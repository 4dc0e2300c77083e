// Command kube-router builds kube-router, the local node's NetworkPolicy
// engine, into _output/bin/kube-router, with progress output.
//
//	go run ./cmd/kube-router [-out PATH]
//
// cluster.Prepare builds it too when a suite asks for a cluster that
// enforces NetworkPolicy (the e2e suite); `make test` runs this first so
// that a cold build (minutes) is its own step, not part of a test binary's
// -timeout.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gmini-dev/gmini/tools/internal/kubebuild"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("build kube-router", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("kube-router", flag.ContinueOnError)
	out := fs.String("out", "", "output path (default: REPO/_output/bin/kube-router)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = l.KubeRouterBinary()
	}
	return kubebuild.BuildKubeRouter(ctx, log, l.KubeRouterModule(), *out)
}
