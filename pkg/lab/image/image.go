// Package image builds Sluice's OCI images without a container engine or a
// registry: layers are tars written here (sorted, owned by root, dated with a
// fixed epoch) or a Debian root file system made by mmdebstrap, assembled
// with go-containerregistry and written as OCI image layout tar archives that
// `ctr images import` names by their reference. The same inputs give the
// same manifest digest.
//
// The deterministic core is WriteLayerTar, NormalizeTar, Assemble and
// WriteArchive; BuildAll and EnsureLabImages put the binaries, the Debian
// root file system (cached) and the archives around it.
package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the manifest's descriptor in index.json. containerd names
// an imported image by AnnotationImageName (the full reference); the OCI
// ref name holds only the tag, as containerd's own exporter writes it.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Layer is one layer of an image and the line its history records.
type Layer struct {
	Layer   v1.Layer
	Comment string
}

// Spec is everything an image is made of.
type Spec struct {
	Ref        string    // full reference, e.g. sluice.dev/sluice:v1.2.3
	Created    time.Time // the config's and the history's time
	OS, Arch   string    // default linux and the architecture of this build
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	Labels     map[string]string
	Layers     []Layer
}

func (s Spec) platform() v1.Platform {
	p := v1.Platform{OS: s.OS, Architecture: s.Arch}
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = runtime.GOARCH
	}
	return p
}

// Assemble builds the image of a spec: an OCI manifest and config on an
// empty base, the layers in order. Nothing in it depends on the clock.
func Assemble(s Spec) (v1.Image, error) {
	if _, err := name.ParseReference(s.Ref, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("image reference %q: %w", s.Ref, err)
	}
	p := s.platform()
	created := v1.Time{Time: s.Created.UTC().Truncate(time.Second)}
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Created:      created,
		Config: v1.Config{
			Entrypoint: s.Entrypoint,
			Cmd:        s.Cmd,
			Env:        s.Env,
			WorkingDir: s.WorkingDir,
			User:       s.User,
			Labels:     s.Labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(s.Layers))
	for i, l := range s.Layers {
		adds[i] = mutate.Addendum{
			Layer:     l.Layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: created, CreatedBy: l.Comment},
		}
	}
	return mutate.Append(img, adds...)
}

// Result describes one image archive written.
type Result struct {
	Name       string `json:"name"`       // sluice, pause or testserver
	Ref        string `json:"ref"`        // full reference
	Repository string `json:"repository"` // the reference without its tag
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`  // manifest digest (what containerd shows)
	Archive    string `json:"archive"` // path of the OCI layout tar
	ArchiveSHA string `json:"archiveSHA256"`
	Size       int64  `json:"size"` // bytes of the archive
}

// RefWithDigest is repository:tag@digest.
func (r Result) RefWithDigest() string { return r.Ref + "@" + r.Digest }

// WriteArchive writes img as an OCI image layout tar at file: oci-layout,
// index.json (one manifest, annotated with its reference and platform) and
// the blobs, sorted, owned by root and dated epoch.
func WriteArchive(file string, img v1.Image, ref string, p v1.Platform, epoch time.Time) (Result, error) {
	r, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return Result{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(file), ".layout-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return Result{}, err
	}
	err = lp.AppendImage(img,
		layout.WithAnnotations(map[string]string{AnnotationImageName: r.Name(), AnnotationRefName: r.TagStr()}),
		layout.WithPlatform(p))
	if err != nil {
		return Result{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return Result{}, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = tarDir(cw, dir, epoch)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return Result{}, err
	}
	return Result{
		Ref:        r.Name(),
		Repository: r.Context().Name(),
		Tag:        r.TagStr(),
		Digest:     d.String(),
		Archive:    file,
		ArchiveSHA: hex.EncodeToString(h.Sum(nil)),
		Size:       cw.n,
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tarDir writes the files under dir as a tar: sorted, directories 0755 and
// files 0644, owned by root, dated epoch.
func tarDir(w io.Writer, dir string, epoch time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)
	mtime := epoch.UTC().Truncate(time.Second)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Size: st.Size(), Format: tar.FormatPAX}
		if st.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = rel+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// Build assembles a spec and writes its archive.
func Build(file string, s Spec, epoch time.Time) (Result, error) {
	img, err := Assemble(s)
	if err != nil {
		return Result{}, err
	}
	return WriteArchive(file, img, s.Ref, s.platform(), epoch)
}

// ReadArchiveIndex reads index.json of an archive written by WriteArchive:
// a check that the archive is whole and names its image.
func ReadArchiveIndex(file string) (*v1.IndexManifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New(file + ": no index.json")
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(h.Name, "./") == "index.json" {
			return v1.ParseIndexManifest(tr)
		}
	}
}
