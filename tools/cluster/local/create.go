package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
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
	if c.version != "" && c.version != Version {
		return "", fmt.Errorf("create cluster %s: Kubernetes %s requested, but the kube binary is %s", p.Name, c.version, Version)
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
		if err := c.reclaim(ctx, p); err != nil {
			return "", fmt.Errorf("create cluster %s: %w", p.Name, err)
		}
		if netns.Exists(p.NetNS) {
			return "", fmt.Errorf("create cluster %s: network namespace %s still exists after its leftovers were destroyed", p.Name, p.NetNS)
		}
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

// boot is what the start-up actions share.
type boot struct {
	c     *Cluster
	p     plan
	st    *state
	files map[string]string // certificates, keys and kubeconfigs by name
}

// action is one step of bringing the cluster up. node actions belong to
// the node (containerd, kubelet, kube-proxy, ...) and are skipped when the
// cluster runs WithoutNode.
type action struct {
	desc string
	node bool
	// netpol actions run only WithNetworkPolicy, registry actions only
	// WithRegistry.
	netpol   bool
	registry bool
	run      func(ctx context.Context, b *boot) error
	// undo reverses run for Destroy, which runs the undo of every action
	// in reverse order, from the state file alone; nil if there is
	// nothing to reverse or owns covers it.
	undo func(ctx context.Context, t *teardown)
	// owns is what run leaves in the run directory, removed with the data.
	owns []string
}

// actions is the start-up order, as kind's create loop runs its
// actionsToRun. Starting a component and waiting for it are separate steps
// so that slow starts overlap: containerd comes up while etcd and the
// apiserver do, and the kubelet retries registration until the API answers.
func actions() []action {
	return []action{
		{desc: "certificates written", run: writePKI, owns: []string{"pki", "kubeconfig"}},
		{desc: "network namespace ready", run: setUpNetwork, undo: tearDownNetwork},
		start(etcd),
		start(containerd), // needs no API
		withRegistry(start(registry)),
		ready(etcd),
		start(apiServer),
		ready(containerd),
		withRegistry(ready(registry)),
		{desc: "pause image imported", node: true, run: importPause},
		start(kubelet),
		ready(apiServer),
		// These exit rather than retry if the apiserver has not yet
		// created its bootstrap RBAC roles, which /readyz waits for.
		start(controllerManager),
		start(scheduler),
		start(kubeProxy),
		ready(kubelet),
		// The engine looks its node up when it starts, and gives up when
		// its informers are refused for a minute.
		{desc: "kube-router RBAC granted", node: true, netpol: true, run: grantKubeRouter},
		netpol(start(kubeRouter)),
		ready(controllerManager),
		netpol(ready(kubeRouter)),
		{desc: "storage class and volumes created", node: true, run: createStorage, owns: []string{"volumes"}},
	}
}

func start(comp component) action {
	return action{desc: comp.name + " started", node: comp.node, owns: comp.owns, undo: comp.stop, run: func(ctx context.Context, b *boot) error {
		for _, d := range comp.dirs {
			if err := os.MkdirAll(b.p.path(d), 0o755); err != nil {
				return fmt.Errorf("make run directory of %s: %w", comp.name, err)
			}
		}
		if comp.configure != nil {
			if err := comp.configure(b); err != nil {
				return fmt.Errorf("configure %s: %w", comp.name, err)
			}
		}
		return b.c.startProc(b.st, comp.name, comp.command(b))
	}}
}

func netpol(a action) action { a.netpol = true; return a }

func withRegistry(a action) action { a.registry = true; return a }

func ready(comp component) action {
	return action{desc: comp.readyDesc, node: comp.node, run: func(ctx context.Context, b *boot) error {
		return comp.waitReady(ctx, b.c, b.p)
	}}
}

func (c *Cluster) create(ctx context.Context, p plan) error {
	t0 := time.Now()
	// Components run with the run directory as working directory, so
	// relative paths given as options must not reach them.
	for _, f := range []*string{&c.kubeBin, &c.pauseImage, &c.kubeRouterBin, &c.registryBin} {
		if *f == "" {
			continue
		}
		abs, err := filepath.Abs(*f)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", *f, err)
		}
		*f = abs
	}
	if err := c.preflight(); err != nil {
		return err
	}
	// Every component logs there; Destroy keeps it.
	if err := os.MkdirAll(p.logDir(), 0o755); err != nil {
		return fmt.Errorf("make run directory: %w", err)
	}
	st := &state{Plan: p, KubeBinary: c.kubeBin, NoNode: c.noNode, Components: map[string]*process{}}
	// The state goes to disk before anything is made, so Destroy can undo
	// a Create that failed half-way.
	if err := st.write(p.stateFile()); err != nil {
		return err
	}
	b := &boot{c: c, p: p, st: st, files: map[string]string{}}
	for _, a := range actions() {
		if a.node && c.noNode || a.netpol && c.kubeRouterBin == "" || a.registry && c.registryBin == "" {
			continue
		}
		if err := a.run(ctx, b); err != nil {
			return err
		}
		c.log.Info(a.desc, "cluster", p.Name, "elapsed", time.Since(t0).Round(10*time.Millisecond))
	}
	c.log.Info("cluster ready", "cluster", p.Name, "kubeconfig", p.kubeconfig(), "elapsed", time.Since(t0).Round(10*time.Millisecond))
	return nil
}

func setUpNetwork(ctx context.Context, b *boot) error {
	// Recorded first: a namespace that exists always names its owner.
	if err := recordOwner(b.p); err != nil {
		return err
	}
	if err := netns.Setup(ctx, netConfig(b.p)); err != nil {
		return fmt.Errorf("set up network: %w", err)
	}
	if err := cgroups.Create(b.p.systemCgroup()); err != nil {
		return err
	}
	if b.c.noNode {
		return nil // no containerd, no pod cgroups
	}
	return claimContainerdCgroup(b.p)
}

func importPause(ctx context.Context, b *boot) error {
	if err := b.c.importImage(ctx, b.p, b.c.pauseImage); err != nil {
		return withLog(b.p, fmt.Errorf("import pause image %s: %w", b.c.pauseTag, err), Containerd)
	}
	return nil
}

// preflight fails early, with one message naming everything missing,
// rather than half-way through start-up. Installing what is missing is
// the caller's job (cluster.Prepare does it).
func (c *Cluster) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("preflight: must run as root")
	}
	var missing []error
	if c.kubeBin == "" {
		missing = append(missing, errors.New("no kube binary (WithKubeBinary)"))
	} else if _, err := os.Stat(c.kubeBin); err != nil {
		missing = append(missing, fmt.Errorf("kube binary: %w", err))
	}
	tools := []string{"ip", "nsenter", "sysctl", "iptables"}
	if !c.noNode {
		tools = append(tools, "containerd", "containerd-shim-runc-v2", "runc", "ctr", "conntrack")
		if c.pauseImage == "" {
			missing = append(missing, errors.New("no pause image (WithPauseImage)"))
		} else if _, err := os.Stat(c.pauseImage); err != nil {
			missing = append(missing, fmt.Errorf("pause image: %w", err))
		}
		if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
			missing = append(missing, fmt.Errorf("CNI plugins (containernetworking-plugins): %w", err))
		}
	}
	if c.kubeRouterBin != "" {
		if c.noNode {
			missing = append(missing, errors.New("WithNetworkPolicy needs a node: it cannot be used WithoutNode"))
		} else if _, err := os.Stat(c.kubeRouterBin); err != nil {
			missing = append(missing, fmt.Errorf("kube-router binary (WithNetworkPolicy): %w", err))
		}
		tools = append(tools, "ipset", "iptables-save", "iptables-restore")
	}
	if c.registryBin != "" {
		if c.noNode {
			missing = append(missing, errors.New("WithRegistry needs a node: it cannot be used WithoutNode"))
		} else if _, err := os.Stat(c.registryBin); err != nil {
			missing = append(missing, fmt.Errorf("registry binary (WithRegistry): %w", err))
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
		return fmt.Errorf("preflight (cluster.Prepare installs and builds what the local node needs): %w", err)
	}
	return nil
}
