// Command kind-node-image assembles the offline kind node image
// (tools/kindnode) and loads it into the Docker engine, starting the
// project's own engine (tools/dockerd) when none answers.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gmini-dev/gmini/tools/dockerd"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/kindnode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l, err := layout.FromWorkingDir()
	if err == nil {
		err = dockerd.New(l, log).Start(ctx)
	}
	if err == nil {
		var tag string
		tag, err = kindnode.Build(ctx, log, l)
		if err == nil {
			log.Info("kind node image ready", "image", tag)
		}
	}
	if err != nil {
		log.Error("kind-node-image", "err", err)
		os.Exit(1)
	}
}
