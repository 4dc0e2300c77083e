// Package kind is an e2e-framework cluster provider that runs a kind cluster
// through kind's Go API rather than the kind CLI, so no kind binary has to be
// found or installed. It needs a Docker engine; DockerAvailable tells whether
// one answers, to choose between this provider and the local node.
package kind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/e2e-framework/klient"
	"sigs.k8s.io/e2e-framework/klient/conf"
	"sigs.k8s.io/e2e-framework/klient/k8s"
	"sigs.k8s.io/e2e-framework/klient/k8s/resources"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/klient/wait/conditions"
	"sigs.k8s.io/e2e-framework/support"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
)

var _ support.E2EClusterProviderWithImageLoader = (*Cluster)(nil)

// defaultReadyTimeout bounds the wait for the control-plane node when the
// context has no deadline.
const defaultReadyTimeout = 5 * time.Minute

// Cluster is one kind cluster. Its kubeconfig lives in a private temporary
// file, never in the user's ~/.kube/config.
type Cluster struct {
	name  string
	image string
	// imageErr is a version WithVersion could not map to an image; Create
	// reports it.
	imageErr error
	// failureLogs receives the nodes' logs when Create fails.
	failureLogs string
	// registry runs a registry container for the cluster (WithRegistry),
	// from registryImage if set.
	registry      bool
	registryImage string
	log           *slog.Logger
	kind          *cluster.Provider
	kubeDir       string // holds the kubeconfig file
	rc            *rest.Config
}

// NewCluster returns a provider for the kind cluster called name.
func NewCluster(name string) *Cluster {
	c := &Cluster{name: name}
	c.SetDefaults()
	return c
}

// NewProvider returns a provider to be named with WithName, as
// envfuncs.CreateClusterWithOpts does.
func NewProvider() support.E2EClusterProvider {
	return NewCluster("")
}

// WithImage sets the node image, e.g. kindest/node:v1.34.0.
func WithImage(image string) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.image = image
		}
	}
}

// WithFailureLogs sets where Create exports the nodes' logs when creation
// fails, before it deletes the half-made cluster. Default: a new directory
// under the system's temporary directory.
func WithFailureLogs(dir string) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.failureLogs = dir
		}
	}
}

// WithLogger makes kind and the provider log through log.
func WithLogger(log *slog.Logger) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok && log != nil {
			c.log = log
			c.kind = nil // rebuilt with the new logger
		}
	}
}

// SetDefaults fills in the cluster name and logger when unset.
func (c *Cluster) SetDefaults() support.E2EClusterProvider {
	if c.name == "" {
		c.name = cluster.DefaultName
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// WithName sets the cluster name.
func (c *Cluster) WithName(name string) support.E2EClusterProvider {
	c.name = name
	return c
}

// WithVersion selects the pinned node image of a Kubernetes version's minor
// (see NodeImage) unless an image was set with WithImage. A version without
// a pinned image makes Create fail.
func (c *Cluster) WithVersion(version string) support.E2EClusterProvider {
	if c.image == "" {
		c.image, c.imageErr = NodeImage(version)
	}
	return c
}

// WithPath has nothing to point at: the provider links kind in as a library.
func (c *Cluster) WithPath(string) support.E2EClusterProvider { return c }

// WithOpts applies opts.
func (c *Cluster) WithOpts(opts ...support.ClusterOpts) support.E2EClusterProvider {
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *Cluster) provider() *cluster.Provider {
	if c.kind == nil {
		c.kind = cluster.NewProvider(cluster.ProviderWithLogger(slogAdapter{c.log}), cluster.ProviderWithDocker())
	}
	return c.kind
}

// Create creates the cluster from Config, or reuses a running cluster of the
// same name, and returns the path of its kubeconfig. kind's API cannot be
// cancelled: the context only bounds the wait for the control-plane node.
func (c *Cluster) Create(ctx context.Context, args ...string) (string, error) {
	if len(args) > 0 {
		return "", fmt.Errorf("create kind cluster %s: arguments %q not supported (use WithOpts or CreateWithConfig)", c.name, args)
	}
	cfg := Config(c.name, c.image)
	if c.registry {
		cfg = withRegistryPatch(cfg)
	}
	return c.create(ctx, cluster.CreateWithV1Alpha4Config(cfg))
}

// CreateWithConfig creates the cluster from a kind configuration file; an
// image set with WithImage or WithVersion overrides the file's node images.
func (c *Cluster) CreateWithConfig(ctx context.Context, configFile string) (string, error) {
	if configFile == "" {
		return c.Create(ctx)
	}
	opts := []cluster.CreateOption{cluster.CreateWithConfigFile(configFile)}
	if c.image != "" {
		opts = append(opts, cluster.CreateWithNodeImage(c.image))
	}
	return c.create(ctx, opts...)
}

func (c *Cluster) create(ctx context.Context, opts ...cluster.CreateOption) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("create kind cluster %s: %w", c.name, err)
	}
	if c.imageErr != nil {
		return "", fmt.Errorf("create kind cluster %s: %w", c.name, c.imageErr)
	}
	if c.image != "" {
		if err := ImageAvailable(ctx, c.image); err != nil {
			return "", fmt.Errorf("create kind cluster %s: %w; %s", c.name, err, LocalNodeHint)
		}
	}
	p := c.provider()
	existing, err := p.List()
	if err != nil {
		return "", fmt.Errorf("list kind clusters: %w", err)
	}
	if c.registry {
		if err := c.startRegistry(ctx); err != nil {
			return "", fmt.Errorf("create kind cluster %s: %w", c.name, err)
		}
	}
	if slices.Contains(existing, c.name) {
		c.log.Info("reusing kind cluster", "name", c.name)
		path, err := c.GenerateKubeconfig()
		if err == nil && c.registry {
			err = c.connectRegistry(ctx)
		}
		return path, err
	}

	path, err := c.kubeconfigPath()
	if err != nil {
		return "", err
	}
	ready := defaultReadyTimeout
	if deadline, ok := ctx.Deadline(); ok {
		ready = time.Until(deadline)
	}
	// Retained on failure: without it kind deletes the nodes before
	// anyone could read why they did not come up.
	opts = append(opts,
		cluster.CreateWithKubeconfigPath(path),
		cluster.CreateWithWaitForReady(ready),
		cluster.CreateWithRetain(true),
		cluster.CreateWithDisplayUsage(false),
		cluster.CreateWithDisplaySalutation(false),
	)
	c.log.Info("creating kind cluster", "name", c.name, "image", c.image)
	start := time.Now()
	if err := p.Create(c.name, opts...); err != nil {
		return "", c.failed(err)
	}
	c.log.Info("created kind cluster", "name", c.name, "elapsed", time.Since(start).Round(time.Second))
	if err := c.loadRESTConfig(path); err != nil {
		return "", err
	}
	if c.registry {
		if err := c.connectRegistry(ctx); err != nil {
			return "", fmt.Errorf("create kind cluster %s: %w", c.name, err)
		}
	}
	return path, nil
}

// failed exports the logs of a cluster whose creation failed, then deletes
// it, and returns err with where the logs are.
func (c *Cluster) failed(err error) error {
	dir := c.failureLogs
	if dir == "" {
		var derr error
		if dir, derr = os.MkdirTemp("", "kind-"+c.name+"-logs-"); derr != nil {
			return errors.Join(fmt.Errorf("create kind cluster %s: %w", c.name, err), derr)
		}
	}
	errs := []error{fmt.Errorf("create kind cluster %s (node logs in %s): %w", c.name, dir, err)}
	// kind fails before making any node when, say, its image cannot be
	// had: then there are no logs to collect and nothing to delete, and
	// trying would only add errors that hide the first.
	if ok, lerr := c.exists(context.Background()); lerr != nil || !ok {
		return errs[0]
	}
	if lerr := c.provider().CollectLogs(c.name, dir); lerr != nil {
		errs = append(errs, fmt.Errorf("export logs of kind cluster %s: %w", c.name, lerr))
	}
	if derr := c.provider().Delete(c.name, c.GetKubeconfig()); derr != nil {
		errs = append(errs, fmt.Errorf("delete kind cluster %s after its failed creation: %w", c.name, derr))
	}
	return errors.Join(errs...)
}

func (c *Cluster) kubeconfigPath() (string, error) {
	if c.kubeDir == "" {
		dir, err := os.MkdirTemp("", "kind-"+c.name+"-")
		if err != nil {
			return "", fmt.Errorf("kubeconfig directory: %w", err)
		}
		c.kubeDir = dir
	}
	return filepath.Join(c.kubeDir, "kubeconfig"), nil
}

func (c *Cluster) loadRESTConfig(path string) error {
	rc, err := conf.New(path)
	if err != nil {
		return fmt.Errorf("load kubeconfig of kind cluster %s: %w", c.name, err)
	}
	c.rc = rc
	return nil
}

// GetKubeconfig returns the path of the kubeconfig Create wrote.
func (c *Cluster) GetKubeconfig() string {
	if c.kubeDir == "" {
		return ""
	}
	return filepath.Join(c.kubeDir, "kubeconfig")
}

// GenerateKubeconfig writes a fresh kubeconfig and returns its path. The
// only argument understood is --internal, for an address that works from
// inside the cluster's Docker network.
func (c *Cluster) GenerateKubeconfig(args ...string) (string, error) {
	internal := false
	for _, a := range args {
		if a != "--internal" {
			return "", fmt.Errorf("kind kubeconfig: argument %q not supported", a)
		}
		internal = true
	}
	cfg, err := c.provider().KubeConfig(c.name, internal)
	if err != nil {
		return "", fmt.Errorf("kind kubeconfig of %s: %w", c.name, err)
	}
	path, err := c.kubeconfigPath()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig of kind cluster %s: %w", c.name, err)
	}
	if err := c.loadRESTConfig(path); err != nil {
		return "", err
	}
	return path, nil
}

// GetKubectlContext returns the context name kind gives the cluster.
func (c *Cluster) GetKubectlContext() string { return "kind-" + c.name }

// KubernetesRestConfig returns the client configuration once the cluster exists.
func (c *Cluster) KubernetesRestConfig() *rest.Config { return c.rc }

// ExportLogs copies the nodes' logs into dest.
func (c *Cluster) ExportLogs(ctx context.Context, dest string) error {
	// A create that failed before any node existed leaves nothing to
	// collect: say so instead of a second error.
	ok, err := c.exists(ctx)
	if err != nil || !ok {
		c.log.Info("no kind cluster to export logs from", "name", c.name, "why", err)
		return nil
	}
	if err := c.provider().CollectLogs(c.name, dest); err != nil {
		return fmt.Errorf("export logs of kind cluster %s: %w", c.name, err)
	}
	return nil
}

// exists reports whether kind lists the cluster. An engine that does not
// answer has no cluster anyone could reach: that is an error of its own,
// so callers can tell it from "listed, but not there".
func (c *Cluster) exists(ctx context.Context) (bool, error) {
	if !DockerAvailable(ctx) {
		return false, errNoEngine
	}
	names, err := c.provider().List()
	if err != nil {
		return false, fmt.Errorf("list kind clusters: %w", err)
	}
	return slices.Contains(names, c.name), nil
}

// errNoEngine: no Docker engine answers.
var errNoEngine = errors.New("no Docker engine answers")

// Exists reports whether a kind cluster called name runs in the Docker
// engine; false when no engine answers.
func Exists(ctx context.Context, name string) bool {
	ok, err := NewCluster(name).exists(ctx)
	return err == nil && ok
}

// Destroy deletes the cluster, its registry container and its kubeconfig
// file; a cluster that was never made, or an engine that is not running,
// is not an error: there is nothing of kind's to delete.
func (c *Cluster) Destroy(ctx context.Context) error {
	ok, err := c.exists(ctx)
	switch {
	case errors.Is(err, errNoEngine):
		c.log.Info("no Docker engine answers: no kind cluster to delete", "name", c.name)
	case err != nil:
		return fmt.Errorf("delete kind cluster %s: %w", c.name, err)
	case ok:
		c.log.Info("deleting kind cluster", "name", c.name)
		if err := c.provider().Delete(c.name, c.GetKubeconfig()); err != nil {
			return fmt.Errorf("delete kind cluster %s: %w", c.name, err)
		}
	}
	if err == nil {
		if err := c.deleteRegistry(ctx); err != nil {
			return fmt.Errorf("delete registry of kind cluster %s: %w", c.name, err)
		}
	}
	if c.kubeDir != "" {
		if err := os.RemoveAll(c.kubeDir); err != nil {
			return fmt.Errorf("remove kubeconfig of kind cluster %s: %w", c.name, err)
		}
		c.kubeDir = ""
	}
	c.rc = nil
	return nil
}

// WaitForControlPlane waits until every node is Ready and the default
// ServiceAccount exists: pods created before it appears are rejected.
func (c *Cluster) WaitForControlPlane(ctx context.Context, client klient.Client) error {
	r, err := resources.New(client.RESTConfig())
	if err != nil {
		return fmt.Errorf("wait for kind cluster %s: %w", c.name, err)
	}
	cond := conditions.New(r)
	timeout := defaultReadyTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	opts := []wait.Option{wait.WithContext(ctx), wait.WithTimeout(timeout), wait.WithInterval(time.Second), wait.WithImmediate()}

	if err := wait.For(allNodesReady(r), opts...); err != nil {
		return fmt.Errorf("wait for nodes of kind cluster %s to be Ready: %w", c.name, err)
	}
	sa := &corev1.ServiceAccount{}
	sa.Name, sa.Namespace = "default", corev1.NamespaceDefault
	if err := wait.For(cond.ResourceMatch(sa, func(k8s.Object) bool { return true }), opts...); err != nil {
		return fmt.Errorf("wait for default ServiceAccount of kind cluster %s: %w", c.name, err)
	}
	return nil
}

func allNodesReady(r *resources.Resources) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		var list corev1.NodeList
		if err := r.List(ctx, &list); err != nil {
			return false, nil // the API server may still be starting
		}
		return len(list.Items) > 0 && !slices.ContainsFunc(list.Items, func(n corev1.Node) bool { return !nodeReady(n) }), nil
	}
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// LoadImageArchive imports a docker-archive or OCI tarball into containerd on
// every node, as `kind load image-archive` does.
func (c *Cluster) LoadImageArchive(_ context.Context, archivePath string, args ...string) error {
	if len(args) > 0 {
		return fmt.Errorf("load image archive %s: arguments %q not supported", archivePath, args)
	}
	if _, err := os.Stat(archivePath); err != nil {
		return fmt.Errorf("load image archive: %w", err)
	}
	list, err := c.provider().ListInternalNodes(c.name)
	if err != nil {
		return fmt.Errorf("list nodes of kind cluster %s: %w", c.name, err)
	}
	if len(list) == 0 {
		return fmt.Errorf("load image archive %s: kind cluster %s has no nodes", archivePath, c.name)
	}
	// Each node reads its own copy of the file, concurrently.
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, n := range list {
		wg.Go(func() { errs[i] = loadArchive(n, archivePath) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.log.Info("loaded image archive", "archive", archivePath, "cluster", c.name, "nodes", len(list))
	return nil
}

func loadArchive(n nodes.Node, archivePath string) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return fmt.Errorf("load image archive: %w", err)
	}
	defer f.Close()
	if err := nodeutils.LoadImageArchive(n, f); err != nil {
		return fmt.Errorf("load image archive %s on node %s: %w", archivePath, n.String(), err)
	}
	return nil
}

// LoadImage copies an image from the local Docker engine into the cluster
// by saving it to an archive first, as `kind load docker-image` does. It
// saves only the nodes' platform: with Docker's containerd image store, a
// save of every platform fails on multi-platform images whose other
// platforms' blobs were never pulled. Docker before 28.0 has no
// --platform; there a plain save is what it does anyway.
func (c *Cluster) LoadImage(ctx context.Context, image string, args ...string) error {
	if len(args) > 0 {
		return fmt.Errorf("load image %s: arguments %q not supported", image, args)
	}
	dir, err := os.MkdirTemp("", "kind-image-")
	if err != nil {
		return fmt.Errorf("load image %s: %w", image, err)
	}
	defer os.RemoveAll(dir)
	archive := filepath.Join(dir, "image.tar")
	out, err := exec.CommandContext(ctx, "docker", "save", "--platform", "linux/"+runtime.GOARCH, "-o", archive, image).CombinedOutput()
	if err != nil && strings.Contains(string(out), "unknown flag: --platform") {
		out, err = exec.CommandContext(ctx, "docker", "save", "-o", archive, image).CombinedOutput()
	}
	if err != nil {
		return fmt.Errorf("docker save %s: %w: %s", image, err, out)
	}
	return c.LoadImageArchive(ctx, archive)
}
