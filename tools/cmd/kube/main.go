// Command kube builds the local node's multi-call Kubernetes binary into
// _output/bin/kube, with progress output.
//
//	go run ./cmd/kube [-out PATH]
//
// The tests and `gmini-dev up` build it themselves when they need it; `make
// test` runs this first so that a cold build (minutes) is its own step with
// its own progress, not part of a test binary's -timeout.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gmini-dev/gmini/tools/internal/kubebuild"
	"github.com/gmini-dev/gmini/tools/manifests"
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
	root, err := manifests.RepoRoot(".")
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(root, "_output", "bin", "kube")
	}
	return kubebuild.Build(ctx, log, root, *out)
}
