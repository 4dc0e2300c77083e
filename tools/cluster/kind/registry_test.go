package kind

import (
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// No Docker engine runs where this project's tests run, so these check
// what the registry pattern generates; the e2e-kind CI job runs it.

func TestRegistryConfigPatch(t *testing.T) {
	cfg := withRegistryPatch(Config("gmini-e2e", ""))
	if len(cfg.ContainerdConfigPatches) != 1 {
		t.Fatalf("patches = %q", cfg.ContainerdConfigPatches)
	}
	var patch struct {
		Plugins map[string]struct {
			Registry struct {
				ConfigPath string `toml:"config_path"`
			}
		}
	}
	if _, err := toml.Decode(cfg.ContainerdConfigPatches[0], &patch); err != nil {
		t.Fatalf("patch is not TOML: %v", err)
	}
	if got := patch.Plugins["io.containerd.grpc.v1.cri"].Registry.ConfigPath; got != "/etc/containerd/certs.d" {
		t.Errorf("config_path = %q", got)
	}
	// kind validates the whole configuration, patch included, as YAML.
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(b, &back); err != nil || !slices.Equal(back.ContainerdConfigPatches, cfg.ContainerdConfigPatches) {
		t.Errorf("round trip: %v, patches %q", err, back.ContainerdConfigPatches)
	}
}

func TestRegistryContainer(t *testing.T) {
	got := registryRunArgs("gmini-e2e", "registry:3")
	want := []string{"run", "-d", "--restart=always", "--network", "bridge", "-p", "127.0.0.1::5000", "--name", "gmini-e2e-registry", "registry:3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("docker run arguments (-want +got):\n%s", diff)
	}
	// Published on loopback only: nothing outside the machine reaches it.
	if !slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "127.0.0.1:") }) {
		t.Error("the registry port is not bound to loopback")
	}
}

func TestRegistryHostsTOML(t *testing.T) {
	var hosts struct {
		Server string
		Host   map[string]map[string]any
	}
	if _, err := toml.Decode(registryHostsTOML("gmini-e2e"), &hosts); err != nil {
		t.Fatal(err)
	}
	// containerd 1.6 and 1.7 ignore a hosts.toml without a [host] table.
	if _, ok := hosts.Host["http://gmini-e2e-registry:5000"]; !ok || len(hosts.Host) != 1 {
		t.Errorf("hosts = %+v, want one [host] table for the container", hosts)
	}
}

func TestLocalRegistryHosting(t *testing.T) {
	cm := localRegistryHosting("localhost:32768")
	if cm.Namespace != "kube-public" || cm.Name != "local-registry-hosting" {
		t.Errorf("ConfigMap %s/%s", cm.Namespace, cm.Name)
	}
	var v1 struct {
		Host string `json:"host"`
		Help string `json:"help"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["localRegistryHosting.v1"]), &v1); err != nil {
		t.Fatal(err)
	}
	if v1.Host != "localhost:32768" || !strings.HasPrefix(v1.Help, "https://kind.sigs.k8s.io/") {
		t.Errorf("localRegistryHosting.v1 = %+v", v1)
	}
}

func TestRegistryNeedsTheOption(t *testing.T) {
	if _, err := NewCluster("x").Registry(); err == nil || !strings.Contains(err.Error(), "WithRegistry") {
		t.Errorf("Registry() without WithRegistry: %v", err)
	}
	c := NewCluster("x")
	c.WithOpts(WithRegistry())
	if !c.registry {
		t.Error("WithRegistry did not take")
	}
}
