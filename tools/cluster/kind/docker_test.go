package kind

import (
	"context"
	"os"
	"path/filepath"
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
