package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// RootfsSpec is the Debian root file system under the Sluice binaries. It
// is the cache key: the same spec is made once and then reused, so the
// Debian package versions are those of the day it was made (recorded in
// its package list) until the cache entry is removed or refreshed.
type RootfsSpec struct {
	Suite    string   `json:"suite"`
	Variant  string   `json:"variant"`  // mmdebstrap --variant
	Packages []string `json:"packages"` // --include
	Sources  []string `json:"sources"`  // sources.list lines
	// Epoch is the SOURCE_DATE_EPOCH given to mmdebstrap and the clamp of
	// every modification time in the layer.
	Epoch int64 `json:"epoch"`
	// DpkgOptions are --dpkgopt values (leaving out documentation).
	DpkgOptions []string `json:"dpkgOptions"`
	Arch        string   `json:"arch"`
}

// DefaultRootfs is Debian 12's essential packages with nftables and
// iproute2 (nft and ip for operators debugging a node, and for the agent's
// --nftables-backend=nft; the agent itself programs its table over
// netlink and runs neither), without
// manuals, translations and documentation but the copyright files, with
// /usr merged the way Debian 12 is (usr-is-merged rather than usrmerge,
// which would pull in perl). Its epoch is Debian 12's release day.
func DefaultRootfs() RootfsSpec {
	return RootfsSpec{
		Suite:    "bookworm",
		Variant:  "essential",
		Packages: []string{"iproute2", "nftables"},
		Sources: []string{
			"deb http://deb.debian.org/debian bookworm main",
			"deb http://deb.debian.org/debian bookworm-updates main",
			"deb http://deb.debian.org/debian-security bookworm-security main",
		},
		Epoch: 1686355200, // 2023-06-10T00:00:00Z
		DpkgOptions: []string{
			"path-exclude=/usr/share/man/*",
			"path-exclude=/usr/share/info/*",
			"path-exclude=/usr/share/locale/*",
			"path-include=/usr/share/locale/locale.alias",
			"path-exclude=/usr/share/doc/*",
			"path-include=/usr/share/doc/*/copyright",
		},
		Arch: runtime.GOARCH,
	}
}

// rootfsFormat changes whenever the way the cache entry is made changes.
const rootfsFormat = "sluice-rootfs-1"

// Key is the cache key of the spec.
func (s RootfsSpec) Key() string {
	s.Packages = slices.Sorted(slices.Values(s.Packages))
	b, _ := json.Marshal(struct {
		Format string
		Spec   RootfsSpec
	}{rootfsFormat, s})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Rootfs is a cached root file system.
type Rootfs struct {
	Dir      string // the cache entry
	Layer    string // gzipped, normalized layer tar
	Packages string // "package<TAB>version<TAB>architecture" lines, sorted
}

// RootfsDir is the cache entry of the spec, under CacheRoot()/rootfs.
func RootfsDir(s RootfsSpec) string {
	return filepath.Join(kubebuild.CacheRoot(), "rootfs", fmt.Sprintf("%s-%s-%s-%s", s.Suite, s.Variant, s.Arch, s.Key()[:12]))
}

func rootfsAt(dir string) Rootfs {
	return Rootfs{Dir: dir, Layer: filepath.Join(dir, "rootfs.tar.gz"), Packages: filepath.Join(dir, "packages.txt")}
}

// CachedRootfs returns the cache entry of the spec if it is complete.
func CachedRootfs(s RootfsSpec) (Rootfs, bool) {
	r := rootfsAt(RootfsDir(s))
	for _, f := range []string{r.Layer, r.Packages} {
		if _, err := os.Stat(f); err != nil {
			return Rootfs{}, false
		}
	}
	return r, true
}

// EnsureRootfs returns the cached root file system of the spec, making it
// first if needed (or if refresh is set): mmdebstrap (installed with
// apt-get if missing) writes a tar with SOURCE_DATE_EPOCH set, which is
// normalized (NormalizeTar, /dev emptied) and gzipped into the cache.
func EnsureRootfs(ctx context.Context, s RootfsSpec, refresh bool, out io.Writer) (Rootfs, error) {
	if r, ok := CachedRootfs(s); ok && !refresh {
		return r, nil
	}
	if runtime.GOARCH != s.Arch {
		return Rootfs{}, fmt.Errorf("root file system for %s: only the host's architecture (%s) is supported", s.Arch, runtime.GOARCH)
	}
	dir := RootfsDir(s)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return Rootfs{}, err
	}
	mm, err := ensureMmdebstrap(ctx, out)
	if err != nil {
		return Rootfs{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".rootfs-")
	if err != nil {
		return Rootfs{}, err
	}
	defer os.RemoveAll(tmp)
	r := rootfsAt(tmp)
	raw := filepath.Join(tmp, "mmdebstrap.tar")
	start := time.Now()
	fmt.Fprintf(out, "making the Debian %s root file system (%s + %s) with mmdebstrap...\n", s.Suite, s.Variant, strings.Join(s.Packages, ","))
	args := []string{"--variant=" + s.Variant, "--format=tar", "--architectures=" + s.Arch}
	if len(s.Packages) > 0 {
		args = append(args, "--include="+strings.Join(s.Packages, ","))
	}
	// Debian 12 is merged-/usr: the hook sets up the links and installs
	// usr-is-merged, so apt does not choose usrmerge (and perl).
	if hooks := "/usr/share/mmdebstrap/hooks/merged-usr"; dirExists(hooks) {
		args = append(args, "--hook-dir="+hooks)
	}
	for _, o := range s.DpkgOptions {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args,
		// The host's resolv.conf and hostname are copied in; leave them out.
		`--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"`,
		// The package list, read from the chroot's dpkg database.
		`--customize-hook=dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Package}\t${Version}\t${Architecture}\n' > `+shellQuote(r.Packages),
		s.Suite, raw)
	args = append(args, s.Sources...)
	cmd := exec.CommandContext(ctx, mm, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", s.Epoch), "TMPDIR="+tmp)
	logFile := filepath.Join(tmp, "mmdebstrap.log")
	lf, err := os.Create(logFile)
	if err != nil {
		return Rootfs{}, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	err = cmd.Run()
	lf.Close()
	if err != nil {
		return Rootfs{}, fmt.Errorf("mmdebstrap: %w\n%s", err, tail(logFile, 25))
	}
	if _, err := os.Stat(r.Packages); err != nil {
		return Rootfs{}, fmt.Errorf("mmdebstrap wrote no package list: %w", err)
	}
	if err := sortLines(r.Packages); err != nil {
		return Rootfs{}, err
	}
	in, err := os.Open(raw)
	if err != nil {
		return Rootfs{}, err
	}
	_, err = WriteGzipLayer(r.Layer, func(w io.Writer) error {
		return NormalizeTar(w, bufio.NewReaderSize(in, 1<<20), NormalizeOptions{Epoch: time.Unix(s.Epoch, 0), DropUnder: []string{"dev"}})
	})
	in.Close()
	if err != nil {
		return Rootfs{}, fmt.Errorf("normalizing the root file system: %w", err)
	}
	os.Remove(raw)
	os.Remove(logFile)
	spec, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "spec.json"), append(spec, '\n'), 0o644); err != nil {
		return Rootfs{}, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Rootfs{}, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return Rootfs{}, err
	}
	fmt.Fprintf(out, "root file system made in %s: %s\n", time.Since(start).Round(time.Second), dir)
	return rootfsAt(dir), nil
}

// ensureMmdebstrap finds mmdebstrap, installing Debian's package if it is
// missing (as root; apt-get update first if the install fails).
func ensureMmdebstrap(ctx context.Context, out io.Writer) (string, error) {
	if p, err := exec.LookPath("mmdebstrap"); err == nil {
		return p, nil
	}
	if os.Getuid() != 0 {
		return "", errors.New("mmdebstrap is not installed: run `apt-get install mmdebstrap` as root (or run this as root)")
	}
	fmt.Fprintln(out, "installing mmdebstrap with apt-get...")
	install := func() error {
		c := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "mmdebstrap")
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		c.Stdout, c.Stderr = out, out
		return c.Run()
	}
	if err := install(); err != nil {
		c := exec.CommandContext(ctx, "apt-get", "update")
		c.Stdout, c.Stderr = out, out
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("apt-get update: %w", err)
		}
		if err := install(); err != nil {
			return "", fmt.Errorf("apt-get install mmdebstrap: %w", err)
		}
	}
	return exec.LookPath("mmdebstrap")
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sortLines(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	slices.Sort(lines)
	return os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
