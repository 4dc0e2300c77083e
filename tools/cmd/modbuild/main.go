// Command modbuild builds the local node's and the GitOps loop's programs
// from their modules outside go.work into _output/bin, with progress output:
//
//	go run ./cmd/modbuild kube         # the multi-call Kubernetes binary (tools/kube)
//	go run ./cmd/modbuild kube-router  # the NetworkPolicy engine (tools/kuberouter)
//	go run ./cmd/modbuild registry     # CNCF Distribution's registry (tools/registry)
//	go run ./cmd/modbuild flux         # Flux's source-controller and kustomize-controller (tools/flux)
//	go run ./cmd/modbuild kueue        # Kueue's controller manager (tools/kueue)
//
// The suites build them too when they need them; `make test` runs this
// first, so a cold build (minutes) is its own step, not part of a test
// binary's -timeout.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("modbuild", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return fmt.Errorf("usage: modbuild kube|kube-router|registry|flux|kueue ...")
	}
	for _, a := range args {
		var p modbuild.Program
		switch a {
		case "kube":
			p = modbuild.Kube(l.KubeModule())
		case "kube-router":
			p = modbuild.KubeRouter(l.KubeRouterModule())
		case "registry":
			p = modbuild.Registry(l.RegistryModule())
		case "flux":
			p = modbuild.Flux(l.FluxModule())
		case "kueue":
			p = modbuild.Kueue(l.KueueModule())
		default:
			return fmt.Errorf("unknown program %q: want kube, kube-router, registry, flux or kueue", a)
		}
		if err := modbuild.Build(ctx, log, p, l.Output("bin")); err != nil {
			return err
		}
	}
	return nil
}
