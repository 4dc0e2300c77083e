package modbuild

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

func TestKubeLDFlags(t *testing.T) {
	got := KubeLDFlags()
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=34",
		"-X k8s.io/client-go/pkg/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/client-go/pkg/version.gitMajor=1",
		"-X k8s.io/client-go/pkg/version.gitMinor=34",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("KubeLDFlags() = %q, missing %q", got, want)
		}
	}
}

// The flags must not change from build to build: a changing -X (a build
// time) would relink an 80 MB binary on every run.
func TestArgs(t *testing.T) {
	base := []string{"build", "-v", "-trimpath", "-buildvcs=false"}
	tests := []struct {
		name string
		p    Program
		out  string
		want []string
	}{
		{"kube", Kube("/m"), "/out/kube", append(slices.Clone(base), "-ldflags=-s -w "+KubeLDFlags(), "-o", "/out/kube", ".")},
		{"kube-router", KubeRouter("/m"), "/out/kube-router", append(slices.Clone(base),
			"-ldflags=-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version="+KubeRouterVersion+
				" -X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate="+kubeRouterReleased,
			"-o", "/out/kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router")},
		{"registry", Registry("/m"), "/out/registry", append(slices.Clone(base), "-ldflags=-s -w", "-o", "/out/registry", ".")},
		{"flux", Flux("/m"), "/out/", append(slices.Clone(base), "-ldflags=-s -w", "-mod=mod", "-o", "/out/",
			"github.com/fluxcd/source-controller", "github.com/fluxcd/kustomize-controller")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Args(tt.p, tt.out); !slices.Equal(got, tt.want) {
				t.Errorf("Args =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestBinaries(t *testing.T) {
	tests := []struct {
		p    Program
		want []string
	}{
		{Kube("/repo/tools/kube"), []string{"/bin/kube"}},
		{KubeRouter("/repo/tools/kuberouter"), []string{"/bin/kube-router"}},
		{Registry("/repo/tools/registry"), []string{"/bin/registry"}},
		{Flux("/repo/tools/flux"), []string{"/bin/source-controller", "/bin/kustomize-controller"}},
	}
	for _, tt := range tests {
		if got := tt.p.Binaries("/bin"); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Binaries = %q, want %q", tt.p.Name, got, tt.want)
		}
	}
}

// Each module requires the version this package names.
func TestModulesRequireTheVersions(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	tools := filepath.Join(filepath.Dir(file), "..", "..")
	tests := []struct {
		module string
		want   []string
	}{
		{"kube", []string{"\n\tk8s.io/kubernetes " + KubernetesVersion + "\n"}},
		{"kuberouter", []string{
			"\ntool github.com/cloudnativelabs/kube-router/v2/cmd/kube-router\n",
			"\nrequire github.com/cloudnativelabs/kube-router/v2 " + KubeRouterVersion + "\n",
		}},
		{"registry", []string{"github.com/distribution/distribution/v3 " + RegistryVersion + "\n"}},
		{"flux", []string{"github.com/fluxcd/source-controller " + FluxVersion + "\n", "github.com/fluxcd/kustomize-controller " + FluxVersion + "\n"}},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(tools, tt.module, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tt.want {
			if !strings.Contains(string(b), want) {
				t.Errorf("tools/%s/go.mod lacks %q", tt.module, strings.TrimSpace(want))
			}
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

func TestOutput(t *testing.T) {
	in := strings.Join([]string{
		"k8s.io/apimachinery/pkg/runtime",
		"github.com/gmini-dev/gmini/tools/kube",
		"# github.com/gmini-dev/gmini/tools/kube",
		"./main.go:12:2: undefined: foo",
	}, "\n")
	var o output
	o.consume(strings.NewReader(in))
	if got := o.compiled(); got != 2 {
		t.Errorf("compiled() = %d, want 2", got)
	}
	if !strings.Contains(o.tail(), "undefined: foo") {
		t.Errorf("tail() lost the compiler message: %q", o.tail())
	}

	var long output
	long.consume(strings.NewReader(strings.Repeat("pkg/x\n", keepLines*3)))
	if got := len(strings.Split(long.tail(), "\n")); got != keepLines {
		t.Errorf("tail() kept %d lines, want %d", got, keepLines)
	}
}

// TestBuildKube compiles the real Kubernetes binary: minutes from a cold Go
// build cache, seconds from a warm one.
func TestBuildKube(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: compiles Kubernetes")
	}
	_, file, _, _ := runtime.Caller(0)
	moduleDir := filepath.Join(filepath.Dir(file), "..", "..", "kube")
	dir := t.TempDir()
	out := filepath.Join(dir, "kube")
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
	if err := Build(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)), Kube(moduleDir), dir); err != nil {
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
