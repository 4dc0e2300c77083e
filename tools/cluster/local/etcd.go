package local

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// etcd is the kube binary's etcd (v3.6.4, what kubeadm runs with v1.34), on
// the namespace's loopback only.
var etcd = component{
	name: Etcd,
	kube: true,
	dirs: []string{"etcd"},
	owns: []string{"etcd"},
	// etcd refuses a data directory others can read.
	configure: func(b *boot) error { return os.Chmod(b.p.path("etcd"), 0o700) },
	args: func(b *boot) []string {
		return []string{
			"--name=gmini",
			"--data-dir=" + b.p.path("etcd"),
			"--listen-client-urls=http://127.0.0.1:2379",
			"--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380",
			"--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=gmini=http://127.0.0.1:2380",
		}
	},
	readyDesc: "etcd healthy",
	// /health is asked from inside the namespace, where etcd listens.
	ready: func(ctx context.Context, c *Cluster, p plan) error {
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
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"true"`), string(body), nil
		})
	},
}
