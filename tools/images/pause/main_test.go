//go:build unix

package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestStopsOnSignal runs the real binary: it must keep running until
// signalled and then exit 0, since the kubelet reads any other code as a
// sandbox failure.
func TestStopsOnSignal(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pause")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			stillRunning := func(after string) {
				t.Helper()
				select {
				case err := <-exited:
					t.Fatalf("exited %s: %v", after, err)
				case <-time.After(300 * time.Millisecond):
				}
			}
			stillRunning("before any signal")
			if err := cmd.Process.Signal(syscall.SIGCHLD); err != nil {
				t.Fatal(err)
			}
			stillRunning("on SIGCHLD")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("exit after %s: %v, want status 0", sig, err)
				}
			case <-ctx.Done():
				t.Fatalf("still running after %s", sig)
			}
		})
	}
}
