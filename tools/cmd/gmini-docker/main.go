// Command gmini-docker runs the project's own Docker engine (tools/dockerd)
// for kind on machines that have none:
//
//	gmini-docker start   install Debian's docker.io if missing, start dockerd
//	                     (nothing when an engine answers already)
//	gmini-docker stop    stop it and remove everything it left behind
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gmini-dev/gmini/tools/dockerd"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("gmini-docker", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: gmini-docker start|stop")
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	e := dockerd.New(l, log)
	switch args[0] {
	case "start":
		return e.Start(ctx)
	case "stop":
		return e.Stop(ctx)
	}
	return fmt.Errorf("unknown command %q: want start or stop", args[0])
}
