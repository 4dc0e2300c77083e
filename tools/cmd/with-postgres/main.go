// Command with-postgres runs a command beside a throwaway PostgreSQL
// server (Debian's, installed if missing):
//
//	go run ./cmd/with-postgres [-env NAME] [-dir DIR] [-set NAME=VALUE]... -- CMD ARGS...
//
// It starts the server, runs CMD with the server's DSN in the environment
// variable NAME (GMINI_TEST_POSTGRES_DSN), then stops the server and
// removes its directory, also when CMD fails or with-postgres gets SIGINT
// or SIGTERM (passed on to CMD first), and exits with CMD's exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/postgres"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, log))
}

// run returns the exit code: CMD's, 128+signal if a signal ended it, 2 for
// bad usage, 1 if the server could not be started or stopped.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("with-postgres", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envName := fs.String("env", "GMINI_TEST_POSTGRES_DSN", "environment variable that gets the server's DSN")
	dir := fs.String("dir", "", "server directory, removed afterwards (default: a new one under $TMPDIR)")
	var opts []postgres.Option
	fs.Func("set", "a server setting, NAME=VALUE (repeatable), e.g. synchronous_commit=off", func(kv string) error {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return fmt.Errorf("want NAME=VALUE, got %q", kv)
		}
		opts = append(opts, postgres.WithSetting(name, value))
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: with-postgres [-env NAME] [-dir DIR] [-set NAME=VALUE]... -- CMD ARGS...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}

	// Signals from here on: during start-up they cancel it, afterwards
	// they go to CMD, whose end stops the server.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startedUp, watcherDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-sigs:
			cancel()
		case <-startedUp:
		}
	}()

	if *dir == "" {
		parent, err := os.MkdirTemp("", "gmini-postgres-")
		if err != nil {
			log.Error("with-postgres", "err", err)
			return 1
		}
		defer os.Remove(parent)
		*dir = parent + "/srv"
		// The server's own user must be able to enter it.
		if err := os.Chmod(parent, 0o755); err != nil {
			log.Error("with-postgres", "err", err)
			return 1
		}
	}
	srv, err := postgres.Start(ctx, *dir, append(opts, postgres.WithLogger(log))...)
	if err != nil {
		log.Error("start postgres", "err", err)
		return 1
	}
	stop := func() int {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		if err := srv.Stop(sctx); err != nil {
			log.Error("stop postgres", "err", err)
			return 1
		}
		return 0
	}
	// Once the watcher is gone, either it took a signal (ctx is done) or
	// the loop below gets every signal.
	close(startedUp)
	<-watcherDone
	if ctx.Err() != nil {
		stop()
		return 130
	}

	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Env = append(os.Environ(), *envName+"="+srv.DSN())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// Killed outright, with-postgres cannot stop anything: the server dies
	// with it (postgres.Start sees to that), and CMD, left without its
	// database, is told to end too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		log.Error("start command", "cmd", fs.Arg(0), "err", err)
		stop()
		return 127
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	for waiting := true; waiting; {
		select {
		case sig := <-sigs:
			log.Info("passing the signal on to the command", "signal", sig)
			_ = cmd.Process.Signal(sig)
		case waitErr = <-done:
			waiting = false
		}
	}
	code := exitCode(cmd.ProcessState, waitErr)
	if stop() != 0 && code == 0 {
		return 1
	}
	return code
}

// exitCode is the shell's convention: the code, or 128+signal.
func exitCode(st *os.ProcessState, err error) int {
	if st == nil {
		return 1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return 1
	}
	return st.ExitCode()
}
