package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"only the separator", []string{"--"}},
		{"unknown flag", []string{"-x", "--", "true"}},
		{"a setting without a value", []string{"-set", "fsync", "--", "true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, nil, io.Discard, &stderr, slog.New(slog.DiscardHandler)); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), "usage") {
				t.Errorf("no usage message: %q", stderr.String())
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
	}
	for _, tt := range tests {
		cmd := exec.Command("sh", "-c", tt.script)
		err := cmd.Run()
		if got := exitCode(cmd.ProcessState, err); got != tt.want {
			t.Errorf("%q: exitCode = %d, want %d", tt.script, got, tt.want)
		}
	}
}

// TestRun starts a real server with a setting for a command that checks it
// and fails on purpose: its exit code comes back and nothing is left
// behind.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	dir := serverDir(t)
	script := `test "$(/usr/lib/postgresql/15/bin/psql "$GMINI_TEST_POSTGRES_DSN" -XAtc 'SHOW synchronous_commit')" = off && exit 7`
	var out bytes.Buffer
	code := run([]string{"-dir", dir, "-set", "synchronous_commit=off", "--", "sh", "-c", script}, nil, &out, &out, slog.New(slog.DiscardHandler))
	if code != 7 {
		t.Errorf("exit code %d, want the command's 7; output:\n%s", code, out.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory left behind: %v", err)
	}
}

// TestSignal sends SIGTERM to with-postgres while its command runs: the
// command gets it, and the server is stopped.
func TestSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	dir := serverDir(t)
	mark := filepath.Join(t.TempDir(), "running")
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"-dir", dir, "--", "sh", "-c", "touch " + mark + "; exec sleep 60"}, nil, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// run has registered for SIGTERM, so it reaches run, not the default
	// handler that would end this test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 128+int(syscall.SIGTERM) {
			t.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
		}
	case <-time.After(time.Minute):
		t.Fatal("with-postgres did not end after SIGTERM")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory left behind: %v", err)
	}
}

// serverDir is a path under /tmp that the server's user can reach.
func serverDir(t *testing.T) string {
	parent, err := os.MkdirTemp("", "gmini-with-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, "srv")
}
