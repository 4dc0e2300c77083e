package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestBuildIndexReproducible builds the runner's published index twice
// from the same commit: same digests, both platforms, each binary for its
// architecture, and the commit in the annotations.
func TestBuildIndexReproducible(t *testing.T) {
	ctx := context.Background()
	root := repoRoot(t)
	meta, err := MetaFromGit(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	spec := Project(root, "unused")[1]
	if spec.Name != "runner" {
		t.Fatalf("Project()[1] is %s, want runner", spec.Name)
	}
	var digests []v1.Hash
	var idx v1.ImageIndex
	for range 2 {
		if idx, err = BuildIndex(ctx, quiet(), spec, meta, Platforms); err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of commit %s gave index digests %s and %s", meta.Revision, digests[0], digests[1])
	}

	wantAnn := map[string]string{
		AnnotationSource:   Source,
		AnnotationRevision: meta.Revision,
		AnnotationCreated:  meta.Created.UTC().Format(time.RFC3339),
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", im.MediaType, types.OCIImageIndex)
	}
	if diff := cmp.Diff(wantAnn, im.Annotations); diff != "" {
		t.Errorf("index annotations (-want +got):\n%s", diff)
	}
	var platforms []string
	for _, desc := range im.Manifests {
		platforms = append(platforms, desc.Platform.String())
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantAnn, m.Annotations); diff != "" {
			t.Errorf("%s manifest annotations (-want +got):\n%s", desc.Platform, diff)
		}
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("%s: media types %s, config %s; want OCI", desc.Platform, m.MediaType, m.Config.MediaType)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Architecture != desc.Platform.Architecture || cfg.OS != "linux" || !cfg.Created.Time.Equal(meta.Created) {
			t.Errorf("%s: config says %s/%s created %s", desc.Platform, cfg.OS, cfg.Architecture, cfg.Created)
		}
		if got := cfg.Config.Labels[AnnotationRevision]; got != meta.Revision {
			t.Errorf("%s: revision label %q, want %q", desc.Platform, got, meta.Revision)
		}
		if got, want := binaryMachine(t, img, "runner"), map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[desc.Platform.Architecture]; got != want {
			t.Errorf("%s: /runner is built for %s, want %s", desc.Platform, got, want)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
}

// binaryMachine reads the ELF header of /file in img's only layer.
func binaryMachine(t *testing.T, img v1.Image, file string) elf.Machine {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the layer: %v", file, err)
		}
		if hdr.Name != file {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s is not ELF: %v", file, err)
		}
		return f.Machine
	}
}

func TestMetaFromGit(t *testing.T) {
	dir := t.TempDir()
	git := func(env []string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(nil, "init", "-q")
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(nil, "add", "f")
	date := "2024-05-06T07:08:09Z"
	git([]string{"GIT_COMMITTER_DATE=" + date, "GIT_AUTHOR_DATE=2001-01-01T00:00:00Z"},
		"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "c")
	m, err := MetaFromGit(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Revision) != 40 || m.Dirty || m.Source != Source {
		t.Errorf("meta = %+v", m)
	}
	if want, _ := time.Parse(time.RFC3339, date); !m.Created.Equal(want) {
		t.Errorf("created %s, want the committer date %s", m.Created, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err := MetaFromGit(context.Background(), dir); err != nil || !m.Dirty {
		t.Errorf("after an edit: %+v, %v; want Dirty", m, err)
	}
	if _, err := MetaFromGit(context.Background(), t.TempDir()); err == nil {
		t.Error("MetaFromGit outside a repository succeeded")
	}
}

// testRegistry is go-containerregistry's in-memory registry behind refuse,
// which answers code instead for the requests it matches.
func testRegistry(t *testing.T, refuse func(*http.Request) bool, code int) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse != nil && refuse(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func testIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// fast fails on the first error instead of retrying for seconds.
var fast = remote.WithRetryBackoff(remote.Backoff{Steps: 1})

func tagExists(t *testing.T, repo name.Repository, tag string) bool {
	t.Helper()
	_, err := remote.Head(repo.Tag(tag), fast)
	return err == nil
}

func TestPush(t *testing.T) {
	host := testRegistry(t, nil, 0)
	repo, err := ParseRepository(host+"/gmini", "gmini-backend")
	if err != nil {
		t.Fatal(err)
	}
	idx := testIndex(t)
	pub, err := Push(context.Background(), repo, idx, []string{"v1.2.3"}, fast)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if pub.Digest.DigestStr() != want.String() || pub.Digest.Context() != repo {
		t.Errorf("published %s, want %s@%s", pub.Digest, repo, want)
	}
	desc, err := remote.Get(repo.Tag("v1.2.3"), fast)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != want || desc.MediaType != types.OCIImageIndex && desc.MediaType != types.DockerManifestList {
		t.Errorf("tag v1.2.3 -> %s (%s), want %s", desc.Digest, desc.MediaType, want)
	}
	if _, err := remote.Index(pub.Digest, fast); err != nil {
		t.Errorf("index not addressable by digest: %v", err)
	}
}

func TestPushRefused(t *testing.T) {
	isWrite := func(r *http.Request) bool { return r.Method != http.MethodGet && r.Method != http.MethodHead }
	isIndexPut := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") &&
			strings.Contains(r.Header.Get("Content-Type"), "index")
	}
	for _, tt := range []struct {
		name   string
		refuse func(*http.Request) bool
		code   int
		want   []string
	}{
		{"401 on every write", isWrite, http.StatusUnauthorized, []string{"refused the push", "401"}},
		{"403 on every write", isWrite, http.StatusForbidden, []string{"refused the push", "403"}},
		// The images went up; the index that would name them did not: the
		// tag must not exist.
		{"403 on the index manifest", isIndexPut, http.StatusForbidden, []string{"refused the push", "403"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host := testRegistry(t, tt.refuse, tt.code)
			repo, err := ParseRepository(host, "gmini-runner")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Push(context.Background(), repo, testIndex(t), []string{"v1"}, fast)
			if err == nil {
				t.Fatal("Push succeeded against a registry that refuses it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tagExists(t, repo, "v1") {
				t.Error("tag v1 exists after a failed push")
			}
		})
	}
}

func TestPushUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	repo, err := ParseRepository(addr, "gmini-backend")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Push(context.Background(), repo, testIndex(t), []string{"v1"}, fast)
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), addr) {
		t.Errorf("err = %v, want it to say %s is unreachable", err, addr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to give up", d)
	}
}

func TestPushBadTag(t *testing.T) {
	var requests int
	host := testRegistry(t, func(*http.Request) bool { requests++; return false }, 0)
	repo, err := ParseRepository(host, "gmini-backend")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), repo, testIndex(t), []string{"not a tag!"}, fast); err == nil || !strings.Contains(err.Error(), "not a tag!") {
		t.Errorf("err = %v, want one naming the bad tag", err)
	}
	if requests != 0 {
		t.Errorf("%d requests reached the registry before the tag was checked", requests)
	}
}

func TestParseRepository(t *testing.T) {
	for _, tt := range []struct {
		registry, want, err string
	}{
		{"ghcr.io/gmini-dev", "ghcr.io/gmini-dev/gmini-backend", ""},
		{"ghcr.io/gmini-dev/", "ghcr.io/gmini-dev/gmini-backend", ""},
		{"198.18.0.2:5000", "198.18.0.2:5000/gmini-backend", ""},
		{"localhost:5001/x", "localhost:5001/x/gmini-backend", ""},
		{"", "", "no registry"},
		{"https://ghcr.io/x", "", "without a scheme"},
		{"ghcr.io/Upper", "", "not a valid repository"},
		{"my registry.io", "", "not a valid repository"},
		{"gmini-dev", "", "not a registry host"},
	} {
		repo, err := ParseRepository(tt.registry, "gmini-backend")
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseRepository(%q): %v", tt.registry, err)
		case tt.err == "" && repo.String() != tt.want:
			t.Errorf("ParseRepository(%q) = %s, want %s", tt.registry, repo, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseRepository(%q) = %v, %v; want an error with %q", tt.registry, repo, err, tt.err)
		}
	}
}
