// Package kubebuild compiles the local node's programs that come from
// modules kept out of go.work: the multi-call Kubernetes binary of
// tools/kube and kube-router, the NetworkPolicy engine, of tools/kuberouter.
//
// Each module pins its own dependencies (tools/kube the v0.34 staging
// modules that Kubernetes v1.34.4 needs, tools/kuberouter kube-router's
// v0.29 set), while the workspace uses newer client libraries; so every
// build runs with GOWORK=off. A cold build takes minutes; the Go build cache
// makes later ones a relink of a few seconds, or nothing when the binary is
// up to date.
package kubebuild

import (
	"bufio"
	"context"
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

// KubernetesVersion is the release the binary is built from; it must match the
// k8s.io/kubernetes requirement in tools/kube/go.mod.
const KubernetesVersion = "v1.34.4"

// progressEvery is how often a running build reports that it is still alive.
const progressEvery = 20 * time.Second

// KubeRouterVersion is the kube-router release tools/kuberouter requires.
const KubeRouterVersion = "v2.1.0"

// kubeRouterReleased is when the module proxy first served KubeRouterVersion:
// the build date stamped into the binary. A fixed value keeps the link
// inputs the same, so an up-to-date binary is not relinked.
const kubeRouterReleased = "2024-03-02T21:45:54Z"

// program is one binary built from a module outside go.work.
type program struct {
	name    string // for log lines and errors
	version string
	pkg     string // the main package, relative to the module or an import path
	ldflags string
}

// Build compiles the module in moduleDir (tools/kube) into outPath.
func Build(ctx context.Context, log *slog.Logger, moduleDir, outPath string) error {
	return build(ctx, log, kube(), moduleDir, outPath)
}

func kube() program {
	return program{name: "kube", version: KubernetesVersion, pkg: ".", ldflags: LDFlags()}
}

// BuildKubeRouter compiles kube-router from the module in moduleDir
// (tools/kuberouter, which requires it as a tool) into outPath.
func BuildKubeRouter(ctx context.Context, log *slog.Logger, moduleDir, outPath string) error {
	return build(ctx, log, kubeRouter(), moduleDir, outPath)
}

func kubeRouter() program {
	const pkg = "github.com/cloudnativelabs/kube-router/v2"
	return program{
		name:    "kube-router",
		version: KubeRouterVersion,
		pkg:     pkg + "/cmd/kube-router",
		// Without a version it logs "Malformed version" at start.
		ldflags: fmt.Sprintf("-X %[1]s/pkg/version.Version=%[2]s -X %[1]s/pkg/version.BuildDate=%[3]s", pkg, KubeRouterVersion, kubeRouterReleased),
	}
}

func build(ctx context.Context, log *slog.Logger, prog program, moduleDir, outPath string) error {
	absOut, err := filepath.Abs(outPath)
	if err != nil {
		return fmt.Errorf("resolve output path %s: %w", outPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(absOut), 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	// Build straight into the target: go build then skips the link when
	// the binary is up to date (seconds instead of a minute's relink), and
	// otherwise renames the new binary over the old one, which works even
	// while a node runs it. The rename needs go's work directory on the
	// target's file system, hence GOTMPDIR next to it.
	tmp := filepath.Join(filepath.Dir(absOut), ".gotmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", buildArgs(prog, absOut)...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), append(BuildEnv(), "GOTMPDIR="+tmp)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("build %s: %w", prog.name, err)
	}
	cmd.Stdout = io.Discard

	start := time.Now()
	log.Info("building "+prog.name, "version", prog.version, "dir", cmd.Dir, "out", absOut)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("build %s: start go: %w", prog.name, err)
	}

	var out buildOutput
	done := make(chan struct{})
	go func() {
		defer close(done)
		out.consume(stderr)
	}()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			log.Info("still building "+prog.name, "packagesCompiled", out.compiled(),
				"elapsed", time.Since(start).Round(time.Second))
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("build %s (%s): %w\n%s", prog.name, time.Since(start).Round(time.Second), err, out.tail())
	}
	log.Info("built "+prog.name, "packagesCompiled", out.compiled(),
		"elapsed", time.Since(start).Round(100*time.Millisecond), "out", absOut)
	return nil
}

// BuildArgs returns the arguments to go that build the binary into outPath.
// -v lists each package as it is compiled (cached ones are not listed), which
// is the only progress go build gives.
func BuildArgs(outPath string) []string {
	return buildArgs(kube(), outPath)
}

func buildArgs(prog program, outPath string) []string {
	return []string{"build", "-v", "-trimpath", "-ldflags=" + prog.ldflags, "-o", outPath, prog.pkg}
}

// BuildEnv returns the variables added to the environment of go build.
// The binary is static (like the upstream release builds of the control
// plane) so it does not depend on the host's libc.
func BuildEnv() []string {
	return []string{"GOWORK=off", "CGO_ENABLED=0"}
}

// LDFlags stamps the release version into both version packages: without it
// servers report v0.0.0-master+$Format:%H$, which kubectl and client-go fail
// to parse.
func LDFlags() string {
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

// buildOutput counts the package lines of go build -v and keeps the last lines
// so that a failure can show the compiler's message.
type buildOutput struct {
	mu    sync.Mutex
	n     int
	lines []string
}

const keepLines = 40

func (o *buildOutput) consume(r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		o.mu.Lock()
		if isPackageLine(line) {
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

// isPackageLine tells an import path printed by -v from a diagnostic: import
// paths have no spaces or colons.
func isPackageLine(line string) bool {
	return line != "" && !strings.ContainsAny(line, " :\t")
}

func (o *buildOutput) compiled() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (o *buildOutput) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}
