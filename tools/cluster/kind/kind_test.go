package kind

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func TestConfig(t *testing.T) {
	cfg := Config("gmini-e2e", "kindest/node:v1.34.0")
	if cfg.Name != "gmini-e2e" {
		t.Errorf("Name = %q", cfg.Name)
	}
	if len(cfg.Nodes) != 1 || cfg.Nodes[0].Role != v1alpha4.ControlPlaneRole || cfg.Nodes[0].Image != "kindest/node:v1.34.0" {
		t.Errorf("Nodes = %+v, want one control-plane node with the image", cfg.Nodes)
	}
	n := cfg.Networking
	if n.PodSubnet != PodSubnet || n.ServiceSubnet != ServiceSubnet || n.APIServerAddress != "127.0.0.1" {
		t.Errorf("Networking = %+v", n)
	}

	// kind reads the same settings back from YAML, as in a config file.
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"kind: Cluster", "apiVersion: kind.x-k8s.io/v1alpha4",
		"podSubnet: 198.18.128.0/17", "serviceSubnet: 198.19.0.0/16", "role: control-plane",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("YAML lacks %q:\n%s", want, b)
		}
	}
}

func TestConfigDefaultImage(t *testing.T) {
	if img := Config("x", "").Nodes[0].Image; img != "" {
		t.Errorf("image = %q, want empty so kind picks its default", img)
	}
	// kind's defaulting must fill in its own node image and keep our ranges.
	cfg := Config("x", "")
	v1alpha4.SetDefaultsCluster(cfg)
	if !strings.HasPrefix(cfg.Nodes[0].Image, "kindest/node:") {
		t.Errorf("defaulted image = %q", cfg.Nodes[0].Image)
	}
	if cfg.Networking.PodSubnet != PodSubnet {
		t.Errorf("defaulting replaced the pod subnet: %q", cfg.Networking.PodSubnet)
	}
}

func TestNodeImage(t *testing.T) {
	const v134 = "kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d"
	tests := []struct{ in, want, err string }{
		{in: "v1.34.4", want: v134}, // the local node's version: the same minor on both providers
		{in: "1.34", want: v134},
		{in: "v1.37.2", want: "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5"},
		{in: "v1.29.0", err: "no pinned image for Kubernetes 1.29"},
		{in: "latest", err: "want v1.MINOR"},
		{in: "", err: "want v1.MINOR"},
	}
	for _, tt := range tests {
		got, err := NodeImage(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("NodeImage(%q) = %q, %v; want an error saying %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NodeImage(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for minor, img := range nodeImages {
		if !strings.Contains(img, ":v"+minor+".") || !strings.Contains(img, "@sha256:") || len(img[strings.Index(img, "@sha256:")+8:]) != 64 {
			t.Errorf("node image for %s = %q, want kindest/node:v%s.N@sha256:<64 hex>", minor, img, minor)
		}
	}
}

func TestOptions(t *testing.T) {
	c := NewProvider().WithName("a").WithVersion("v1.34.0").(*Cluster)
	if want, _ := NodeImage("v1.34.0"); c.name != "a" || c.image != want {
		t.Errorf("name %q image %q", c.name, c.image)
	}
	if _, err := NewCluster("old").WithVersion("v1.20.0").Create(context.Background()); err == nil || !strings.Contains(err.Error(), "no pinned image") {
		t.Errorf("Create with an unpinned version: err = %v", err)
	}
	// An explicit image wins over a version, whatever the order.
	c = NewCluster("b").WithOpts(WithImage("my/node:1")).WithVersion("v1.30.0").(*Cluster)
	if c.image != "my/node:1" {
		t.Errorf("image = %q, want my/node:1", c.image)
	}
	if got := c.GetKubectlContext(); got != "kind-b" {
		t.Errorf("GetKubectlContext() = %q", got)
	}
	if got := NewCluster("").name; got != "kind" {
		t.Errorf("default name = %q, want kind", got)
	}
}

// Arguments meant for the kind CLI must be refused, not silently dropped;
// these checks run before kind is asked anything, so they need no Docker.
func TestRejectsCLIArguments(t *testing.T) {
	c := NewCluster("x")
	ctx := context.Background()
	if _, err := c.Create(ctx, "--retain"); err == nil {
		t.Error("Create accepted a CLI argument")
	}
	if err := c.LoadImageArchive(ctx, "/nonexistent.tar", "--nodes=a"); err == nil {
		t.Error("LoadImageArchive accepted a CLI argument")
	}
	if err := c.LoadImage(ctx, "img:dev", "--nodes=a"); err == nil {
		t.Error("LoadImage accepted a CLI argument")
	}
	if _, err := c.GenerateKubeconfig("--bogus"); err == nil {
		t.Error("GenerateKubeconfig accepted an unknown argument")
	}
}

func TestSlogAdapter(t *testing.T) {
	var buf bytes.Buffer
	a := slogAdapter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	a.V(0).Infof("creating %s", "cluster")
	a.V(1).Info("debug detail")
	a.Warnf("careful %d", 1)
	out := buf.String()
	for _, want := range []string{"level=INFO msg=\"creating cluster\"", "level=WARN msg=\"careful 1\""} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "debug detail") {
		t.Errorf("V(1) message logged at info level:\n%s", out)
	}
	if a.V(1).Enabled() || !a.V(0).Enabled() {
		t.Error("Enabled() does not follow the handler level")
	}
}

func TestNodeReady(t *testing.T) {
	node := func(conds ...corev1.NodeCondition) corev1.Node {
		return corev1.Node{Status: corev1.NodeStatus{Conditions: conds}}
	}
	tests := []struct {
		name string
		node corev1.Node
		want bool
	}{
		{"ready", node(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}), true},
		{"not ready", node(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse}), false},
		{"no condition yet", node(), false},
		{"other condition only", node(corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue}), false},
	}
	for _, tt := range tests {
		if got := nodeReady(tt.node); got != tt.want {
			t.Errorf("%s: nodeReady() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
