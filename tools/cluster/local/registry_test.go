package local

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/cluster/local/pki"
)

// testPKI writes a CA into dir the way writePKI does and returns the file
// map configureRegistry reads.
func testPKI(t *testing.T, dir string) map[string]string {
	t.Helper()
	ca, err := pki.NewCA("test-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	crt, err1 := pki.WriteFile(dir, "ca.crt", ca.CertPEM())
	k, err2 := pki.WriteFile(dir, "ca.key", key)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return map[string]string{"ca.crt": crt, "ca.key": k}
}

func TestConfigureRegistry(t *testing.T) {
	p, err := newPlan("reg", t.TempDir(), 5)
	if err != nil {
		t.Fatal(err)
	}
	files := testPKI(t, p.pkiDir())
	if err := configureRegistry(p, files); err != nil {
		t.Fatal(err)
	}
	addr := "198.18.0.22:5000"
	if p.registryAddr() != addr {
		t.Fatalf("registry address %s, want %s (the node address of slot 5)", p.registryAddr(), addr)
	}

	// Distribution's configuration: the node address, TLS from the PKI
	// directory, storage in the run directory, nothing that reaches out.
	raw, err := os.ReadFile(p.path("registry", "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	httpCfg := cfg["http"].(map[string]any)
	if httpCfg["addr"] != addr || httpCfg["secret"] == "" {
		t.Errorf("http = %v", httpCfg)
	}
	tlsCfg := httpCfg["tls"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"certificate": p.path("pki", "registry.crt"), "key": p.path("pki", "registry.key")}, tlsCfg); diff != "" {
		t.Errorf("tls (-want +got):\n%s", diff)
	}
	if got := cfg["storage"].(map[string]any)["filesystem"].(map[string]any)["rootdirectory"]; got != p.path("registry", "data") {
		t.Errorf("storage root %v, want %s", got, p.path("registry", "data"))
	}
	for _, key := range []string{"notifications", "proxy", "redis", "auth", "reporting"} {
		if _, ok := cfg[key]; ok {
			t.Errorf("config has %q, which talks to other hosts", key)
		}
	}
	if _, ok := httpCfg["letsencrypt"]; ok {
		t.Error("config asks for ACME certificates")
	}

	// The certificate names the node address and chains to the cluster CA.
	caPEM, _ := os.ReadFile(files["ca.crt"])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	crtPEM, err := os.ReadFile(p.path("pki", "registry.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(crtPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "198.18.0.22", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("registry certificate for 198.18.0.22: %v", err)
	}

	// containerd's hosts.toml: a [host] table (without one containerd 1.6
	// ignores the file), HTTPS, the CA, pull and resolve only.
	var hosts struct {
		Server string
		Host   map[string]struct {
			Capabilities []string
			CA           string
		}
	}
	md, err := toml.DecodeFile(filepath.Join(p.hostsDir(), addr, "hosts.toml"), &hosts)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Undecoded()) > 0 {
		t.Errorf("hosts.toml has keys this test does not know: %v", md.Undecoded())
	}
	if hosts.Server != "https://"+addr {
		t.Errorf("server = %q", hosts.Server)
	}
	h, ok := hosts.Host["https://"+addr]
	if !ok {
		t.Fatalf("no [host.\"https://%s\"] table: %+v", addr, hosts)
	}
	if diff := cmp.Diff([]string{"pull", "resolve"}, h.Capabilities); diff != "" || h.CA != files["ca.crt"] {
		t.Errorf("host table: capabilities %v, ca %q; want pull, resolve and %s", h.Capabilities, h.CA, files["ca.crt"])
	}
}

// containerd reads the hosts.toml files through config_path, a root
// without ':' (a list separator to containerd).
func TestContainerdConfigPath(t *testing.T) {
	p, err := newPlan("dev", "/x/run", 3)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Plugins map[string]struct {
			Registry struct {
				ConfigPath string `toml:"config_path"`
				Mirrors    map[string]any
				Configs    map[string]any
			}
		}
	}
	if _, err := toml.Decode(containerdConfig(p, "gmini-pause:dev", "overlayfs"), &cfg); err != nil {
		t.Fatal(err)
	}
	reg := cfg.Plugins["io.containerd.grpc.v1.cri"].Registry
	if reg.ConfigPath != "/x/run/containerd/certs.d" {
		t.Errorf("config_path = %q, want /x/run/containerd/certs.d", reg.ConfigPath)
	}
	// containerd 1.6 refuses to start with config_path and mirrors or
	// per-host TLS configs together.
	if reg.Mirrors != nil || reg.Configs != nil {
		t.Errorf("registry mirrors %v, configs %v: not allowed with config_path", reg.Mirrors, reg.Configs)
	}

	bad, err := newPlan("dev", "/x/a:b", 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := configureRegistry(bad, nil); err == nil || !strings.Contains(err.Error(), "':'") {
		t.Errorf("run directory with ':': err = %v", err)
	}
}
