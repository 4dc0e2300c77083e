package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
	"github.com/gmini-dev/gmini/tools/cluster/local/pki"
	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
)

// Component names, as used in logs/<name>.log, the state file,
// StopComponent and StartComponent.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Containerd        = "containerd"
	Kubelet           = "kubelet"
	KubeProxy         = "kube-proxy"
)

// Create starts the cluster and returns the admin kubeconfig path. If the
// cluster is already running it returns the kubeconfig at once; leftovers
// of a cluster that is not running are destroyed first. If Create fails it
// destroys what it started, keeping the logs.
func (c *Cluster) Create(ctx context.Context, _ ...string) (string, error) {
	p, err := c.plan()
	if err != nil {
		return "", err
	}
	old, err := readState(p.stateFile())
	if err != nil {
		return "", err
	}
	if old != nil {
		if running(old.Components[APIServer]) {
			c.log.Info("cluster already running", "name", p.Name, "kubeconfig", p.kubeconfig())
			return p.kubeconfig(), nil
		}
		c.log.Info("removing leftovers of a stopped cluster", "name", p.Name)
		if err := c.Destroy(ctx); err != nil {
			return "", fmt.Errorf("create cluster %s: clean up previous run: %w", p.Name, err)
		}
	}
	// Checked before anything is written, so the clean-up of a failed
	// Create cannot tear down another cluster's network.
	if netns.Exists(p.NetNS) {
		return "", fmt.Errorf("create cluster %s: network namespace %s exists: the cluster runs from another run directory, or a crash left it (destroy it with that run directory, or `ip netns del %s`)", p.Name, p.NetNS, p.NetNS)
	}
	if _, err := net.InterfaceByName(p.HostLink); err == nil {
		return "", fmt.Errorf("create cluster %s: host link %s exists: another cluster uses subnet index %d; choose another with WithSubnetIndex", p.Name, p.HostLink, p.Index)
	}
	if err := c.create(ctx, p); err != nil {
		// Stop what did start so a failed Create leaks nothing; the logs
		// stay, and err already carries their relevant tails.
		if derr := c.Destroy(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
		return "", fmt.Errorf("create cluster %s: %w", p.Name, err)
	}
	return p.kubeconfig(), nil
}

func (c *Cluster) create(ctx context.Context, p plan) error {
	t0 := time.Now()
	step := func(msg string, args ...any) {
		c.log.Info(msg, append([]any{"cluster", p.Name, "elapsed", time.Since(t0).Round(10 * time.Millisecond)}, args...)...)
	}
	// Components run with the run directory as working directory, so
	// relative paths given as options must not reach them.
	for _, f := range []*string{&c.kubeBin, &c.pauseImage} {
		abs, err := filepath.Abs(*f)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", *f, err)
		}
		*f = abs
	}
	if err := c.preflight(ctx); err != nil {
		return err
	}
	for _, d := range []string{p.logDir(), p.pkiDir(), p.containerdDir(), p.kubeletRoot(), p.cniConfDir(), p.path("etcd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make run directory: %w", err)
		}
	}
	// etcd refuses a data directory others can read.
	if err := os.Chmod(p.path("etcd"), 0o700); err != nil {
		return fmt.Errorf("make run directory: %w", err)
	}
	st := &state{Plan: p, KubeBinary: c.kubeBin, NoNode: c.noNode, Components: map[string]*proc{}}
	// The state goes to disk before anything is made, so Destroy can undo
	// a Create that failed half-way.
	if err := st.write(p.stateFile()); err != nil {
		return err
	}
	files, err := c.writePKI(p)
	if err != nil {
		return err
	}
	step("certificates written")

	if err := netns.Setup(ctx, netConfig(p)); err != nil {
		return fmt.Errorf("set up network: %w", err)
	}
	step("network namespace ready", "netns", p.NetNS, "apiserver", p.serverURL())
	if err := cgroups.Create(p.systemCgroup()); err != nil {
		return err
	}

	if err := c.startProc(st, Etcd, netns.Command(p.NetNS, "etcd", etcdArgs(p)...)); err != nil {
		return err
	}
	if !c.noNode {
		// containerd does not need the API: start it now to overlap its
		// start-up and the image import with the control plane's.
		if err := c.writeNodeConfig(p, files); err != nil {
			return err
		}
		if err := c.startProc(st, Containerd, netns.Command(p.NetNS, "containerd", "--config", p.path("containerd", "config.toml"))); err != nil {
			return err
		}
	}
	if err := c.waitEtcd(ctx, p); err != nil {
		return withLog(p, fmt.Errorf("wait for etcd: %w", err), Etcd)
	}
	step("etcd healthy")

	if err := c.startKube(st, APIServer, apiserverArgs(p, files)); err != nil {
		return err
	}
	if !c.noNode {
		if err := c.waitContainerd(ctx, p); err != nil {
			return withLog(p, fmt.Errorf("wait for containerd: %w", err), Containerd)
		}
		step("containerd ready")
		if err := c.importImage(ctx, p, c.pauseImage); err != nil {
			return withLog(p, fmt.Errorf("import pause image: %w", err), Containerd)
		}
		step("pause image imported", "tag", c.pauseTag)
		// The kubelet retries registration until the API answers; starting
		// it now overlaps its own start-up with the apiserver's.
		if err := c.startKube(st, Kubelet, kubeletArgs(p, files)); err != nil {
			return err
		}
	}
	if err := c.waitAPIServer(ctx, p); err != nil {
		return withLog(p, fmt.Errorf("wait for kube-apiserver /readyz: %w", err), APIServer, Etcd)
	}
	step("kube-apiserver ready")
	// These exit rather than retry if the apiserver has not yet created
	// its bootstrap RBAC roles, which /readyz waits for.
	later := map[string][]string{ControllerManager: controllerManagerArgs(p, files)}
	if !c.noNode {
		later[Scheduler] = schedulerArgs(files)
		later[KubeProxy] = []string{"--config", p.path("kube-proxy.json")}
	}
	for _, name := range []string{ControllerManager, Scheduler, KubeProxy} {
		if args, ok := later[name]; ok {
			if err := c.startKube(st, name, args); err != nil {
				return err
			}
		}
	}
	if !c.noNode {
		if err := c.waitNodeReady(ctx, p); err != nil {
			return withLog(p, fmt.Errorf("wait for node %s Ready: %w", NodeName, err), Kubelet, Containerd)
		}
		step("node ready", "node", NodeName)
	}
	if err := c.waitDefaultServiceAccount(ctx, p); err != nil {
		return withLog(p, fmt.Errorf("wait for ServiceAccount default/default: %w", err), ControllerManager)
	}
	step("default ServiceAccount exists; cluster ready", "kubeconfig", p.kubeconfig())
	return nil
}

// startKube starts one component of the kube binary inside the namespace.
func (c *Cluster) startKube(st *state, name string, args []string) error {
	return c.startProc(st, name, netns.Command(st.Plan.NetNS, c.kubeBin, append([]string{name}, args...)...))
}

// preflight fails early, with one message naming everything missing,
// rather than half-way through start-up.
func (c *Cluster) preflight(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("preflight: must run as root")
	}
	if err := hostpkgs.Ensure(ctx, c.log, hostpkgs.LocalNode()...); err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	var missing []error
	if _, err := os.Stat(c.kubeBin); err != nil {
		missing = append(missing, fmt.Errorf("kube binary: %w", err))
	}
	tools := []string{"etcd", "ip", "nsenter", "sysctl", "iptables"}
	if !c.noNode {
		tools = append(tools, "containerd", "containerd-shim-runc-v2", "runc", "ctr", "conntrack")
		if _, err := os.Stat(c.pauseImage); err != nil {
			missing = append(missing, fmt.Errorf("pause image: %w", err))
		}
		if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
			missing = append(missing, fmt.Errorf("CNI plugins (containernetworking-plugins): %w", err))
		}
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			if _, err2 := os.Stat(filepath.Join("/usr/sbin", t)); err2 != nil {
				missing = append(missing, fmt.Errorf("%s: %w", t, err))
			}
		}
	}
	if err := errors.Join(missing...); err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	return nil
}

func netConfig(p plan) netns.Config {
	return netns.Config{
		Name:     p.NetNS,
		HostLink: p.HostLink,
		HostAddr: netip.MustParsePrefix(p.HostAddr),
		NodeAddr: netip.MustParsePrefix(p.NodeAddr),
		Routed:   []netip.Prefix{netip.MustParsePrefix(p.PodCIDR), netip.MustParsePrefix(p.ServiceCIDR)},
	}
}

// writePKI issues every certificate and returns file paths by name
// (ca.crt, apiserver.key, ...) plus the kubeconfig paths by identity.
func (c *Cluster) writePKI(p plan) (map[string]string, error) {
	now := time.Now()
	ca, err := pki.NewCA("gmini-"+p.Name+"-ca", now)
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	put := func(name string, data []byte) error {
		path, err := pki.WriteFile(p.pkiDir(), name, data)
		files[name] = path
		return err
	}
	if err := errors.Join(put("ca.crt", ca.CertPEM()), put("ca.key", caKey)); err != nil {
		return nil, err
	}
	saPub, saKey, err := pki.ServiceAccountKey()
	if err != nil {
		return nil, err
	}
	if err := errors.Join(put("sa.pub", saPub), put("sa.key", saKey)); err != nil {
		return nil, err
	}
	node := p.nodeIP().AsSlice()
	loopback := net.IPv4(127, 0, 0, 1)
	certs := map[string]pki.Spec{
		"apiserver": {
			CommonName: "kube-apiserver", Server: true,
			IPs:      []net.IP{node, loopback, p.apiServiceIP().AsSlice()},
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		},
		"apiserver-kubelet-client": {CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true},
		"kubelet-serving":          {CommonName: "system:node:" + NodeName, Organization: []string{"system:nodes"}, Server: true, IPs: []net.IP{node, loopback}, DNSNames: []string{NodeName, "localhost"}},
		"admin":                    {CommonName: "gmini-admin", Organization: []string{"system:masters"}, Client: true},
		"controller-manager":       {CommonName: "system:kube-controller-manager", Client: true},
		"scheduler":                {CommonName: "system:kube-scheduler", Client: true},
		"kube-proxy":               {CommonName: "system:kube-proxy", Client: true},
		"kubelet":                  {CommonName: "system:node:" + NodeName, Organization: []string{"system:nodes"}, Client: true},
	}
	pairs := map[string]pki.KeyPair{}
	for name, spec := range certs {
		kp, err := ca.Issue(spec, now)
		if err != nil {
			return nil, err
		}
		pairs[name] = kp
		if err := errors.Join(put(name+".crt", kp.CertPEM), put(name+".key", kp.KeyPEM)); err != nil {
			return nil, err
		}
	}
	// Components inside the namespace use loopback; the admin kubeconfig
	// is for the host and uses the node address through the veth.
	inside := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	for _, id := range []string{"controller-manager", "scheduler", "kube-proxy", "kubelet"} {
		path := filepath.Join(p.pkiDir(), id+".kubeconfig")
		if err := writeKubeconfig(path, inside, "gmini-"+p.Name, ca.CertPEM(), pairs[id].CertPEM, pairs[id].KeyPEM); err != nil {
			return nil, err
		}
		files[id+".kubeconfig"] = path
	}
	if err := writeKubeconfig(p.kubeconfig(), p.serverURL(), c.GetKubectlContext(), ca.CertPEM(), pairs["admin"].CertPEM, pairs["admin"].KeyPEM); err != nil {
		return nil, err
	}
	return files, nil
}

func (c *Cluster) writeNodeConfig(p plan, files map[string]string) error {
	snap := "overlayfs"
	if !overlaySupported() {
		snap = "native"
	}
	if err := os.WriteFile(p.path("containerd", "config.toml"), []byte(containerdConfig(p, c.pauseTag, snap)), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	return errors.Join(
		writeJSON(p.path("kubelet.json"), kubeletConfig(p, files)),
		writeJSON(p.path("kube-proxy.json"), kubeProxyConfig(p, files["kube-proxy.kubeconfig"])),
		writeJSON(filepath.Join(p.cniConfDir(), "10-gmini.conflist"), cniConfig(p)),
	)
}

func overlaySupported() bool {
	b, err := os.ReadFile("/proc/filesystems")
	return err == nil && containsField(string(b), "overlay")
}

func etcdArgs(p plan) []string {
	return []string{
		"--name=gmini",
		"--data-dir=" + p.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=gmini=http://127.0.0.1:2380",
	}
}

func apiserverArgs(p plan, f map[string]string) []string {
	return []string{
		"--etcd-servers=http://127.0.0.1:2379",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address=" + p.nodeIP().String(),
		"--cert-dir=" + p.pkiDir(),
		"--tls-cert-file=" + f["apiserver.crt"],
		"--tls-private-key-file=" + f["apiserver.key"],
		"--client-ca-file=" + f["ca.crt"],
		"--kubelet-client-certificate=" + f["apiserver-kubelet-client.crt"],
		"--kubelet-client-key=" + f["apiserver-kubelet-client.key"],
		"--kubelet-certificate-authority=" + f["ca.crt"],
		// The node name must never be resolved through the machine's DNS.
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-key-file=" + f["sa.pub"],
		"--service-account-signing-key-file=" + f["sa.key"],
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + p.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--profiling=false",
	}
}

func controllerManagerArgs(p plan, f map[string]string) []string {
	kc := f["controller-manager.kubeconfig"]
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--controllers=*",
		"--root-ca-file=" + f["ca.crt"],
		"--service-account-private-key-file=" + f["sa.key"],
		"--use-service-account-credentials",
		"--cluster-signing-cert-file=" + f["ca.crt"],
		"--cluster-signing-key-file=" + f["ca.key"],
		"--service-cluster-ip-range=" + p.ServiceCIDR,
		"--profiling=false",
	}
}

func schedulerArgs(f map[string]string) []string {
	kc := f["scheduler.kubeconfig"]
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--profiling=false",
	}
}

func kubeletArgs(p plan, f map[string]string) []string {
	return []string{
		"--config=" + p.path("kubelet.json"),
		"--kubeconfig=" + f["kubelet.kubeconfig"],
		"--root-dir=" + p.kubeletRoot(),
		"--hostname-override=" + NodeName,
		"--node-ip=" + p.nodeIP().String(),
	}
}
