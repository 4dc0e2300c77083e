// Package gitops closes the loop from a commit to a running cluster: it
// publishes the repository's manifests as the OCI artifact Flux's
// OCIRepository reads (the format `flux push artifact` writes), installs
// Flux's source-controller and kustomize-controller from their own module
// sources, and reads Argo CD's Application CRD from its module, so the
// examples in examples/gitops are checked against the real thing.
package gitops

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gmini-dev/gmini/tools/images"
)

// Media types of a Flux artifact (fluxcd/pkg/oci).
const (
	ArtifactConfigMediaType  types.MediaType = "application/vnd.cncf.flux.config.v1+json"
	ArtifactContentMediaType types.MediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
)

// ManifestDirs are what the artifact holds of the repository: the bases and
// the overlays, which is all a Kustomization's path needs.
var ManifestDirs = []string{"k8s", "overlays"}

// ArtifactMeta is what `flux push artifact` records with --source and
// --revision, and the creation time.
type ArtifactMeta struct {
	Source   string    // repository URL
	Revision string    // <branch or tag>@sha1:<commit>, as Flux writes it
	Created  time.Time // the commit's time, so the digest depends on the commit only
}

// Artifact packs the directories dirs below root as the OCI artifact
// `flux push artifact` writes: an OCI manifest with Flux's config media
// type, one gzipped tar layer of the files (paths relative to root,
// regular files and directories only, owner 0, no times), and the OCI
// source, revision and created annotations, which source-controller
// reports as the artifact's origin.
func Artifact(root string, dirs []string, meta ArtifactMeta) (v1.Image, error) {
	if meta.Source == "" || meta.Revision == "" || meta.Created.IsZero() {
		return nil, fmt.Errorf("artifact of %s: source, revision and created are required", root)
	}
	layer, err := tarGz(root, dirs)
	if err != nil {
		return nil, fmt.Errorf("artifact of %s: %w", root, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, ArtifactConfigMediaType)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf.Created = v1.Time{Time: meta.Created.UTC()}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	img = mutate.Annotations(img, map[string]string{
		images.AnnotationCreated:  meta.Created.UTC().Format(time.RFC3339),
		images.AnnotationSource:   meta.Source,
		images.AnnotationRevision: meta.Revision,
	}).(v1.Image)
	return mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(layer, ArtifactContentMediaType)})
}

// tarGz is the layer: the root itself as ".", then every directory and
// regular file below each of dirs in lexical order, as fluxcd/pkg/tar
// writes them (symbolic links and other special files are skipped, as
// Flux skips them on extraction). Modes are normalised so the digest
// does not depend on the checkout's umask.
func tarGz(root string, dirs []string) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	write := func(path string, fi fs.FileInfo) error {
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}, time.Time{}
		hdr.Format = tar.FormatUSTAR
		perm := int64(0o644)
		if fi.IsDir() {
			perm = 0o755
		}
		hdr.Mode = hdr.Mode&^0o7777 | perm
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar %s: %w", rel, err)
		}
		if fi.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	}
	rootInfo, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if err := write(root, rootInfo); err != nil {
		return nil, err
	}
	for _, d := range slices.Sorted(slices.Values(dirs)) {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !e.IsDir() && !e.Type().IsRegular() {
				return nil
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			return write(path, fi)
		})
		if err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
