package promote

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/internal/layout"
)

const (
	backendDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	runnerDigest  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// in has comments everywhere kyaml could lose them: the head, between
// keys, inside images: and at the end of lines.
const in = `# Production. The release workflow promotes the images.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: gmini # the overlay's own namespace
resources:
  - namespace.yaml
  - ../../k8s/base
# Pinned by digest.
images:
  # the API
  - name: gmini-backend
    newName: ghcr.io/gmini-dev/gmini-backend
    newTag: v0.1.0 # replaced by a digest
  - name: gmini-runner
    newName: ghcr.io/gmini-dev/gmini-runner
    newTag: v0.1.0
replicas:
  - name: gmini-backend
    count: 2
# trailing comment
`

const want = `# Production. The release workflow promotes the images.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: gmini # the overlay's own namespace
resources:
  - namespace.yaml
  - ../../k8s/base
# Pinned by digest.
images:
  # the API
  - name: gmini-backend
    newName: 198.18.0.2:5000/gmini-backend
    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
  - name: gmini-runner
    newName: 198.18.0.2:5000/gmini-runner
    digest: sha256:2222222222222222222222222222222222222222222222222222222222222222
replicas:
  - name: gmini-backend
    count: 2
# trailing comment
`

var imgs = []Image{
	{Name: "gmini-backend", NewName: "198.18.0.2:5000/gmini-backend", Digest: backendDigest},
	{Name: "gmini-runner", NewName: "198.18.0.2:5000/gmini-runner", Digest: runnerDigest},
}

func TestSetKeepsCommentsAndOrder(t *testing.T) {
	got, err := Set([]byte(in), imgs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Set (-want +got):\n%s", diff)
	}
	again, err := Set(got, imgs)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(got) {
		t.Errorf("a second promotion to the same digests changed the file:\n%s", again)
	}
}

// The entries read back as kustomize's own Image type says `kustomize edit
// set image gmini-backend=NEWNAME@DIGEST` leaves them: newName and digest,
// no newTag.
func TestSetAsKustomizeEditSetImage(t *testing.T) {
	got, err := Set([]byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n- name: gmini-runner\n  newTag: dev\n"), imgs)
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(got, &k); err != nil {
		t.Fatal(err)
	}
	wantImages := []types.Image{
		{Name: "gmini-runner", NewName: "198.18.0.2:5000/gmini-runner", Digest: runnerDigest},
		{Name: "gmini-backend", NewName: "198.18.0.2:5000/gmini-backend", Digest: backendDigest},
	}
	if diff := cmp.Diff(wantImages, k.Images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

// kustomize renders a promoted overlay with the digests.
func TestPromotedOverlayRenders(t *testing.T) {
	fs := filesys.MakeFsInMemory()
	files := map[string]string{
		"/app/base/kustomization.yaml": "resources:\n- deployment.yaml\n",
		"/app/base/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: gmini-backend
spec:
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec:
      containers:
      - name: backend
        image: gmini-backend
      - name: runner
        image: gmini-runner
`,
		"/app/prod/kustomization.yaml": in,
		"/app/prod/namespace.yaml":     "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gmini\n",
	}
	for path, content := range files {
		if err := fs.WriteFile(path, []byte(strings.ReplaceAll(content, "../../k8s/base", "../base"))); err != nil {
			t.Fatal(err)
		}
	}
	promoted, err := Set([]byte(strings.ReplaceAll(in, "../../k8s/base", "../base")), imgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFile("/app/prod/kustomization.yaml", promoted); err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/app/prod")
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imgs {
		if !strings.Contains(string(out), "image: "+im.Ref()) {
			t.Errorf("rendered overlay lacks image %s:\n%s", im.Ref(), out)
		}
	}
}

func TestSetRefusesBadInput(t *testing.T) {
	for name, tt := range map[string]struct {
		data string
		imgs []Image
	}{
		"digest not sha256":   {in, []Image{{Name: "gmini-backend", NewName: "ghcr.io/x/gmini-backend", Digest: "v1"}}},
		"no name":             {in, []Image{{NewName: "ghcr.io/x/gmini-backend", Digest: backendDigest}}},
		"bad repository":      {in, []Image{{Name: "gmini-backend", NewName: "ghcr.io/X Y", Digest: backendDigest}}},
		"not a kustomization": {"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", imgs},
		"two documents":       {in + "---\n" + in, imgs},
	} {
		if _, err := Set([]byte(tt.data), tt.imgs); err == nil {
			t.Errorf("%s: Set succeeded", name)
		}
	}
}

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kustomization.yaml")
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, wantChanged := range []bool{true, false} {
		changed, err := File(path, imgs)
		if err != nil || changed != wantChanged {
			t.Errorf("File, run %d: changed %v, %v; want %v", i+1, changed, err, wantChanged)
		}
	}
	got, _ := os.ReadFile(path)
	if string(got) != want {
		t.Errorf("file after promotion:\n%s", got)
	}
	if _, err := File(filepath.Join(t.TempDir(), "missing.yaml"), imgs); err == nil {
		t.Error("File on a missing file succeeded")
	}
}

func TestResolve(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	idx, err := random.Index(64, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(host + "/gmini-backend:v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := idx.Digest()
	got, err := Resolve(context.Background(), tag)
	if err != nil || got != wantDigest.String() {
		t.Errorf("Resolve = %s, %v; want %s", got, err, wantDigest)
	}
	missing, _ := name.NewTag(host + "/gmini-backend:v9")
	if _, err := Resolve(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "v9") {
		t.Errorf("Resolve of a missing tag: %v", err)
	}
}

// Promoting the repository's own prod overlay changes its image entries
// and nothing else: every other line, comments included, stays.
func TestPromoteProdOverlay(t *testing.T) {
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(l.Path("overlays", "prod", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	after, err := Set(before, []Image{
		{Name: "gmini-backend", NewName: "ghcr.io/gmini-dev/gmini-backend", Digest: backendDigest},
		{Name: "gmini-runner", NewName: "ghcr.io/gmini-dev/gmini-runner", Digest: runnerDigest},
	})
	if err != nil {
		t.Fatal(err)
	}
	imageLine := func(s string) bool {
		s = strings.TrimSpace(s)
		return strings.HasPrefix(s, "newTag:") || strings.HasPrefix(s, "digest:")
	}
	keep := func(b []byte) []string {
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			if !imageLine(line) {
				out = append(out, line)
			}
		}
		return out
	}
	if diff := cmp.Diff(keep(before), keep(after)); diff != "" {
		t.Errorf("promotion changed more than the image entries (-before +after):\n%s", diff)
	}
	for _, d := range []string{backendDigest, runnerDigest} {
		if !strings.Contains(string(after), "digest: "+d) {
			t.Errorf("promoted overlay lacks digest %s:\n%s", d, after)
		}
	}
}
