package local

import (
	"context"
	"fmt"
)

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
// first started with; it does nothing if the component runs. For etcd and
// kube-apiserver it waits until they answer.
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
	switch name {
	case Etcd:
		err = c.waitEtcd(ctx, st.Plan)
	case APIServer:
		err = c.waitAPIServer(ctx, st.Plan)
	}
	if err != nil {
		return withLog(st.Plan, fmt.Errorf("start %s: %w", name, err), name)
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
