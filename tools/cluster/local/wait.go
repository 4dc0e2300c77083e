package local

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// poll calls check every interval until it returns true, an error, the
// component it depends on exits, or the ready timeout passes. The last
// "not yet" reason goes into the timeout error.
func (c *Cluster) poll(ctx context.Context, component string, check func(context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, c.readyTime)
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
			return fmt.Errorf("timed out after %s: %s", c.readyTime, last)
		case <-exited:
			return fmt.Errorf("%s %w (last check: %s)", component, errExited, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitEtcd asks etcd's /health from inside the namespace: etcd listens on
// the namespace's loopback only.
func (c *Cluster) waitEtcd(ctx context.Context, p plan) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(p.NetNS)}}
	return c.poll(ctx, Etcd, func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:2379/health", nil)
		if err != nil {
			return false, "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"true"`), string(b), nil
	})
}

func (c *Cluster) waitContainerd(ctx context.Context, p plan) error {
	return c.poll(ctx, Containerd, func(ctx context.Context) (bool, string, error) {
		out, err := exec.CommandContext(ctx, "ctr", "--address", p.containerdSock(), "version").CombinedOutput()
		if err != nil {
			return false, strings.TrimSpace(string(out)), nil
		}
		return true, "", nil
	})
}

func (c *Cluster) clientset(p plan) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", p.kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.Timeout = 5 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (c *Cluster) waitAPIServer(ctx context.Context, p plan) error {
	cs, err := c.clientset(p)
	if err != nil {
		return err
	}
	return c.poll(ctx, APIServer, func(ctx context.Context) (bool, string, error) {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return false, strings.TrimSpace(err.Error() + " " + string(b)), nil
		}
		return true, "", nil
	})
}

func (c *Cluster) waitNodeReady(ctx context.Context, p plan) error {
	cs, err := c.clientset(p)
	if err != nil {
		return err
	}
	return c.poll(ctx, Kubelet, func(ctx context.Context) (bool, string, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, cond.Reason + ": " + cond.Message, nil
			}
		}
		return false, "no Ready condition", nil
	})
}

// waitDefaultServiceAccount: the controller-manager makes it about 9.5 s
// after start, and the apiserver rejects pods of a namespace before then.
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context, p plan) error {
	cs, err := c.clientset(p)
	if err != nil {
		return err
	}
	return c.poll(ctx, ControllerManager, func(ctx context.Context) (bool, string, error) {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

func containsField(s, field string) bool {
	for _, f := range strings.Fields(s) {
		if f == field {
			return true
		}
	}
	return false
}
