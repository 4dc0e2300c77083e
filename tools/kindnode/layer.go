package kindnode

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one file of a layer: a regular file from Src or Data, a
// symbolic link to Link, a directory, or a whiteout (Remove).
type entry struct {
	Name   string // absolute path in the image
	Mode   int64
	Src    string
	Data   []byte
	Link   string
	Dir    bool
	Remove bool
}

func file(name string, mode int64, data string) entry {
	return entry{Name: name, Mode: mode, Data: []byte(data)}
}
func copyOf(name string, mode int64, src string) entry {
	return entry{Name: name, Mode: mode, Src: src}
}
func link(name, target string) entry { return entry{Name: name, Link: target} }
func dir(name string) entry          { return entry{Name: name, Mode: 0o755, Dir: true} }

// whiteout removes name from the layers below (OCI image layout's
// .wh.<name> file).
func whiteout(name string) entry { return entry{Name: name, Remove: true} }

// epoch is the time of every file: the same inputs make the same layer.
var epoch = time.Unix(0, 0).UTC()

// layer builds an uncompressed-on-disk tar layer of entries, parents
// first, each directory once.
func layer(entries []entry) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := writeTar(&buf, entries); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

func writeTar(w io.Writer, entries []entry) error {
	tw := tar.NewWriter(w)
	seen := map[string]bool{}
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		if p == "/" || p == "." || seen[p] {
			return nil
		}
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		seen[p] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755, ModTime: epoch})
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range sorted {
		name := strings.TrimPrefix(path.Clean(e.Name), "/")
		if err := mkdirs(path.Dir("/" + name)); err != nil {
			return err
		}
		h := &tar.Header{Name: name, Mode: e.Mode, ModTime: epoch}
		var body io.Reader
		switch {
		case e.Remove:
			h.Typeflag, h.Name, h.Mode = tar.TypeReg, path.Join(path.Dir(name), ".wh."+path.Base(name)), 0o644
		case e.Dir:
			if seen["/"+name] {
				continue
			}
			seen["/"+name] = true
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case e.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Link, 0o777
		case e.Src != "":
			f, err := os.Open(e.Src)
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			h.Typeflag, h.Size, body = tar.TypeReg, fi.Size(), f
		default:
			h.Typeflag, h.Size, body = tar.TypeReg, int64(len(e.Data)), bytes.NewReader(e.Data)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
