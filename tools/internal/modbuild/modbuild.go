// Package modbuild compiles the third-party programs the local node and the
// GitOps loop run, each from a module kept out of go.work: the multi-call
// Kubernetes and etcd binary (tools/kube), kube-router, the NetworkPolicy
// engine (tools/kuberouter), CNCF Distribution's registry (tools/registry) and
// Flux's source-controller and kustomize-controller (tools/flux) and
// Kueue's controller manager (tools/kueue).
//
// Each module pins its own dependency set (tools/kube the v0.34 staging
// modules Kubernetes v1.34.4 needs, while the workspace uses newer client
// libraries), so builds run with GOWORK=off
// and fixed flags: the Go build cache then serves every later build (a cold
// build takes many CPU-minutes, an up-to-date one seconds), and go build
// writes straight into the output, skipping the link when the binary is
// already up to date.
package modbuild

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Program is one build: main packages of a module, into a directory.
type Program struct {
	Name    string // for progress lines and errors
	Version string // what the module pins, for progress lines
	// Module is the module's directory (tools/registry, tools/flux).
	Module string
	// Packages are the main packages, relative to Module or import paths.
	Packages []string
	// ModMod builds with -mod=mod: for a module whose go.mod lists only
	// its direct requirements (tools/flux), go.sum pinning the rest.
	ModMod bool
	// LDFlags are added to the linker's: version stamps. They must not
	// change from build to build (no build time), or every build relinks.
	LDFlags string
}

// The programs' versions.
const (
	// KubernetesVersion must match the k8s.io/kubernetes requirement of
	// tools/kube/go.mod.
	KubernetesVersion = "v1.34.4"
	KubeRouterVersion = "v2.1.0"  // as tools/kuberouter/go.mod requires
	RegistryVersion   = "v3.1.2"  // github.com/distribution/distribution/v3, as tools/registry/go.mod requires
	FluxVersion       = "v1.9.6"  // source-controller and kustomize-controller, as tools/flux/go.mod requires
	KueueVersion      = "v0.17.0" // sigs.k8s.io/kueue, as tools/kueue/go.mod requires
)

// kubeRouterReleased is when the module proxy first served
// KubeRouterVersion: the build date stamped into the binary.
const kubeRouterReleased = "2024-03-02T21:45:54Z"

// Kube is the local node's multi-call Kubernetes and etcd binary (kube).
func Kube(module string) Program {
	return Program{Name: "kube", Version: KubernetesVersion, Module: module, Packages: []string{"."}, LDFlags: KubeLDFlags()}
}

// KubeLDFlags stamps the release into both version packages: without it
// servers report v0.0.0-master+$Format:%H$, which kubectl and client-go
// fail to parse.
func KubeLDFlags() string {
	major, minor := majorMinor(KubernetesVersion)
	var b strings.Builder
	for i, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "-X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]s -X %[1]s.gitMinor=%[4]s",
			pkg, KubernetesVersion, major, minor)
	}
	return b.String()
}

func majorMinor(version string) (major, minor string) {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[1]
}

// KubeRouter is kube-router (kube-router), which tools/kuberouter requires
// as a tool.
func KubeRouter(module string) Program {
	const pkg = "github.com/cloudnativelabs/kube-router/v2"
	return Program{
		Name: "kube-router", Version: KubeRouterVersion, Module: module,
		Packages: []string{pkg + "/cmd/kube-router"},
		// Without a version it logs "Malformed version" at start.
		LDFlags: fmt.Sprintf("-X %[1]s/pkg/version.Version=%[2]s -X %[1]s/pkg/version.BuildDate=%[3]s", pkg, KubeRouterVersion, kubeRouterReleased),
	}
}

// Registry is CNCF Distribution's registry with the filesystem driver only.
func Registry(module string) Program {
	return Program{Name: "registry", Version: RegistryVersion, Module: module, Packages: []string{"."}}
}

// Flux is Flux's source-controller and kustomize-controller, built together
// so they share the compiled packages of their common dependencies.
func Flux(module string) Program {
	return Program{
		Name: "flux", Version: FluxVersion, Module: module, ModMod: true,
		Packages: []string{"github.com/fluxcd/source-controller", "github.com/fluxcd/kustomize-controller"},
	}
}

// Kueue is Kueue's controller manager (kueue), the queue tests' admission
// controller.
func Kueue(module string) Program {
	const pkg = "sigs.k8s.io/kueue"
	return Program{
		Name: "kueue", Version: KueueVersion, Module: module, ModMod: true,
		Packages: []string{pkg + "/cmd/kueue"},
		// Kueue logs and reports this version (its metrics' build_info).
		LDFlags: fmt.Sprintf("-X %s/pkg/version.GitVersion=%s", pkg, KueueVersion),
	}
}

// Binaries are the paths Build writes in outDir.
func (p Program) Binaries(outDir string) []string {
	var out []string
	for _, pkg := range p.Packages {
		base := filepath.Base(pkg)
		if pkg == "." {
			base = filepath.Base(p.Module)
		}
		out = append(out, filepath.Join(outDir, base))
	}
	return out
}

// progressEvery is how often a running build reports that it is alive.
const progressEvery = 20 * time.Second

// Build compiles p into outDir, one binary per package.
func Build(ctx context.Context, log *slog.Logger, p Program, outDir string) error {
	abs, err := filepath.Abs(outDir)
	if err != nil {
		return fmt.Errorf("build %s: %w", p.Name, err)
	}
	// go build renames the new binary over the old one, which works even
	// while a cluster runs it; the rename needs go's work directory on the
	// output's file system.
	tmp := filepath.Join(abs, ".gotmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("build %s: %w", p.Name, err)
	}
	out := abs + string(filepath.Separator)
	if len(p.Packages) == 1 {
		out = p.Binaries(abs)[0] // -o dir/ names a "." package after the directory go runs in
	}
	cmd := exec.CommandContext(ctx, "go", Args(p, out)...)
	cmd.Dir = p.Module
	cmd.Env = append(os.Environ(), append(Env(), "GOTMPDIR="+tmp)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("build %s: %w", p.Name, err)
	}
	cmd.Stdout = io.Discard

	start := time.Now()
	log.Info("building "+p.Name, "version", p.Version, "dir", p.Module, "out", abs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("build %s: start go: %w", p.Name, err)
	}
	var o output
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.consume(stderr)
	}()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			log.Info("still building "+p.Name, "packagesCompiled", o.compiled(), "elapsed", time.Since(start).Round(time.Second))
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("build %s %s (%s): %w\n%s", p.Name, p.Version, time.Since(start).Round(time.Second), err, o.tail())
	}
	log.Info("built "+p.Name, "packagesCompiled", o.compiled(), "elapsed", time.Since(start).Round(100*time.Millisecond), "binaries", p.Binaries(abs))
	return nil
}

// Args are go's arguments. -v lists each package compiled (cached ones are
// not listed): the only progress go build gives. The binaries are static,
// stripped and free of paths and VCS stamps, so they depend on the module's
// pins and the toolchain only.
func Args(p Program, out string) []string {
	ldflags := "-s -w"
	if p.LDFlags != "" {
		ldflags += " " + p.LDFlags
	}
	args := []string{"build", "-v", "-trimpath", "-buildvcs=false", "-ldflags=" + ldflags}
	if p.ModMod {
		args = append(args, "-mod=mod")
	}
	return append(append(args, "-o", out), p.Packages...)
}

// Env is added to go's environment. GOTOOLCHAIN=local: the modules name a
// go version the installed toolchain has; never download another.
func Env() []string {
	return []string{"GOWORK=off", "CGO_ENABLED=0", "GOTOOLCHAIN=local"}
}

// Module is a module the program's module requires, as `go list -m`
// reports it.
type Module struct {
	Path    string
	Version string
	Dir     string    // its source in the module cache
	Time    time.Time // when the version was published
}

// RequiredModule returns a module the program's module requires, e.g. to
// read Flux's CRDs from its source, downloading it if the module cache
// lacks it (a build needs only its packages, `go list -m` no source).
func RequiredModule(ctx context.Context, p Program, modulePath string) (Module, error) {
	dl := exec.CommandContext(ctx, "go", "mod", "download", modulePath)
	dl.Dir = p.Module
	dl.Env = append(os.Environ(), Env()...)
	if out, err := dl.CombinedOutput(); err != nil {
		return Module{}, fmt.Errorf("go mod download %s in %s: %w: %s", modulePath, p.Module, err, strings.TrimSpace(string(out)))
	}
	args := []string{"list", "-m", "-json"}
	if p.ModMod {
		args = append(args, "-mod=mod")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, modulePath)...)
	cmd.Dir = p.Module
	cmd.Env = append(os.Environ(), Env()...)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return Module{}, fmt.Errorf("go list -m %s in %s: %w: %s", modulePath, p.Module, err, strings.TrimSpace(string(exit.Stderr)))
		}
		return Module{}, fmt.Errorf("go list -m %s in %s: %w", modulePath, p.Module, err)
	}
	var m Module
	if err := json.Unmarshal(out, &m); err != nil {
		return Module{}, fmt.Errorf("go list -m %s: %w", modulePath, err)
	}
	if m.Dir == "" {
		return Module{}, fmt.Errorf("go list -m %s in %s: not downloaded", modulePath, p.Module)
	}
	return m, nil
}

// Download fetches path@version into the module cache outside any module
// (`go mod download`), for sources that are read, not built: Argo CD's
// CRDs. It returns the module's directory.
func Download(ctx context.Context, path, version string) (Module, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir = os.TempDir() // outside any module
	cmd.Env = append(os.Environ(), Env()...)
	out, err := cmd.Output()
	var m struct {
		Module
		Error string
	}
	if jerr := json.Unmarshal(out, &m); jerr == nil && m.Error != "" {
		return Module{}, fmt.Errorf("go mod download %s@%s: %s", path, version, m.Error)
	}
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return Module{}, fmt.Errorf("go mod download %s@%s: %w: %s", path, version, err, strings.TrimSpace(string(exit.Stderr)))
		}
		return Module{}, fmt.Errorf("go mod download %s@%s: %w", path, version, err)
	}
	if m.Dir == "" {
		return Module{}, fmt.Errorf("go mod download %s@%s: no directory in %s", path, version, out)
	}
	return m.Module, nil
}

// output counts the package lines of go build -v and keeps the last lines
// so that a failure shows the compiler's message.
type output struct {
	mu    sync.Mutex
	n     int
	lines []string
}

const keepLines = 40

func (o *output) consume(r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		o.mu.Lock()
		// Import paths have no spaces or colons; diagnostics do.
		if line != "" && !strings.ContainsAny(line, " :\t") {
			o.n++
		}
		o.lines = append(o.lines, line)
		if len(o.lines) > keepLines {
			o.lines = o.lines[len(o.lines)-keepLines:]
		}
		o.mu.Unlock()
	}
	if err := s.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		o.mu.Lock()
		o.lines = append(o.lines, "reading go output: "+err.Error())
		o.mu.Unlock()
	}
}

func (o *output) compiled() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}
