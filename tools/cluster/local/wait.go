package local

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// poll calls check every interval until it returns true, an error, the
// component it depends on exits, or readyTimeout passes. The last "not
// yet" reason goes into the timeout error.
func (c *Cluster) poll(ctx context.Context, component string, check func(context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	c.mu.Lock()
	exited := c.exited[component]
	c.mu.Unlock()
	last := "no answer yet"
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		ok, why, err := check(cctx)
		ccancel()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if why != "" {
			last = why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s: %s", readyTimeout, last)
		case <-exited:
			return fmt.Errorf("%s %w (last check: %s)", component, errExited, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// adminClient is a client with the admin kubeconfig and a short timeout,
// for readiness checks.
func adminClient(p plan) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", p.kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.Timeout = 5 * time.Second
	return kubernetes.NewForConfig(cfg)
}
