// Command images builds the project's images as docker-archive tarballs
// without Docker: backend, runner and the pod sandbox (pause) image.
//
//	go run ./cmd/images [-repo ..] [-out ../_output/images] [-tag dev] [backend runner pause]
//
// Load them with `ctr -n k8s.io images import FILE` or `kind load image-archive FILE`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("build images", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	repo := fs.String("repo", "", "repository root (default: the directory holding go.work, found from the working directory)")
	out := fs.String("out", "", "output directory (default: REPO/_output/images)")
	tag := fs.String("tag", "dev", "image tag; never latest, so the kubelet does not try to pull")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tag == "latest" {
		return errors.New("tag latest would make the kubelet pull the image")
	}
	l := layout.Layout{Root: *repo}
	if *repo == "" {
		var err error
		if l, err = layout.FromWorkingDir(); err != nil {
			return fmt.Errorf("%w; pass -repo", err)
		}
	}
	if *out == "" {
		*out = l.Images()
	}

	specs := images.Project(l.Root, *tag)
	if want := fs.Args(); len(want) > 0 {
		var picked []images.Spec
		for _, name := range want {
			i := slices.IndexFunc(specs, func(s images.Spec) bool { return s.Name == name })
			if i < 0 {
				return fmt.Errorf("unknown image %q", name)
			}
			picked = append(picked, specs[i])
		}
		specs = picked
	}
	for _, s := range specs {
		path, err := images.Build(ctx, log, s, *out)
		if err != nil {
			return err
		}
		fmt.Println(path)
	}
	return nil
}
