package images

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gmini-dev/gmini/tools/internal/layout"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	return l.Root
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestBuildPause builds the real pause image and reads the archive back the
// way a loader does: by tag, then config, then layer contents.
func TestBuildPause(t *testing.T) {
	spec := Pause(repoRoot(t), "test")
	tarPath, err := Build(context.Background(), quiet(), spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(spec.Tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("archive has no image tagged %s: %v", spec.Tag, err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532", cfg.Config.User)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/pause"}) {
		t.Errorf("Entrypoint = %q, want [/pause]", cfg.Config.Entrypoint)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if cfg.Config.WorkingDir != "/" {
		t.Errorf("WorkingDir = %q, want /", cfg.Config.WorkingDir)
	}
	if len(cfg.Config.Env) != 1 || len(cfg.Config.Env[0]) < 5 || cfg.Config.Env[0][:5] != "PATH=" {
		t.Errorf("Env = %q, want only PATH", cfg.Config.Env)
	}
	if got := cfg.Config.Labels["org.opencontainers.image.source"]; got != Source {
		t.Errorf("source label = %q, want %q", got, Source)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if len(cfg.RootFS.DiffIDs) != 1 {
		t.Errorf("config rootfs lists %d layers, want 1", len(cfg.RootFS.DiffIDs))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, hdr.Name)
		if hdr.Name == "pause" {
			if hdr.Mode&0o111 != 0o111 || hdr.Uid != 0 {
				t.Errorf("/pause mode %o uid %d, want executable by all, owned by root", hdr.Mode, hdr.Uid)
			}
			if hdr.Size < 100_000 {
				t.Errorf("/pause is %d bytes, too small for a Go binary", hdr.Size)
			}
			head := make([]byte, 4)
			if _, err := io.ReadFull(tr, head); err != nil || string(head) != "\x7fELF" {
				t.Errorf("/pause is not an ELF binary (%q, %v)", head, err)
			}
		}
	}
	if !slices.Equal(files, []string{"pause"}) {
		t.Errorf("layer holds %q, want only pause", files)
	}
}

// TestBuildReproducible checks that the fixed timestamps make a rebuild of
// the same binary give the same digest.
func TestBuildReproducible(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Name: "x", Tag: "x:dev", ModuleDir: ".", Package: "."}
	var digests []string
	for range 2 {
		img, err := Image(spec, bin)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ: %v", digests)
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"complete", Spec{Name: "runner", Tag: "gmini-runner:dev", ModuleDir: "/x"}, true},
		{"no name", Spec{Tag: "a:b", ModuleDir: "/x"}, false},
		{"path as name", Spec{Name: "bin/runner", Tag: "a:b", ModuleDir: "/x"}, false},
		{"dot dot", Spec{Name: "..", Tag: "a:b", ModuleDir: "/x"}, false},
		{"no tag: a pushed index needs none", Spec{Name: "runner", ModuleDir: "/x"}, true},
		{"prebuilt binary", Spec{Name: "source-controller", Binary: "/x/source-controller"}, true},
		{"no module", Spec{Name: "runner", Tag: "a:b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.spec.validate(); (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestBuildArchiveNeedsTag(t *testing.T) {
	_, err := Build(context.Background(), quiet(), Spec{Name: "runner", ModuleDir: t.TempDir()}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "needs a tag") {
		t.Fatalf("Build without a tag = %v, want an error saying it needs one", err)
	}
}

func TestBuildReportsCompileError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/broken\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	_, err := Build(context.Background(), quiet(), Spec{Name: "broken", Tag: "broken:dev", ModuleDir: dir, Package: "."}, out)
	if err == nil {
		t.Fatal("Build succeeded on a package that does not compile")
	}
	if _, statErr := os.Stat(filepath.Join(out, "broken.tar")); statErr == nil {
		t.Error("an archive was written despite the failure")
	}
}
