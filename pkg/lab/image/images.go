package image

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/version"
)

// The images' names. The pause image's tag names the upstream pause version
// it stands in for; the others are tagged with the build's version.
const (
	Registry       = "sluice.dev"
	SluiceRepo     = Registry + "/sluice"
	TestServerRepo = Registry + "/sluice-testserver"
	PauseRef       = Registry + "/pause:3.10-sluice"
)

// Module is the Go module the binaries are built from.
const Module = "github.com/sluice-net/sluice"

// SluiceBinaries go into the Sluice image, under /usr/local/bin.
var SluiceBinaries = []string{"sluice-agent", "sluice-controller", "sluice-cni", "sluicectl"}

// Binaries the lab images need.
const (
	PauseBinary = "sluice-pause"
	LabBinary   = "sluice-lab"
)

// Path is the PATH of the Sluice and test-server images.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options of BuildAll.
type Options struct {
	OutDir  string    // where the archives and images.json go
	BinDir  string    // static binaries: SluiceBinaries, sluice-pause, sluice-lab
	Version string    // the tag of the Sluice and test-server images
	Epoch   time.Time // every date in our layers and configs
	Rootfs  RootfsSpec
	// RefreshRootfs makes the Debian root file system again even if cached.
	RefreshRootfs bool
	Log           io.Writer
}

func (o *Options) defaults() error {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Unix(0, 0)
	}
	if o.Rootfs.Suite == "" {
		o.Rootfs = DefaultRootfs()
	}
	if o.OutDir == "" {
		o.OutDir = DefaultOutDir()
	}
	if o.BinDir == "" {
		return errors.New("no directory of static binaries given")
	}
	return os.MkdirAll(o.OutDir, 0o755)
}

// DefaultOutDir is CacheRoot()/images.
func DefaultOutDir() string { return filepath.Join(kubebuild.CacheRoot(), "images") }

// Manifest is what images.json holds.
type Manifest struct {
	Version string   `json:"version"`
	Images  []Result `json:"images"`
	// Packages is the file (beside the archives) listing the Debian
	// packages of the Sluice image, one "name version arch" a line.
	Packages string `json:"packages,omitempty"`
}

// Get returns the image of the given name.
func (m Manifest) Get(name string) (Result, bool) {
	for _, r := range m.Images {
		if r.Name == name {
			return r, true
		}
	}
	return Result{}, false
}

// BuildAll builds the Sluice, pause and test-server images into OutDir and
// writes images.json and images.txt beside them (archive paths relative to
// OutDir) and the Debian package list of the Sluice image.
func BuildAll(ctx context.Context, o Options) (Manifest, error) {
	if err := o.defaults(); err != nil {
		return Manifest{}, err
	}
	rfs, err := EnsureRootfs(ctx, o.Rootfs, o.RefreshRootfs, o.Log)
	if err != nil {
		return Manifest{}, err
	}
	pkgs := "sluice-packages.txt"
	if err := copyFileTo(rfs.Packages, filepath.Join(o.OutDir, pkgs)); err != nil {
		return Manifest{}, err
	}
	m := Manifest{Version: o.Version, Packages: pkgs}
	for _, b := range []func() (Result, error){
		func() (Result, error) { return BuildSluice(o, rfs) },
		func() (Result, error) { return BuildPause(o) },
		func() (Result, error) { return BuildTestServer(o) },
	} {
		r, err := b()
		if err != nil {
			return Manifest{}, err
		}
		fmt.Fprintf(o.Log, "%-10s %s@%s  %s (%.1f MiB)\n", r.Name, r.Ref, r.Digest, r.Archive, float64(r.Size)/(1<<20))
		m.Images = append(m.Images, r)
	}
	return m, WriteManifest(o.OutDir, m)
}

// WriteManifest writes images.json and images.txt ("name ref@digest
// archive" lines) in dir, with archive paths relative to dir.
func WriteManifest(dir string, m Manifest) error {
	var txt strings.Builder
	for i, r := range m.Images {
		if rel, err := filepath.Rel(dir, r.Archive); err == nil && !strings.HasPrefix(rel, "..") {
			m.Images[i].Archive = rel
		}
		fmt.Fprintf(&txt, "%s %s %s\n", r.Name, m.Images[i].RefWithDigest(), m.Images[i].Archive)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "images.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "images.txt"), []byte(txt.String()), 0o644)
}

// ReadManifest reads images.json from dir; archive paths come back absolute.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s/images.json: %w", dir, err)
	}
	for i, r := range m.Images {
		if !filepath.IsAbs(r.Archive) {
			m.Images[i].Archive = filepath.Join(dir, r.Archive)
		}
	}
	return m, nil
}

func labels(title, ver string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":   title,
		"org.opencontainers.image.version": ver,
	}
}

// BuildSluice builds sluice.dev/sluice:VERSION: the Debian root file system
// as one layer and the Sluice binaries in /usr/local/bin as another.
func BuildSluice(o Options, rfs Rootfs) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	var entries []Entry
	for _, b := range SluiceBinaries {
		src, err := StaticBinary(o.BinDir, b)
		if err != nil {
			return Result{}, err
		}
		entries = append(entries, Entry{Path: "usr/local/bin/" + b, Mode: 0o755, Source: src})
	}
	base, err := GzipLayer(rfs.Layer)
	if err != nil {
		return Result{}, err
	}
	bins, done, err := binariesLayer(o.OutDir, "sluice", entries, o.Epoch)
	defer done()
	if err != nil {
		return Result{}, err
	}
	ref := SluiceRepo + ":" + o.Version
	r, err := Build(filepath.Join(o.OutDir, "sluice.tar"), Spec{
		Ref:        ref,
		Created:    o.Epoch,
		Entrypoint: []string{"/usr/local/bin/sluice-agent"},
		Env:        []string{"PATH=" + Path},
		Labels:     labels("sluice", o.Version),
		Layers: []Layer{
			{base, fmt.Sprintf("mmdebstrap --variant=%s --include=%s %s", o.Rootfs.Variant, strings.Join(o.Rootfs.Packages, ","), o.Rootfs.Suite)},
			{bins, "sluice binaries in /usr/local/bin"},
		},
	}, o.Epoch)
	r.Name = "sluice"
	return r, err
}

// BuildPause builds sluice.dev/pause:3.10-sluice: /pause, run as 65535.
func BuildPause(o Options) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	src, err := StaticBinary(o.BinDir, PauseBinary)
	if err != nil {
		return Result{}, err
	}
	l, done, err := binariesLayer(o.OutDir, "pause", []Entry{{Path: "pause", Mode: 0o755, Source: src}}, o.Epoch)
	defer done()
	if err != nil {
		return Result{}, err
	}
	r, err := Build(filepath.Join(o.OutDir, "pause.tar"), Spec{
		Ref:        PauseRef,
		Created:    o.Epoch,
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
		Labels:     labels("sluice-pause", o.Version),
		Layers:     []Layer{{l, "/pause (sluice-pause)"}},
	}, o.Epoch)
	r.Name = "pause"
	return r, err
}

// BuildTestServer builds sluice.dev/sluice-testserver:VERSION: a static
// sluice-lab whose entrypoint is `sluice-lab serve`. It answers with its
// name, --name or else $POD_NAME; the ports come from the container's
// arguments (--tcp 80,8080 --udp 53 --sctp 9).
func BuildTestServer(o Options) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	src, err := StaticBinary(o.BinDir, LabBinary)
	if err != nil {
		return Result{}, err
	}
	l, done, err := binariesLayer(o.OutDir, "testserver", []Entry{
		{Path: "usr/local/bin/sluice-lab", Mode: 0o755, Source: src},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}, o.Epoch)
	defer done()
	if err != nil {
		return Result{}, err
	}
	r, err := Build(filepath.Join(o.OutDir, "testserver.tar"), Spec{
		Ref:        TestServerRepo + ":" + o.Version,
		Created:    o.Epoch,
		Entrypoint: []string{"/usr/local/bin/sluice-lab", "serve"},
		Env:        []string{"PATH=" + Path},
		Labels:     labels("sluice-testserver", o.Version),
		Layers:     []Layer{{l, "sluice-lab in /usr/local/bin"}},
	}, o.Epoch)
	r.Name = "testserver"
	return r, err
}

// binariesLayer writes entries as a gzipped layer in a temporary file in
// dir; done removes it once the archive is written.
func binariesLayer(dir, name string, entries []Entry, epoch time.Time) (l v1.Layer, done func(), err error) {
	file := filepath.Join(dir, "."+name+"-layer.tar.gz")
	l, err = WriteGzipLayer(file, func(w io.Writer) error { return WriteLayerTar(w, entries, epoch) })
	return l, func() { os.Remove(file) }, err
}

// StaticBinary returns dir/name if it is a statically linked ELF file (no
// interpreter, no shared libraries), which a scratch image can run.
func StaticBinary(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w (build the static binaries: make images, or CGO_ENABLED=0 go build)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return "", fmt.Errorf("%s needs shared libraries %v: build it with CGO_ENABLED=0", p, libs)
	}
	return p, nil
}

// GoBuild builds the named commands (./cmd/NAME of the module at srcDir)
// statically and reproducibly into outDir: CGO_ENABLED=0, -trimpath,
// -buildvcs=false, stripped, with version.Version set.
func GoBuild(ctx context.Context, srcDir, outDir, ver string, out io.Writer, names ...string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if _, serr := os.Stat("/usr/local/go/bin/go"); serr != nil {
			return errors.New("the Go toolchain is needed to build the images' binaries, and `go` is not on PATH")
		}
		gobin = "/usr/local/go/bin/go"
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -X " + Module + "/pkg/version.Version=" + ver,
		"-o", outDir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = out, out
	fmt.Fprintf(out, "go build (static) %s in %s\n", strings.Join(names, " "), srcDir)
	return cmd.Run()
}

// FindSource returns the root of this module's source tree at or above dir.
func FindSource(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			if strings.Contains("\n"+string(b), "\nmodule "+Module+"\n") {
				return d, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no source tree of %s at or above %s", Module, dir)
		}
	}
}

// LabOptions of EnsureLabImages.
type LabOptions struct {
	// BinDir is looked in first for static sluice-pause and sluice-lab
	// (e.g. bin/static after `make images`). Default: beside this program.
	BinDir string
	// SourceDir is the module's source tree, to build them from when
	// BinDir has no static copies. Default: found at or above the working
	// directory.
	SourceDir string
	// OutDir receives pause.tar and testserver.tar. Default: DefaultOutDir()/lab.
	OutDir string
	// Version tags the test-server image. Default: version.Version.
	Version string
	Log     io.Writer
}

// LabImages are the archives a lab node imports into containerd.
type LabImages struct {
	Pause      Result // sluice.dev/pause:3.10-sluice
	TestServer Result // sluice.dev/sluice-testserver:VERSION
}

// EnsureLabImages builds the pause and test-server image archives for the
// lab, without make and without the Debian root file system: it takes the
// static binaries from BinDir, or builds them from SourceDir with the Go
// toolchain, and writes the archives (dated 1970, so the same binaries give
// the same digests) into OutDir. Import them on a node with
// `ctr -n k8s.io images import ARCHIVE`; containerd names them Ref.
func EnsureLabImages(ctx context.Context, lo LabOptions) (LabImages, error) {
	if lo.Log == nil {
		lo.Log = io.Discard
	}
	if lo.Version == "" {
		lo.Version = version.Version
	}
	if lo.OutDir == "" {
		lo.OutDir = filepath.Join(DefaultOutDir(), "lab")
	}
	if lo.BinDir == "" {
		if self, err := os.Executable(); err == nil {
			lo.BinDir = filepath.Dir(self)
		}
	}
	binDir := lo.BinDir
	_, perr := StaticBinary(binDir, PauseBinary)
	_, lerr := StaticBinary(binDir, LabBinary)
	if binDir == "" || perr != nil || lerr != nil {
		src := lo.SourceDir
		if src == "" {
			wd, err := os.Getwd()
			if err != nil {
				return LabImages{}, err
			}
			if src, err = FindSource(wd); err != nil {
				return LabImages{}, fmt.Errorf("no static %s and %s in %q (%v; %v), and %w", PauseBinary, LabBinary, binDir, perr, lerr, err)
			}
		}
		binDir = filepath.Join(lo.OutDir, "bin")
		if err := GoBuild(ctx, src, binDir, lo.Version, lo.Log, PauseBinary, LabBinary); err != nil {
			return LabImages{}, err
		}
	}
	o := Options{OutDir: lo.OutDir, BinDir: binDir, Version: lo.Version, Epoch: time.Unix(0, 0), Log: lo.Log}
	p, err := BuildPause(o)
	if err != nil {
		return LabImages{}, fmt.Errorf("pause image: %w", err)
	}
	t, err := BuildTestServer(o)
	if err != nil {
		return LabImages{}, fmt.Errorf("test-server image: %w", err)
	}
	return LabImages{Pause: p, TestServer: t}, nil
}

func copyFileTo(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
