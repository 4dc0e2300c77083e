package local

import (
	"context"
	"fmt"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
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
	KubeRouter        = "kube-router" // only WithNetworkPolicy
	Registry          = "registry"    // only WithRegistry
)

// component is one process of the cluster: everything about it (its
// configuration files, its command line, how to tell it is ready) lives in
// its own file, next to this definition's value.
type component struct {
	name string
	// node components run only when the cluster has a node.
	node bool
	// kube components are the multi-call kube binary's; others are
	// programs from the host's packages, unless prefix names the program.
	kube bool
	// prefix, if set, starts the command line instead of the component's
	// name: a program that is neither, and what runs it.
	prefix func(b *boot) []string
	// configure writes the component's configuration files; nil if none.
	configure func(b *boot) error
	// args is its command line without the program.
	args func(b *boot) []string
	// ready waits until it serves; nil if nothing waits for it.
	ready func(ctx context.Context, c *Cluster, p plan) error
	// readyDesc is the progress line once ready returns.
	readyDesc string
	// explain names the components whose logs explain a failed ready.
	explain []string
	// dirs are the run directory's directories it needs before it starts.
	dirs []string
	// owns is what it leaves in the run directory: Destroy removes it with
	// the cluster's data.
	owns []string
	// beforeStop runs just before Destroy stops it, if it runs.
	beforeStop func(ctx context.Context, p plan) error
	// cleanup undoes, once Destroy stopped it, what it made outside its
	// process: iptables rules, containers, mounts' users.
	cleanup func(ctx context.Context, st *state) error
}

// components lists every component, for StartComponent.
func components() []component {
	return []component{etcd, apiServer, controllerManager, scheduler, containerd, kubelet, kubeProxy, kubeRouter, registry}
}

// command is the full argv, run inside the cluster's network namespace.
func (comp component) command(b *boot) []string {
	if comp.kube {
		return netns.Command(b.p.NetNS, b.c.kubeBin, append([]string{comp.name}, comp.args(b)...)...)
	}
	if comp.prefix != nil {
		pre := comp.prefix(b)
		return netns.Command(b.p.NetNS, pre[0], append(pre[1:], comp.args(b)...)...)
	}
	return netns.Command(b.p.NetNS, comp.name, comp.args(b)...)
}

func (comp component) waitReady(ctx context.Context, c *Cluster, p plan) error {
	if comp.ready == nil {
		return nil
	}
	if err := comp.ready(ctx, c, p); err != nil {
		return withLog(p, fmt.Errorf("wait for %s: %w", comp.name, err), append([]string{comp.name}, comp.explain...)...)
	}
	return nil
}

// StopComponent stops one running component (SIGTERM, then SIGKILL after a
// grace period), keeping its record so StartComponent can start it again
// with the same flags. Reliability tests use it to take the API server
// away and bring it back.
func (c *Cluster) StopComponent(ctx context.Context, name string) error {
	st, err := c.loadState()
	if err != nil {
		return err
	}
	pr, ok := st.Components[name]
	if !ok {
		return fmt.Errorf("stop %s: not a component of cluster %s", name, c.name)
	}
	if err := stopProc(ctx, pr, c.stopGrace); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	c.log.Info("component stopped", "cluster", c.name, "component", name)
	return nil
}

// StartComponent starts a stopped component again with the flags it was
// first started with, and waits until it is ready; it does nothing if the
// component runs.
func (c *Cluster) StartComponent(ctx context.Context, name string) error {
	st, err := c.loadState()
	if err != nil {
		return err
	}
	pr, ok := st.Components[name]
	if !ok {
		return fmt.Errorf("start %s: not a component of cluster %s", name, c.name)
	}
	if running(pr) {
		return nil
	}
	if err := c.startProc(st, name, pr.Argv); err != nil {
		return err
	}
	for _, comp := range components() {
		if comp.name == name {
			if err := comp.waitReady(ctx, c, st.Plan); err != nil {
				return fmt.Errorf("start %s: %w", name, err)
			}
		}
	}
	c.log.Info("component started", "cluster", c.name, "component", name)
	return nil
}

func (c *Cluster) loadState() (*state, error) {
	p, err := c.plan()
	if err != nil {
		return nil, err
	}
	st, err := readState(p.stateFile())
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("cluster %s: no state file at %s (not created?)", c.name, p.stateFile())
	}
	return st, nil
}

// PID is the process ID of a running component, for tests that act on the
// process itself (freeze it, kill it). 0 and an error if it is not running.
func (c *Cluster) PID(name string) (int, error) {
	st, err := c.loadState()
	if err != nil {
		return 0, err
	}
	pr, ok := st.Components[name]
	if !ok || !running(pr) {
		return 0, fmt.Errorf("cluster %s: %s is not running", c.name, name)
	}
	return pr.PID, nil
}
