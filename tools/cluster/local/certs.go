package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
	"github.com/gmini-dev/gmini/tools/cluster/local/pki"
)

func netConfig(p plan) netns.Config {
	return netns.Config{
		Name:     p.NetNS,
		HostLink: p.HostLink,
		HostAddr: netip.MustParsePrefix(p.HostAddr),
		NodeAddr: netip.MustParsePrefix(p.NodeAddr),
		Routed:   []netip.Prefix{netip.MustParsePrefix(p.PodCIDR), netip.MustParsePrefix(p.ServiceCIDR)},
	}
}

// writePKI issues every certificate and records the file paths by name
// (ca.crt, apiserver.key, ...) and the kubeconfig paths by identity in
// b.files.
func writePKI(_ context.Context, b *boot) error {
	p := b.p
	if err := os.MkdirAll(p.pkiDir(), 0o755); err != nil {
		return fmt.Errorf("make run directory: %w", err)
	}
	now := time.Now()
	ca, err := pki.NewCA("gmini-"+p.Name+"-ca", now)
	if err != nil {
		return err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	files := b.files
	put := func(name string, data []byte) error {
		path, err := pki.WriteFile(p.pkiDir(), name, data)
		files[name] = path
		return err
	}
	if err := errors.Join(put("ca.crt", ca.CertPEM()), put("ca.key", caKey)); err != nil {
		return err
	}
	saPub, saKey, err := pki.ServiceAccountKey()
	if err != nil {
		return err
	}
	if err := errors.Join(put("sa.pub", saPub), put("sa.key", saKey)); err != nil {
		return err
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
	kubeconfigs := []string{"controller-manager", "scheduler", "kube-proxy", "kubelet"}
	if b.c.kubeRouterBin != "" {
		certs["kube-router"] = pki.Spec{CommonName: kubeRouterUser, Client: true}
		kubeconfigs = append(kubeconfigs, "kube-router")
	}
	// The aggregation layer (Kueue's visibility API) proxies requests to
	// extension API servers with a client certificate of its own CA, as
	// kubeadm sets it up: extension servers trust the user it names only
	// from that CA, so no ordinary client certificate can claim to be the
	// proxy.
	frontCA, err := pki.NewCA("gmini-"+p.Name+"-front-proxy-ca", now)
	if err != nil {
		return err
	}
	front, err := frontCA.Issue(pki.Spec{CommonName: frontProxyUser, Client: true}, now)
	if err != nil {
		return err
	}
	if err := errors.Join(put("front-proxy-ca.crt", frontCA.CertPEM()),
		put("front-proxy-client.crt", front.CertPEM), put("front-proxy-client.key", front.KeyPEM)); err != nil {
		return err
	}
	pairs := map[string]pki.KeyPair{}
	for name, spec := range certs {
		kp, err := ca.Issue(spec, now)
		if err != nil {
			return err
		}
		pairs[name] = kp
		if err := errors.Join(put(name+".crt", kp.CertPEM), put(name+".key", kp.KeyPEM)); err != nil {
			return err
		}
	}
	// Components inside the namespace use loopback; the admin kubeconfig
	// is for the host and uses the node address through the veth.
	inside := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	for _, id := range kubeconfigs {
		path := filepath.Join(p.pkiDir(), id+".kubeconfig")
		if err := writeKubeconfig(path, inside, "gmini-"+p.Name, ca.CertPEM(), pairs[id].CertPEM, pairs[id].KeyPEM); err != nil {
			return err
		}
		files[id+".kubeconfig"] = path
	}
	return writeKubeconfig(p.kubeconfig(), p.serverURL(), b.c.GetKubectlContext(), ca.CertPEM(), pairs["admin"].CertPEM, pairs["admin"].KeyPEM)
}
