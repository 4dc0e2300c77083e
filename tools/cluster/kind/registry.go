package kind

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/support"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/kind/pkg/cluster/nodes"

	"github.com/gmini-dev/gmini/tools/images"
)

// The registry kind's local-registry guide
// (https://kind.sigs.k8s.io/docs/user/local-registry/) runs next to a
// cluster: Distribution's image, plain HTTP, published on loopback only.
const (
	registryImage = "registry:3"
	registryPort  = 5000
	// registryHostsDir is where the nodes' containerd looks for a
	// hosts.toml per registry host (config_path).
	registryHostsDir = "/etc/containerd/certs.d"
)

// WithRegistry runs a registry container for the cluster, the way kind's
// local-registry guide does: on the host's loopback for pushes, on the
// kind network for the nodes, a hosts.toml on every node mapping the
// loopback name to the container, and the local-registry-hosting
// ConfigMap (KEP-1755) telling tools where it is. Destroy removes it.
func WithRegistry() support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.registry = true
		}
	}
}

// WithRegistryImage runs the registry container from image instead of
// registry:3 (the project's own build where registry:3 cannot be pulled).
func WithRegistryImage(image string) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.registryImage = image
		}
	}
}

// RegistryImage is the image the registry container runs by default.
const RegistryImage = registryImage

// registryName is the container's name, per cluster so clusters side by
// side each have their own; pods and nodes reach it by this name on the
// kind network.
func registryName(cluster string) string { return cluster + "-registry" }

// registryConfigPatch points containerd at registryHostsDir; node images
// of kind v0.27 and later already do, as the guide notes.
const registryConfigPatch = `[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "` + registryHostsDir + `"`

// withRegistryPatch returns cfg with the containerd patch the guide adds.
func withRegistryPatch(cfg *v1alpha4.Cluster) *v1alpha4.Cluster {
	cfg.ContainerdConfigPatches = append(cfg.ContainerdConfigPatches, registryConfigPatch)
	return cfg
}

// registryRunArgs starts the container: restarted with the Docker engine,
// its port published on loopback only, at a port Docker picks.
func registryRunArgs(cluster, image string) []string {
	return []string{"run", "-d", "--restart=always", "--network", "bridge",
		"-p", fmt.Sprintf("127.0.0.1::%d", registryPort), "--name", registryName(cluster), image}
}

// registryHostsTOML maps the name images are pushed and referenced by
// (localhost:<port>) to the container on the kind network.
func registryHostsTOML(cluster string) string {
	return fmt.Sprintf("[host.%q]\n", fmt.Sprintf("http://%s:%d", registryName(cluster), registryPort))
}

// localRegistryHosting is KEP-1755's ConfigMap, by which tools (Tilt,
// Skaffold, ...) find a cluster's local registry.
func localRegistryHosting(host string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "local-registry-hosting", Namespace: metav1.NamespacePublic},
		Data: map[string]string{"localRegistryHosting.v1": fmt.Sprintf("host: %q\nhelp: %q\n",
			host, "https://kind.sigs.k8s.io/docs/user/local-registry/")},
	}
}

func docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// startRegistry runs the registry container unless it runs already.
func (c *Cluster) startRegistry(ctx context.Context) error {
	name := registryName(c.name)
	if running, err := docker(ctx, "inspect", "-f", "{{.State.Running}}", name); err == nil {
		if running == "true" {
			return nil
		}
		if _, err := docker(ctx, "start", name); err != nil {
			return err
		}
		return nil
	}
	image := c.registryImage
	if image == "" {
		image = registryImage
	}
	// docker run would pull a missing image: only where pulls are allowed.
	if !ImagePresent(ctx, image) && !MayPull() {
		return fmt.Errorf("registry image %s is not in the Docker engine, and pulling is off (%s=1 allows it)", image, PullEnv)
	}
	c.log.Info("starting registry container", "name", name, "image", image)
	_, err := docker(ctx, registryRunArgs(c.name, image)...)
	return err
}

// registryHost is localhost:<the port Docker published>.
func registryHost(ctx context.Context, cluster string) (string, error) {
	out, err := docker(ctx, "port", registryName(cluster), fmt.Sprintf("%d/tcp", registryPort))
	if err != nil {
		return "", err
	}
	// One line per address, e.g. 127.0.0.1:32768.
	ap, err := netip.ParseAddrPort(strings.Fields(out)[0])
	if err != nil {
		return "", fmt.Errorf("registry %s: published port %q: %w", registryName(cluster), out, err)
	}
	return fmt.Sprintf("localhost:%d", ap.Port()), nil
}

// connectRegistry joins the container to the kind network, writes the
// hosts.toml on every node and publishes the ConfigMap.
func (c *Cluster) connectRegistry(ctx context.Context) error {
	name := registryName(c.name)
	if nets, err := docker(ctx, "inspect", "-f", "{{json .NetworkSettings.Networks.kind}}", name); err != nil {
		return err
	} else if nets == "null" {
		if _, err := docker(ctx, "network", "connect", "kind", name); err != nil {
			return err
		}
	}
	host, err := registryHost(ctx, c.name)
	if err != nil {
		return err
	}
	list, err := c.provider().ListNodes(c.name)
	if err != nil {
		return fmt.Errorf("list nodes of kind cluster %s: %w", c.name, err)
	}
	for _, n := range list {
		if err := writeHostsTOML(n, host, registryHostsTOML(c.name)); err != nil {
			return err
		}
	}
	cs, err := kubernetes.NewForConfig(c.rc)
	if err != nil {
		return err
	}
	cm := localRegistryHosting(host)
	if _, err := cs.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	c.log.Info("registry connected", "container", name, "host", host)
	return nil
}

func writeHostsTOML(n nodes.Node, host, content string) error {
	dir := path.Join(registryHostsDir, host)
	if err := n.Command("mkdir", "-p", dir).Run(); err != nil {
		return fmt.Errorf("node %s: mkdir %s: %w", n, dir, err)
	}
	if err := n.Command("cp", "/dev/stdin", path.Join(dir, "hosts.toml")).SetStdin(strings.NewReader(content)).Run(); err != nil {
		return fmt.Errorf("node %s: write hosts.toml: %w", n, err)
	}
	return nil
}

// deleteRegistry removes the container, if there is one.
func (c *Cluster) deleteRegistry(ctx context.Context) error {
	name := registryName(c.name)
	if _, err := docker(ctx, "inspect", name); err != nil {
		return nil
	}
	_, err := docker(ctx, "rm", "-f", name)
	return err
}

// Registry is the cluster's registry container: pushed to and named in
// images as localhost:<port> (each node's hosts.toml maps that to the
// container), reached by pods at <cluster>-registry:5000 over the kind
// network's DNS, plain HTTP as in kind's guide.
func (c *Cluster) Registry() (images.Registry, error) {
	if !c.registry {
		return images.Registry{}, fmt.Errorf("kind cluster %s runs no registry (create it WithRegistry)", c.name)
	}
	host, err := registryHost(context.Background(), c.name)
	if err != nil {
		return images.Registry{}, fmt.Errorf("kind cluster %s: %w", c.name, err)
	}
	// Pods reach the registry at its address on kind's network: its
	// container's name resolves only where the cluster's DNS runs, and
	// the offline node image runs none (it has no CoreDNS image).
	ip, err := docker(context.Background(), "inspect", "-f", "{{(index .NetworkSettings.Networks \""+kindNetwork+"\").IPAddress}}", registryName(c.name))
	if err != nil {
		return images.Registry{}, fmt.Errorf("kind cluster %s: the registry's address: %w", c.name, err)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return images.Registry{}, fmt.Errorf("kind cluster %s: the registry is not on kind's network (address %q)", c.name, ip)
	}
	return images.Registry{Host: host, InCluster: netip.AddrPortFrom(addr, registryPort).String()}, nil
}

// kindNetwork is the Docker network kind puts its nodes on.
const kindNetwork = "kind"

// HostAddr is an address of this machine that the cluster's pods reach:
// the gateway of kind's Docker network (a server of the test process
// listening there is reachable from every node and pod, as a webhook
// receiver must be).
func (c *Cluster) HostAddr(ctx context.Context) (netip.Addr, error) {
	gw, _, err := c.HostNetwork(ctx)
	return gw, err
}

// HostNetwork is kind's Docker network as this machine sees it: its
// gateway (an address of this machine) and its subnet (the nodes', and the
// source of what pods send this machine once their node masquerades it).
func (c *Cluster) HostNetwork(ctx context.Context) (netip.Addr, netip.Prefix, error) {
	out, err := docker(ctx, "network", "inspect", kindNetwork, "--format", "{{range .IPAM.Config}}{{.Subnet}},{{.Gateway}} {{end}}")
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("find the host's address on kind's network: %w", err)
	}
	for _, f := range strings.Fields(out) {
		subnet, gateway, _ := strings.Cut(f, ",")
		p, perr := netip.ParsePrefix(subnet)
		a, aerr := netip.ParseAddr(gateway)
		if perr == nil && aerr == nil && a.Is4() && p.Contains(a) {
			return a, p, nil
		}
	}
	return netip.Addr{}, netip.Prefix{}, fmt.Errorf("kind's Docker network %q has no IPv4 subnet with a gateway (%q)", kindNetwork, out)
}
