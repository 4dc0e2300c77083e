package kubebuild

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLDFlags(t *testing.T) {
	got := LDFlags()
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=34",
		"-X k8s.io/client-go/pkg/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/client-go/pkg/version.gitMajor=1",
		"-X k8s.io/client-go/pkg/version.gitMinor=34",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("LDFlags() = %q, missing %q", got, want)
		}
	}
}

// The version stamp must be fixed: a changing -X (a build time) would
// relink the 80 MB binary on every run.
func TestKubeRouterBuildArgs(t *testing.T) {
	got := buildArgs(kubeRouter(), "/out/kube-router")
	want := []string{"build", "-v", "-trimpath",
		"-ldflags=-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=" + KubeRouterVersion +
			" -X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=" + kubeRouterReleased,
		"-o", "/out/kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"}
	if !slices.Equal(got, want) {
		t.Errorf("buildArgs(kubeRouter()) =\n%q\nwant\n%q", got, want)
	}
	if got, want := BuildArgs("/out/kube"), []string{"build", "-v", "-trimpath", "-ldflags=" + LDFlags(), "-o", "/out/kube", "."}; !slices.Equal(got, want) {
		t.Errorf("BuildArgs = %q, want %q", got, want)
	}
}

// tools/kuberouter requires the version this package stamps, as a tool.
func TestKubeRouterModule(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "kuberouter", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\ntool github.com/cloudnativelabs/kube-router/v2/cmd/kube-router\n",
		"\nrequire github.com/cloudnativelabs/kube-router/v2 " + KubeRouterVersion + "\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("tools/kuberouter/go.mod lacks %q", strings.TrimSpace(want))
		}
	}
}

func TestMajorMinor(t *testing.T) {
	tests := []struct{ in, major, minor string }{
		{"v1.34.4", "1", "34"},
		{"1.37.2", "1", "37"},
		{"v1.35.0-rc.1", "1", "35"},
		{"v1", "", ""},
	}
	for _, tt := range tests {
		major, minor := majorMinor(tt.in)
		if major != tt.major || minor != tt.minor {
			t.Errorf("majorMinor(%q) = %q, %q; want %q, %q", tt.in, major, minor, tt.major, tt.minor)
		}
	}
}

func TestBuildOutput(t *testing.T) {
	in := strings.Join([]string{
		"k8s.io/apimachinery/pkg/runtime",
		"github.com/gmini-dev/gmini/tools/kube",
		"# github.com/gmini-dev/gmini/tools/kube",
		"./main.go:12:2: undefined: foo",
	}, "\n")
	var o buildOutput
	o.consume(strings.NewReader(in))
	if got := o.compiled(); got != 2 {
		t.Errorf("compiled() = %d, want 2", got)
	}
	if !strings.Contains(o.tail(), "undefined: foo") {
		t.Errorf("tail() lost the compiler message: %q", o.tail())
	}

	var long buildOutput
	long.consume(strings.NewReader(strings.Repeat("pkg/x\n", keepLines*3)))
	if got := len(strings.Split(long.tail(), "\n")); got != keepLines {
		t.Errorf("tail() kept %d lines, want %d", got, keepLines)
	}
}

// TestBuild compiles the real binary: minutes from a cold Go build cache,
// seconds from a warm one.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: compiles Kubernetes")
	}
	_, file, _, _ := runtime.Caller(0)
	moduleDir := filepath.Join(filepath.Dir(file), "..", "..", "kube")
	out := filepath.Join(t.TempDir(), "kube")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// A rebuild must replace the binary even while it runs, as the local node
	// may still be executing the old one: put a running sleep in its place.
	sleep, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep to stand in for a running binary")
	}
	if err := os.WriteFile(out, sleep, 0o755); err != nil {
		t.Fatal(err)
	}
	running := exec.CommandContext(ctx, out, "60")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = running.Process.Kill(); _ = running.Wait() }()
	if err := Build(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)), moduleDir, out); err != nil {
		t.Fatalf("build over a running binary: %v", err)
	}
	got, err := exec.CommandContext(ctx, out, "kubelet", "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("kube kubelet --version: %v\n%s", err, got)
	}
	if want := "Kubernetes " + KubernetesVersion; strings.TrimSpace(string(got)) != want {
		t.Errorf("kube kubelet --version = %q, want %q", got, want)
	}
}
