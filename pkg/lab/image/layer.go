package image

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one file, directory or symbolic link of a layer. Every entry is
// owned by root (uid and gid 0, no owner names) and dated with the layer's
// epoch.
type Entry struct {
	Path   string      // slash-separated, relative to the root ("usr/local/bin/x")
	Mode   fs.FileMode // permission bits, plus fs.ModeDir or fs.ModeSymlink
	Link   string      // target of a symbolic link
	Data   []byte      // contents of a regular file, unless Source is set
	Source string      // host file whose contents the regular file gets
}

// cleanPath turns a tar or entry name into the canonical form: relative,
// no "./", no trailing slash; "" for the root itself.
func cleanPath(p string) (string, error) {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("path %q has a \"..\"", p)
		}
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return "", nil
	}
	return p[1:], nil
}

// WriteLayerTar writes entries as an uncompressed layer tar: sorted by path,
// with every parent directory present (0755 unless listed), owned by root and
// dated epoch. The same entries and epoch always give the same bytes.
func WriteLayerTar(w io.Writer, entries []Entry, epoch time.Time) error {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return err
		}
		if p == "" {
			return errors.New("an entry for the root directory itself")
		}
		if _, dup := byPath[p]; dup {
			return fmt.Errorf("%s: listed twice", p)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if e, ok := byPath[d]; ok {
				if !e.Mode.IsDir() {
					return fmt.Errorf("%s: parent %s is not a directory", p, d)
				}
				continue
			}
			byPath[d] = Entry{Path: d, Mode: fs.ModeDir | 0o755}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	mtime := epoch.UTC().Truncate(time.Second)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		e := byPath[p]
		h := &tar.Header{Name: p, Mode: tarMode(e.Mode), ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case e.Mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case e.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		case e.Mode.IsRegular():
			h.Typeflag = tar.TypeReg
		default:
			return fmt.Errorf("%s: unsupported mode %v", p, e.Mode)
		}
		if h.Typeflag != tar.TypeReg {
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		if e.Source == "" {
			h.Size = int64(len(e.Data))
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write(e.Data); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(tw, h, e.Source); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return tw.Close()
}

// tarMode is the tar header mode of m: permissions plus setuid, setgid and
// sticky bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func copyFile(tw *tar.Writer, h *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != h.Size {
		err = fmt.Errorf("%s changed size while being read", src)
	}
	return err
}

// NormalizeOptions says how NormalizeTar rewrites a root file system tar.
type NormalizeOptions struct {
	// Epoch clamps modification times: none is later than it.
	Epoch time.Time
	// DropUnder lists directories whose contents are left out (the
	// directories themselves stay), e.g. "dev": a container runtime mounts
	// its own /dev, and device nodes cannot be unpacked everywhere.
	DropUnder []string
}

type tarEntry struct {
	h    *tar.Header
	data []byte
}

// NormalizeTar rewrites a root file system tar (from mmdebstrap, say) into a
// canonical layer: entries sorted by path without "./", the root entry left
// out, owner names cleared (numeric ids kept), access and change times
// dropped, modification times clamped to the epoch, only extended
// attributes kept of the PAX records, and hard links pointing at the first
// of their group in the new order. Device nodes and FIFOs outside the
// dropped directories are an error. The whole tar is held in memory.
func NormalizeTar(w io.Writer, r io.Reader, o NormalizeOptions) error {
	tr := tar.NewReader(r)
	var entries []*tarEntry
	byName := map[string]*tarEntry{}
	var drop []string
	for _, d := range o.DropUnder {
		p, err := cleanPath(d)
		if err != nil {
			return err
		}
		drop = append(drop, p+"/")
	}
	clamp := o.Epoch.UTC().Truncate(time.Second)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, err := cleanPath(h.Name)
		if err != nil {
			return err
		}
		if name == "" || slices.ContainsFunc(drop, func(d string) bool { return strings.HasPrefix(name, d) }) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", name, h.Typeflag)
		}
		if _, dup := byName[name]; dup {
			return fmt.Errorf("%s: twice in the tar", name)
		}
		n := &tar.Header{
			Typeflag: h.Typeflag,
			Name:     name,
			Linkname: h.Linkname,
			Mode:     h.Mode & 0o7777,
			Uid:      h.Uid,
			Gid:      h.Gid,
			ModTime:  h.ModTime.UTC().Truncate(time.Second),
			Format:   tar.FormatPAX,
		}
		if n.ModTime.After(clamp) {
			n.ModTime = clamp
		}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if n.PAXRecords == nil {
					n.PAXRecords = map[string]string{}
				}
				n.PAXRecords[k] = v
			}
		}
		e := &tarEntry{h: n}
		switch h.Typeflag {
		case tar.TypeReg:
			if e.data, err = io.ReadAll(tr); err != nil {
				return err
			}
		case tar.TypeLink:
			if n.Linkname, err = cleanPath(h.Linkname); err != nil {
				return err
			}
		}
		entries = append(entries, e)
		byName[name] = e
	}

	slices.SortFunc(entries, func(a, b *tarEntry) int { return strings.Compare(a.h.Name, b.h.Name) })

	// Hard links: the first member of each group (in the new order) carries
	// the contents, the others link to it.
	groups := map[string][]*tarEntry{}
	for _, e := range entries {
		if e.h.Typeflag != tar.TypeLink {
			continue
		}
		t, ok := byName[e.h.Linkname]
		if !ok || t.h.Typeflag != tar.TypeReg {
			return fmt.Errorf("%s: hard link to %s, which is not a regular file of the tar", e.h.Name, e.h.Linkname)
		}
		if groups[t.h.Name] == nil {
			groups[t.h.Name] = []*tarEntry{t}
		}
		groups[t.h.Name] = append(groups[t.h.Name], e)
	}
	for _, g := range groups {
		target := g[0]
		slices.SortFunc(g, func(a, b *tarEntry) int { return strings.Compare(a.h.Name, b.h.Name) })
		first := g[0]
		if first != target {
			name := first.h.Name
			h := *target.h
			h.Name = name
			first.h, first.data = &h, target.data
		}
		for _, e := range g[1:] {
			h := *first.h
			h.Name, h.Typeflag, h.Linkname, h.Size = e.h.Name, tar.TypeLink, first.h.Name, 0
			e.h, e.data = &h, nil
		}
	}

	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := *e.h
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteGzipLayer writes the layer tar that write produces to file, gzipped
// with a fixed header (no name, no time) at the default level, and returns
// it as an OCI layer. The same tar gives the same bytes with the same Go
// version (compress/gzip's output is part of the build's inputs).
func WriteGzipLayer(file string, write func(io.Writer) error) (v1.Layer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.DefaultCompression)
	if err != nil {
		f.Close()
		return nil, err
	}
	err = write(zw)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return nil, err
	}
	return GzipLayer(file)
}

// GzipLayer opens a gzipped layer tar written before as an OCI layer.
func GzipLayer(file string) (v1.Layer, error) {
	return tarball.LayerFromFile(file, tarball.WithMediaType(types.OCILayer))
}
