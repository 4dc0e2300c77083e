// Command kube builds the local node's multi-call Kubernetes binary into
// _output/bin/kube, with progress output.
//
//	go run ./cmd/kube [-out PATH]
//
// cluster.Prepare builds it too when a suite or `gmini-dev up` needs it;
// `make test` runs this first so that a cold build (minutes) is its own step
// with its own progress, not part of a test binary's -timeout.
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
		log.Error("build kube", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("kube", flag.ContinueOnError)
	out := fs.String("out", "", "output path (default: REPO/_output/bin/kube)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = l.KubeBinary()
	}
	return kubebuild.Build(ctx, log, l.KubeModule(), *out)
}
