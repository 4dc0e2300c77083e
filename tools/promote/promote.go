// Package promote pins an environment's images to digests: it resolves
// each image's tag in the registry it was pushed to and writes the digest
// into the overlay's kustomization.yaml, the change `kustomize edit set
// image NAME=NEWNAME@DIGEST` makes, but through kyaml, so the file's
// comments, order and indentation stay as people wrote them.
package promote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// Image is one entry of a kustomization's images: the name the bases use
// (gmini-backend), and what it becomes.
type Image struct {
	Name    string
	NewName string // repository, e.g. ghcr.io/gmini-dev/gmini-backend
	Digest  string // sha256:...
}

// Ref is the reference the entry makes kustomize write, NewName@Digest.
func (im Image) Ref() string { return im.NewName + "@" + im.Digest }

func (im Image) validate() error {
	if im.Name == "" {
		return errors.New("image entry without a name")
	}
	if _, err := name.NewDigest(im.Ref(), name.StrictValidation); err != nil {
		return fmt.Errorf("image %s: %q is not a repository@sha256:digest reference: %w", im.Name, im.Ref(), err)
	}
	return nil
}

// Resolve asks the registry which digest tag names, as `crane digest`
// does: for a multi-platform image, the index's digest.
func Resolve(ctx context.Context, tag name.Tag, opts ...remote.Option) (string, error) {
	desc, err := remote.Head(tag, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", tag, err)
	}
	return desc.Digest.String(), nil
}

// Set returns the kustomization in data with each image's entry (matched
// by name) pointing at NewName@Digest: newName and digest set, newTag
// removed, other fields kept; an image without an entry gets one at the
// end of images:. Everything else, comments included, is left as it was.
func Set(data []byte, imgs []Image) ([]byte, error) {
	for _, im := range imgs {
		if err := im.validate(); err != nil {
			return nil, err
		}
	}
	nodes, err := (&kio.ByteReader{Reader: bytes.NewReader(data), PreserveSeqIndent: true}).Read()
	if err != nil {
		return nil, fmt.Errorf("parse kustomization: %w", err)
	}
	if len(nodes) != 1 {
		return nil, fmt.Errorf("kustomization: %d YAML documents, want 1", len(nodes))
	}
	k := nodes[0]
	if kind := k.GetKind(); kind != "Kustomization" {
		return nil, fmt.Errorf("kind %q, want Kustomization", kind)
	}
	list, err := k.Pipe(yaml.LookupCreate(yaml.SequenceNode, "images"))
	if err != nil {
		return nil, fmt.Errorf("kustomization images: %w", err)
	}
	for _, im := range imgs {
		entry, err := list.Pipe(yaml.MatchElement("name", im.Name))
		if err != nil {
			return nil, fmt.Errorf("kustomization images %s: %w", im.Name, err)
		}
		if entry == nil {
			entry = yaml.NewMapRNode(&map[string]string{"name": im.Name})
			if err := list.PipeE(yaml.Append(entry.YNode())); err != nil {
				return nil, fmt.Errorf("add image %s: %w", im.Name, err)
			}
		}
		if err := entry.PipeE(yaml.SetField("newName", yaml.NewStringRNode(im.NewName))); err != nil {
			return nil, err
		}
		if _, err := entry.Pipe(yaml.Clear("newTag")); err != nil {
			return nil, err
		}
		if err := entry.PipeE(yaml.SetField("digest", yaml.NewStringRNode(im.Digest))); err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	if err := (kio.ByteWriter{Writer: &out}).Write(nodes); err != nil {
		return nil, fmt.Errorf("write kustomization: %w", err)
	}
	return out.Bytes(), nil
}

// File applies Set to the kustomization file at path, writing it only if
// it changes; it reports whether it did.
func File(path string, imgs []Image) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("promote: %w", err)
	}
	out, err := Set(data, imgs)
	if err != nil {
		return false, fmt.Errorf("promote %s: %w", path, err)
	}
	if bytes.Equal(out, data) {
		return false, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("promote: %w", err)
	}
	// Replace, not truncate: a reader never sees half a file.
	tmp := path + ".promote.tmp"
	if err := os.WriteFile(tmp, out, fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("promote: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("promote: %w", err)
	}
	return true, nil
}

// Describe is a one-line summary for a commit or a log, e.g.
// "gmini-backend=ghcr.io/x/gmini-backend@sha256:...".
func Describe(imgs []Image) string {
	var parts []string
	for _, im := range imgs {
		parts = append(parts, im.Name+"="+im.Ref())
	}
	return strings.Join(parts, " ")
}
