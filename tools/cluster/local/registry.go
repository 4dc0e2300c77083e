package local

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
	"github.com/gmini-dev/gmini/tools/cluster/local/pki"
	"github.com/gmini-dev/gmini/tools/images"
)

// RegistryPort is where the node's registry listens, on the node address.
const RegistryPort = 5000

// registry is CNCF Distribution's registry, a host process in the node's
// namespace like the other components, serving TLS on the node address
// with a certificate of the cluster's CA. Images pushed to it from the
// host (over the veth) are pulled by the node's containerd, which trusts
// that CA through a hosts.toml (containerdConfig's config_path), as any
// cluster pulls from a private registry; pods reach it at the same
// address. Its blobs live in the run directory.
var registry = component{
	name: Registry,
	node: true,
	owns: []string{"registry"},
	// No OpenTelemetry exporter: by default it sends traces to an OTLP
	// endpoint every few seconds.
	prefix: func(b *boot) []string {
		return []string{"env", "OTEL_TRACES_EXPORTER=none", b.c.registryBin}
	},
	configure: func(b *boot) error { return configureRegistry(b.p, b.files) },
	args: func(b *boot) []string {
		return []string{"serve", b.p.path("registry", "config.yml")}
	},
	readyDesc: "registry ready",
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		ca, err := os.ReadFile(p.path("pki", "ca.crt"))
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		hc := &http.Client{Transport: &http.Transport{
			DialContext:     netns.Dialer(p.NetNS),
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
		url := "https://" + p.registryAddr() + "/v2/"
		return c.poll(ctx, Registry, func(ctx context.Context) (bool, string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return false, "", err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return false, err.Error(), nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, "GET " + url + ": " + resp.Status, nil
		})
	},
}

// WithRegistry runs a registry (registryBinary, which cluster.Prepare
// builds) on the node; Registry says where it is. It needs a node.
func WithRegistry(registryBinary string) Option {
	return func(c *Cluster) { c.registryBin = registryBinary }
}

// registryAddr is the registry's host:port: the node address, which the
// host reaches over the veth and pods through the bridge.
func (p plan) registryAddr() string {
	return netip.AddrPortFrom(p.nodeIP(), RegistryPort).String()
}

// hostsDir is containerd's config_path: one directory per registry host,
// each with a hosts.toml. containerd splits config_path at ':' (a list of
// roots), so the root itself must not contain one; the host:port
// directories below it may.
func (p plan) hostsDir() string { return p.path("containerd", "certs.d") }

func configureRegistry(p plan, files map[string]string) error {
	if strings.Contains(p.hostsDir(), ":") {
		return fmt.Errorf("run directory %s contains ':', which containerd's config_path reads as a list separator", p.RunDir)
	}
	caPEM, err1 := os.ReadFile(files["ca.crt"])
	keyPEM, err2 := os.ReadFile(files["ca.key"])
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("read cluster CA: %w", err)
	}
	ca, err := pki.LoadCA(caPEM, keyPEM)
	if err != nil {
		return err
	}
	kp, err := ca.Issue(pki.Spec{CommonName: "gmini-registry", Server: true, IPs: []net.IP{p.nodeIP().AsSlice()}}, time.Now())
	if err != nil {
		return err
	}
	dir := p.path("registry")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return fmt.Errorf("make registry directory: %w", err)
	}
	certPath, err1 := pki.WriteFile(p.pkiDir(), "registry.crt", kp.CertPEM)
	keyPath, err2 := pki.WriteFile(p.pkiDir(), "registry.key", kp.KeyPEM)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	cfg, err := registryConfig(p, certPath, keyPath, hex.EncodeToString(secret))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), cfg, 0o600); err != nil {
		return fmt.Errorf("write registry config: %w", err)
	}
	hosts := filepath.Join(p.hostsDir(), p.registryAddr())
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return fmt.Errorf("make containerd hosts directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(hostsTOML(p.registryAddr(), files["ca.crt"])), 0o644); err != nil {
		return fmt.Errorf("write hosts.toml: %w", err)
	}
	return nil
}

// registryConfig is Distribution's configuration: TLS on the node address,
// storage in the run directory, anonymous access, and nothing that talks
// to another host (no notifications, proxy, redis, token auth or ACME).
// Upload purging is off: its goroutine only matters for long-lived
// registries. Deletes are allowed so a test can remove what it pushed.
func registryConfig(p plan, certPath, keyPath, secret string) ([]byte, error) {
	return yaml.Marshal(map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     "info",
			"formatter": "text",
			"accesslog": map[string]any{"disabled": false},
		},
		"storage": map[string]any{
			"filesystem":  map[string]any{"rootdirectory": p.path("registry", "data")},
			"delete":      map[string]any{"enabled": true},
			"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
			"cache":       map[string]any{"blobdescriptor": "inmemory"},
		},
		"http": map[string]any{
			"addr":   p.registryAddr(),
			"secret": secret,
			"tls":    map[string]any{"certificate": certPath, "key": keyPath},
		},
		"health": map[string]any{
			"storagedriver": map[string]any{"enabled": true, "interval": "10s", "threshold": 3},
		},
	})
}

// hostsTOML makes containerd reach host over HTTPS, trusting ca. containerd
// 1.6 ignores, with only a logged error, a hosts.toml without a [host]
// table, and would then fall back to other defaults.
func hostsTOML(host, ca string) string {
	return fmt.Sprintf(`server = "https://%[1]s"

[host."https://%[1]s"]
  capabilities = ["pull", "resolve"]
  ca = %[2]q
`, host, ca)
}

// Registry is the node's registry, once Create has started it: the host
// pushes to it and image references name it at the node address, which
// pods reach too; its certificate is issued by the cluster's CA.
func (c *Cluster) Registry() (images.Registry, error) {
	st, err := c.loadState()
	if err != nil {
		return images.Registry{}, err
	}
	if _, ok := st.Components[Registry]; !ok {
		return images.Registry{}, fmt.Errorf("cluster %s runs no registry (create it WithRegistry)", c.name)
	}
	ca, err := os.ReadFile(st.Plan.path("pki", "ca.crt"))
	if err != nil {
		return images.Registry{}, fmt.Errorf("cluster %s: registry CA: %w", c.name, err)
	}
	addr := st.Plan.registryAddr()
	return images.Registry{Host: addr, InCluster: addr, CA: ca}, nil
}
