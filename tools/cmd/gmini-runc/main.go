// Command gmini-runc is runc for machines whose capability bounding set
// lacks capabilities Docker or containerd grant (privileged containers):
// it removes those from the container's spec (create, run) or process file
// (exec), then runs runc with the same arguments. Registered as dockerd's
// default runtime by tools/dockerd, and as the kind node's runc binary.
// The runc it runs is GMINI_RUNC, else runc on PATH.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/gmini-dev/gmini/tools/internal/capdrop"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		// runc's callers read its stderr.
		fmt.Fprintln(os.Stderr, "gmini-runc:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	runc := os.Getenv("GMINI_RUNC")
	if runc == "" {
		var err error
		if runc, err = exec.LookPath("runc"); err != nil {
			return err
		}
	}
	mask, err := capdrop.Bounding()
	if err != nil {
		return err
	}
	if drop := capdrop.Missing(mask); len(drop) > 0 {
		cwd, _ := os.Getwd()
		configs, processes := capdrop.Targets(args, cwd)
		for _, f := range configs {
			if _, err := capdrop.File(f, true, drop); err != nil {
				return fmt.Errorf("fit %s to the bounding set: %w", f, err)
			}
		}
		for _, f := range processes {
			if _, err := capdrop.File(f, false, drop); err != nil {
				return fmt.Errorf("fit %s to the bounding set: %w", f, err)
			}
		}
	}
	return syscall.Exec(runc, append([]string{runc}, args...), os.Environ())
}
