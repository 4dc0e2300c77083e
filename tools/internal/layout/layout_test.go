package layout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "tools", "cluster", "local")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, start := range []string{root, deep} {
		l, err := Find(start)
		if err != nil {
			t.Fatalf("Find(%s): %v", start, err)
		}
		if l.Root != root {
			t.Errorf("Find(%s).Root = %s, want %s", start, l.Root, root)
		}
	}
	l := Layout{Root: root}
	for got, want := range map[string]string{
		l.KubeBinary():         root + "/_output/bin/kube",
		l.ClusterDir("e2e"):    root + "/_output/cluster/e2e",
		l.Overlay("dev"):       root + "/overlays/dev",
		l.Logs("reliability"):  root + "/_output/logs/reliability",
		l.KubeModule():         root + "/tools/kube",
		l.KubeRouterBinary():   root + "/_output/bin/kube-router",
		l.KubeRouterModule():   root + "/tools/kuberouter",
		l.Backend():            root + "/apps/backend",
		l.Images():             root + "/_output/images",
		l.Bin("backend"):       root + "/_output/bin/backend",
		l.Output("x", "y.log"): root + "/_output/x/y.log",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

func TestFindOutsideACheckout(t *testing.T) {
	_, err := Find(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "no go.work") {
		t.Errorf("Find outside a checkout: err = %v, want one saying there is no go.work", err)
	}
}
