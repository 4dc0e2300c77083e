// Package local runs a real single-node Kubernetes v1.34 cluster from host
// processes (etcd, the control plane, containerd, kubelet and kube-proxy),
// in the spirit of Kubernetes' hack/local-up-cluster.sh, and exposes it as
// an e2e-framework cluster provider.
//
// Every component runs inside a network namespace made for the cluster
// (see package netns), reached from the host through a veth pair at an
// address in 198.18.0.0/15; the components and containerd's shims live in
// one cgroup tree (see package cgroups), pod containers in containerd's
// /k8s.io/<id> cgroups, found through the runc state in the run
// directory. A state file there records what was started, so Destroy
// works from a different process and after a crash.
//
// Needs root, cgroup v1 (or hybrid), and the Debian packages containerd,
// runc, containernetworking-plugins, iptables, iproute2 and conntrack.
package local

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/e2e-framework/klient"
	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// Version is the Kubernetes version the kube binary is built from.
const Version = modbuild.KubernetesVersion

var _ support.E2EClusterProviderWithImageLoader = (*Cluster)(nil)

// Cluster is a local single-node cluster. Create it with NewCluster; the
// zero value is not usable.
type Cluster struct {
	name        string
	version     string // requested with WithVersion; must be Version
	runDir      string
	kubeBin     string
	pauseImage  string // docker-archive tarball
	pauseTag    string
	noNode      bool
	subnetIndex int // -1: derive from the name
	log         *slog.Logger
	stopGrace   time.Duration

	// kubeRouterBin enforces NetworkPolicy when set (WithNetworkPolicy).
	kubeRouterBin string
	// registryBin serves the node's registry when set (WithRegistry).
	registryBin string

	mu     sync.Mutex
	exited map[string]chan struct{} // components started by this process
	rc     *rest.Config
}

// readyTimeout bounds each readiness wait of Create and StartComponent.
const readyTimeout = 2 * time.Minute

// Option configures a Cluster.
type Option func(*Cluster)

// WithRunDir sets the directory for state, certificates, data and logs.
// Required: the provider does not guess where a checkout keeps its output.
func WithRunDir(dir string) Option { return func(c *Cluster) { c.runDir = dir } }

// WithKubeBinary sets the multi-call kube binary (kube <component> flags...).
// Create needs it; Destroy, which reads the state file, does not.
func WithKubeBinary(path string) Option { return func(c *Cluster) { c.kubeBin = path } }

// WithPauseImage sets the docker-archive tarball of the sandbox image and
// the tag it carries; containerd never pulls it because it is imported
// before the kubelet starts. Create needs it unless WithoutNode is given.
func WithPauseImage(tarball, tag string) Option {
	return func(c *Cluster) { c.pauseImage, c.pauseTag = tarball, tag }
}

// WithoutNode runs only etcd, kube-apiserver and kube-controller-manager,
// for tests that need the API but no pods.
func WithoutNode() Option { return func(c *Cluster) { c.noNode = true } }

// WithNetworkPolicy runs kube-router (kubeRouterBinary, which
// cluster.Prepare builds) as the node's NetworkPolicy engine, its firewall
// controller only; without it policies are stored but not enforced, as
// on any cluster whose network plugin ignores them. It needs a node, and
// ipset on the machine.
func WithNetworkPolicy(kubeRouterBinary string) Option {
	return func(c *Cluster) { c.kubeRouterBin = kubeRouterBinary }
}

// WithSubnetIndex picks the address slot (0-63) instead of deriving it from
// the name; use it when two names collide.
func WithSubnetIndex(i int) Option { return func(c *Cluster) { c.subnetIndex = i } }

// WithLogger sets where progress lines go.
func WithLogger(l *slog.Logger) Option { return func(c *Cluster) { c.log = l } }

// WithStopGrace sets how long StopComponent and Destroy wait after SIGTERM
// before SIGKILL (default 10 s). The apiserver's graceful shutdown waits
// for open watch connections and usually needs all of it; 0 kills at
// once, like a crash.
func WithStopGrace(d time.Duration) Option {
	return func(c *Cluster) { c.stopGrace = d }
}

// NewCluster returns a cluster named name; nothing happens until Create.
func NewCluster(name string, opts ...Option) *Cluster {
	c := &Cluster{name: name, subnetIndex: -1, stopGrace: 10 * time.Second}
	for _, o := range opts {
		o(c)
	}
	c.SetDefaults()
	return c
}

// ClusterOpt adapts an Option to e2e-framework's ClusterOpts.
func ClusterOpt(o Option) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			o(c)
		}
	}
}

// SetDefaults fills in unset options that have a sensible default.
func (c *Cluster) SetDefaults() support.E2EClusterProvider {
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.exited == nil {
		c.exited = map[string]chan struct{}{}
	}
	return c
}

// WithName sets the cluster name.
func (c *Cluster) WithName(name string) support.E2EClusterProvider { c.name = name; return c }

// WithVersion records the Kubernetes version a caller asks for. The version
// is the kube binary's, so Create refuses any other than Version.
func (c *Cluster) WithVersion(v string) support.E2EClusterProvider { c.version = v; return c }

// WithPath sets the kube binary.
func (c *Cluster) WithPath(path string) support.E2EClusterProvider { c.kubeBin = path; return c }

// WithOpts applies e2e-framework options (see ClusterOpt).
func (c *Cluster) WithOpts(opts ...support.ClusterOpts) support.E2EClusterProvider {
	for _, o := range opts {
		o(c)
	}
	return c
}

// CreateWithConfig is Create; this provider takes no config file.
func (c *Cluster) CreateWithConfig(ctx context.Context, configFile string) (string, error) {
	if configFile != "" {
		return "", fmt.Errorf("local cluster %s: config files are not supported, use options", c.name)
	}
	return c.Create(ctx)
}

// GetKubeconfig returns the admin kubeconfig path written by Create.
func (c *Cluster) GetKubeconfig() string {
	p, err := c.plan()
	if err != nil {
		return ""
	}
	return p.kubeconfig()
}

// GenerateKubeconfig returns the admin kubeconfig path.
func (c *Cluster) GenerateKubeconfig(...string) (string, error) {
	p, err := c.plan()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p.kubeconfig()); err != nil {
		return "", fmt.Errorf("kubeconfig of cluster %s: %w", c.name, err)
	}
	return p.kubeconfig(), nil
}

// GetKubectlContext returns the context name in the kubeconfig.
func (c *Cluster) GetKubectlContext() string { return "gmini-" + c.name }

// KubernetesRestConfig returns the admin client configuration after Create.
func (c *Cluster) KubernetesRestConfig() *rest.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rc == nil {
		if p, err := c.plan(); err == nil {
			c.rc, _ = clientcmd.BuildConfigFromFlags("", p.kubeconfig())
		}
	}
	return c.rc
}

// WaitForControlPlane returns at once: Create already waited for the
// apiserver, the node and the default ServiceAccount.
func (c *Cluster) WaitForControlPlane(context.Context, klient.Client) error { return nil }

// ExportLogs copies the component logs to dest/<name>.
func (c *Cluster) ExportLogs(ctx context.Context, dest string) error {
	p, err := c.plan()
	if err != nil {
		return err
	}
	return copyDir(ctx, p.logDir(), filepath.Join(dest, c.name))
}

func (c *Cluster) plan() (plan, error) {
	if c.name == "" {
		return plan{}, fmt.Errorf("local cluster: no name")
	}
	if c.runDir == "" {
		return plan{}, fmt.Errorf("local cluster %s: no run directory (WithRunDir)", c.name)
	}
	abs, err := filepath.Abs(c.runDir)
	if err != nil {
		return plan{}, fmt.Errorf("run directory %s: %w", c.runDir, err)
	}
	idx := c.subnetIndex
	if idx < 0 {
		idx = subnetIndex(c.name)
	}
	return newPlan(c.name, abs, idx)
}

func copyDir(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("export logs: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("export logs: %w", err)
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return fmt.Errorf("export logs: %w", err)
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return fmt.Errorf("export logs: copy %s: %w", p, err)
		}
		return out.Close()
	})
}

// Network says where the cluster lives. The host routes both the pod and
// the service range through the veth, so a test on the host can reach a
// pod IP or a Service's ClusterIP directly.
type Network struct {
	Namespace   string       // network namespace, for nsenter --net=/run/netns/<Namespace>
	NodeIP      netip.Addr   // the node's InternalIP, reachable from the host
	HostIP      netip.Addr   // the host's end of the veth: a server of this machine listening there is reachable from the node and its pods
	PodCIDR     netip.Prefix // pod addresses
	ServiceCIDR netip.Prefix // ClusterIPs
	APIServer   string       // https://<NodeIP>:6443
}

// Network returns the cluster's addresses; it needs no running cluster.
func (c *Cluster) Network() (Network, error) {
	p, err := c.plan()
	if err != nil {
		return Network{}, err
	}
	return Network{
		Namespace:   p.NetNS,
		NodeIP:      p.nodeIP(),
		HostIP:      netip.MustParsePrefix(p.HostAddr).Addr(),
		PodCIDR:     netip.MustParsePrefix(p.PodCIDR),
		ServiceCIDR: netip.MustParsePrefix(p.ServiceCIDR),
		APIServer:   p.serverURL(),
	}, nil
}

// HostAddr is an address of this machine that the cluster's pods reach:
// the host's end of the node's veth.
func (c *Cluster) HostAddr(context.Context) (netip.Addr, error) {
	nw, err := c.Network()
	return nw.HostIP, err
}
