package kindnode

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
)

func TestDefaultStorage(t *testing.T) {
	t.Parallel()
	docs := strings.Split(defaultStorage(), "\n---\n")
	if len(docs) != 1+volumes {
		t.Fatalf("%d documents, want a StorageClass and %d volumes", len(docs), volumes)
	}
	for i, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, d)
		}
		want := "PersistentVolume"
		if i == 0 {
			want = "StorageClass"
		}
		if obj["kind"] != want {
			t.Errorf("document %d is a %v, want %s", i, obj["kind"], want)
		}
	}
}

// TestKindRemovals: the removals of kind's Dockerfile, written for paths
// under /lib, find what a merged-/usr root file system has under /usr/lib.
func TestKindRemovals(t *testing.T) {
	t.Parallel()
	idx := &rootfsIndex{paths: map[string]*tar.Header{
		"/lib": {Typeflag: tar.TypeSymlink, Linkname: "usr/lib"},
		"/usr/lib/systemd/system/multi-user.target.wants/getty.target":                {Typeflag: tar.TypeSymlink},
		"/etc/systemd/system/multi-user.target.wants/containerd.service":              {Typeflag: tar.TypeSymlink},
		"/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service":            {Typeflag: tar.TypeSymlink},
		"/usr/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service": {Typeflag: tar.TypeSymlink},
	}}
	removed := map[string]bool{}
	for _, pattern := range []string{"/lib/systemd/system/multi-user.target.wants/*", "/etc/systemd/system/*.wants/*"} {
		for _, p := range idx.glob(idx.canonical(pattern)) {
			removed[p] = true
		}
	}
	for _, want := range []string{
		"/usr/lib/systemd/system/multi-user.target.wants/getty.target",
		"/etc/systemd/system/multi-user.target.wants/containerd.service",
		"/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service",
	} {
		if !removed[want] {
			t.Errorf("%s not matched by kind's removals", want)
		}
	}
}

func TestWriteTar(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	err := writeTar(&buf, []entry{
		whiteout("/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service"),
		link("/usr/bin/kubelet", "kube"),
		{Name: "/var/local-volumes/pv0", Mode: 0o777, Dir: true},
		file("/kind/version", 0o644, "v1.34.4"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*tar.Header{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h
	}
	for name, check := range map[string]func(*tar.Header) bool{
		"etc/systemd/system/multi-user.target.wants/.wh.e2scrub_reap.service": func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg },
		"usr/bin/kubelet":        func(h *tar.Header) bool { return h.Linkname == "kube" },
		"var/local-volumes/pv0/": func(h *tar.Header) bool { return h.Mode == 0o777 },
		"var/local-volumes/":     func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir },
		"kind/version":           func(h *tar.Header) bool { return h.Size == int64(len("v1.34.4")) },
	} {
		if h, ok := got[name]; !ok || !check(h) {
			t.Errorf("%s: %+v", name, h)
		}
	}
}

func TestOfflineImageConfig(t *testing.T) {
	t.Parallel()
	img := kind.OfflineNodeImage("v1.34.4")
	if img != "gmini.local/kind-node:1.34.4-gmini" || !kind.IsOffline(img) {
		t.Fatalf("OfflineNodeImage = %s", img)
	}
	cfg := kind.Config("gmini-kind", img)
	if !cfg.Networking.DisableDefaultCNI || len(cfg.KubeadmConfigPatches) != 1 ||
		!strings.Contains(cfg.KubeadmConfigPatches[0], "imageRepository: "+Repository) ||
		!strings.Contains(cfg.KubeadmConfigPatches[0], `imageTag: "`+EtcdTag+`"`) {
		t.Errorf("offline config: CNI disabled %v, patches %q", cfg.Networking.DisableDefaultCNI, cfg.KubeadmConfigPatches)
	}
	if cfg.Networking.PodSubnet != PodSubnet {
		t.Errorf("pod subnet %s, the node's CNI uses %s", cfg.Networking.PodSubnet, PodSubnet)
	}
	pinned := kind.Config("gmini-kind", "kindest/node:v1.34.11")
	if pinned.Networking.DisableDefaultCNI || len(pinned.KubeadmConfigPatches) != 0 {
		t.Errorf("kindest/node config changed: %+v", pinned.Networking)
	}
}

// TestCriToolsModule: the crictl module requires the cri-tools release
// CriTools stamps, and builds crictl as a tool of its own.
func TestCriToolsModule(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("crictl", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\ntool sigs.k8s.io/cri-tools/cmd/crictl\n",
		"\tsigs.k8s.io/cri-tools " + CriToolsVersion + " ",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("tools/kindnode/crictl/go.mod lacks %q", strings.TrimSpace(want))
		}
	}
}
