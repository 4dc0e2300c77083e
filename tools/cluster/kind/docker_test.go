package kind

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerAvailable puts a fake docker CLI first on PATH: only an engine
// that answers in time counts, a CLI alone does not.
func TestDockerAvailable(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   bool
	}{
		{"engine answers", "#!/bin/sh\necho 27.0.1\n", true},
		{"no engine behind the CLI", "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n", false},
		{"engine hangs", "#!/bin/sh\nexec sleep 30\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(tt.script), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			if got := DockerAvailable(ctx); got != tt.want {
				t.Errorf("DockerAvailable() = %v, want %v", got, tt.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s: the context deadline was not honoured", d)
			}
		})
	}
	t.Run("no docker CLI", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if DockerAvailable(context.Background()) {
			t.Error("DockerAvailable() = true without a docker CLI")
		}
	})
}

// TestImageAvailableSaysWhatToDo: a node image that cannot be pulled is an
// error naming the image and docker's reason, which create wraps with the
// way to the local node.
func TestImageAvailableSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$1\" in image) exit 1;; pull) echo 'Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: i/o timeout' >&2; exit 1;; esac\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(PullEnv, "1")
	err := ImageAvailable(context.Background(), "kindest/node:v1.34.11")
	if err == nil || !strings.Contains(err.Error(), "kindest/node:v1.34.11") || !strings.Contains(err.Error(), "i/o timeout") {
		t.Errorf("ImageAvailable = %v; want an error naming the image and the pull's failure", err)
	}
	c := NewCluster("gmini-test")
	c.image = "kindest/node:v1.34.11"
	_, err = c.Create(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CLUSTER=local") {
		t.Errorf("Create without the node image = %v; want an error that says how to use the local node", err)
	}
}

// TestImageAvailableDoesNotPullUnlessAllowed: without GMINI_KIND_PULL a
// missing node image is an error at once, and docker is never asked to
// pull (a pull is traffic to the internet).
func TestImageAvailableDoesNotPullUnlessAllowed(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(PullEnv, "")
	t.Setenv("GITHUB_ACTIONS", "")
	err := ImageAvailable(context.Background(), "kindest/node:v1.34.11")
	if err == nil || !strings.Contains(err.Error(), PullEnv+"=1") {
		t.Errorf("ImageAvailable = %v; want an error saying how to allow the pull", err)
	}
	if log, _ := os.ReadFile(calls); strings.Contains(string(log), "pull") {
		t.Errorf("docker was asked to pull:\n%s", log)
	}
}

// TestDestroyWithoutEngine: make down where no Docker engine answers is
// not an error, and does not try to list nodes.
func TestDestroyWithoutEngine(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	c := NewCluster("gmini-kind-test")
	if err := c.Destroy(context.Background()); err != nil {
		t.Errorf("Destroy without an engine = %v", err)
	}
	if err := c.ExportLogs(context.Background(), t.TempDir()); err != nil {
		t.Errorf("ExportLogs without an engine = %v", err)
	}
}
