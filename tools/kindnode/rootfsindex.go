package kindnode

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// rootfsIndex is what the assembly needs to know of the root file system
// tarball: its paths, and the files of some Debian packages.
type rootfsIndex struct {
	paths map[string]*tar.Header // "/usr/bin/x" → header
}

func readIndex(tarPath string) (*rootfsIndex, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx := &rootfsIndex{paths: map[string]*tar.Header{}}
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return idx, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", tarPath, err)
		}
		idx.paths[clean(h.Name)] = h
	}
}

func clean(name string) string { return path.Clean("/" + strings.TrimPrefix(name, "./")) }

// canonical resolves the merged-/usr links of the top level (/lib →
// usr/lib and so on) that dpkg's file lists do not follow.
func (x *rootfsIndex) canonical(p string) string {
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 2)
	if h, ok := x.paths["/"+parts[0]]; ok && h.Typeflag == tar.TypeSymlink && len(parts) == 2 {
		return path.Clean("/" + path.Join(h.Linkname, parts[1]))
	}
	return p
}

// glob lists the paths of the tarball matching pattern (path.Match).
func (x *rootfsIndex) glob(pattern string) []string {
	var out []string
	for p := range x.paths {
		if ok, _ := path.Match(pattern, p); ok {
			out = append(out, p)
		}
	}
	return out
}

// extract reads the files wanted (canonical paths) out of the tarball, as
// layer entries: regular files with their data and mode, symlinks.
func extract(tarPath string, wanted map[string]bool) ([]entry, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []entry
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", tarPath, err)
		}
		name := clean(h.Name)
		if !wanted[name] {
			continue
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			out = append(out, link(name, h.Linkname))
		case tar.TypeReg:
			var b bytes.Buffer
			if _, err := io.Copy(&b, tr); err != nil {
				return nil, err
			}
			out = append(out, entry{Name: name, Mode: h.Mode & 0o7777, Data: b.Bytes()})
		}
	}
}

// packageFiles returns the canonical paths of the files of pkgs, read from
// dpkg's lists in the tarball.
func packageFiles(tarPath string, x *rootfsIndex, pkgs []string) (map[string]bool, error) {
	lists := map[string]bool{}
	for _, p := range pkgs {
		for _, name := range []string{p, p + ":amd64", p + ":arm64"} {
			lists[x.canonical("/var/lib/dpkg/info/"+name+".list")] = true
		}
	}
	entries, err := extract(tarPath, lists)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no dpkg file list of %v in %s", pkgs, tarPath)
	}
	files := map[string]bool{}
	for _, e := range entries {
		for _, line := range strings.Split(string(e.Data), "\n") {
			if line == "" || line == "/." {
				continue
			}
			p := x.canonical(line)
			if h, ok := x.paths[p]; ok && h.Typeflag != tar.TypeDir {
				files[p] = true
			}
		}
	}
	return files, nil
}
