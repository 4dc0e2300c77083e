// Package layout knows where things are in a gmini checkout: the repository
// root, the sources the tools build, and the build output under _output. It
// is the one place that spells these paths; everything else asks it.
package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Layout is one checkout of the repository.
type Layout struct {
	// Root is the absolute path of the repository root (the directory
	// holding go.work).
	Root string
}

// Find returns the layout of the checkout holding start: the nearest
// directory at or above start that has a go.work file.
func Find(start string) (Layout, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return Layout{}, fmt.Errorf("find repository root from %s: %w", start, err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.work"))
		if err == nil {
			return Layout{Root: dir}, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return Layout{}, fmt.Errorf("find repository root from %s: %w", start, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return Layout{}, fmt.Errorf("find repository root from %s: no go.work in any parent directory", start)
		}
		dir = parent
	}
}

// FromWorkingDir is Find from the working directory, which is what every
// command and test of the tools module starts from.
func FromWorkingDir() (Layout, error) { return Find(".") }

// Path joins elem to the repository root.
func (l Layout) Path(elem ...string) string {
	return filepath.Join(append([]string{l.Root}, elem...)...)
}

// Output joins elem to the build output directory, _output.
func (l Layout) Output(elem ...string) string {
	return l.Path(append([]string{"_output"}, elem...)...)
}

// Bin is where a built program named name goes.
func (l Layout) Bin(name string) string { return l.Output("bin", name) }

// KubeBinary is the local node's multi-call Kubernetes binary.
func (l Layout) KubeBinary() string { return l.Bin("kube") }

// Images is the directory of the image archives.
func (l Layout) Images() string { return l.Output("images") }

// ClusterDir is a local cluster's run directory (state, PKI, data, logs).
func (l Layout) ClusterDir(name string) string { return l.Output("cluster", name) }

// Logs is where a suite keeps the logs of its clusters and processes.
func (l Layout) Logs(suite string) string { return l.Output("logs", suite) }

// Overlay is the kustomization of an environment, e.g. "dev".
func (l Layout) Overlay(env string) string { return l.Path("overlays", env) }

// Backend is the backend's module directory.
func (l Layout) Backend() string { return l.Path("apps", "backend") }

// Runner is the runner's module directory.
func (l Layout) Runner() string { return l.Path("apps", "runner") }

// Tools is the tools module's directory.
func (l Layout) Tools() string { return l.Path("tools") }

// KubeModule is the module that builds the Kubernetes binary, kept out of
// go.work.
func (l Layout) KubeModule() string { return l.Path("tools", "kube") }

// KubeRouterBinary is kube-router, the local node's NetworkPolicy engine.
func (l Layout) KubeRouterBinary() string { return l.Bin("kube-router") }

// KubeRouterModule is the module that builds kube-router, kept out of
// go.work.
func (l Layout) KubeRouterModule() string { return l.Path("tools", "kuberouter") }

// RegistryModule is the module that builds CNCF Distribution's registry,
// the local node's image registry, kept out of go.work.
func (l Layout) RegistryModule() string { return l.Path("tools", "registry") }

// FluxModule is the module that builds Flux's source-controller and
// kustomize-controller, kept out of go.work.
func (l Layout) FluxModule() string { return l.Path("tools", "flux") }

// KueueModule is the module that builds Kueue's controller manager and
// holds its manifests, kept out of go.work.
func (l Layout) KueueModule() string { return l.Path("tools", "kueue") }
