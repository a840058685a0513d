// Package kubebuild builds the Kubernetes binaries the lab runs — etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and
// kubectl — from the Go module proxy, and caches them outside the repository,
// keyed by the versions and the exact module graph (kube.mod + kube.sum).
package kubebuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed kube.mod
var kubeMod []byte

//go:embed kube.sum
var kubeSum []byte

// Binaries the cache holds, with the package each is built from.
var Binaries = []struct{ Name, Pkg string }{
	{"etcd", "go.etcd.io/etcd/server/v3"},
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"},
	{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"},
	{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"},
	{"kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"},
	{"kubectl", "k8s.io/kubernetes/cmd/kubectl"},
}

var (
	kubeRe = regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes v(\S+)`)
	etcdRe = regexp.MustCompile(`(?m)^\s*go\.etcd\.io/etcd/server/v3 v(\S+)`)
)

// Versions returns the pinned Kubernetes and etcd versions.
func Versions() (kube, etcd string) {
	if m := kubeRe.FindSubmatch(kubeMod); m != nil {
		kube = "v" + string(m[1])
	}
	if m := etcdRe.FindSubmatch(kubeMod); m != nil {
		etcd = "v" + string(m[1])
	}
	return kube, etcd
}

// CacheRoot is $SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice, else
// ~/.cache/sluice.
func CacheRoot() string {
	if d := os.Getenv("SLUICE_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "sluice")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "sluice")
}

// BinDir is where the binaries of the pinned versions live once built.
func BinDir() string {
	kube, etcd := Versions()
	h := sha256.New()
	h.Write(kubeMod)
	h.Write(kubeSum)
	h.Write([]byte(buildFormat))
	key := fmt.Sprintf("kube-%s-etcd-%s-%s", kube, etcd, hex.EncodeToString(h.Sum(nil))[:8])
	return filepath.Join(CacheRoot(), key, "bin")
}

// buildFormat changes whenever the way the binaries are built changes, so that a cache
// made the old way is not reused.
const buildFormat = "version-ldflags-1"

// versionLDFlags stamp the Kubernetes binaries with their release, as the release build
// does: without it they report v0.0.0-master, and clients that check the server's version
// (Helm's kubeVersion, kubectl version skew) refuse or warn.
func versionLDFlags() string {
	kube, _ := Versions()
	major, minor, _ := strings.Cut(strings.TrimPrefix(kube, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	const v = "k8s.io/component-base/version."
	return fmt.Sprintf("-X %sgitVersion=%s -X %sgitMajor=%s -X %sgitMinor=%s -X %sgitTreeState=clean", v, kube, v, major, v, minor, v)
}

// Path returns the cached binary name, or an error telling how to build it.
func Path(name string) (string, error) {
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not built yet (%s missing): run `sluice-lab build`", name, p)
	}
	return p, nil
}

// Built reports whether every binary is in the cache.
func Built() bool {
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(BinDir(), b.Name)); err != nil {
			return false
		}
	}
	return true
}

// Ensure builds the binaries unless they are cached, printing progress to
// out, and returns the directory that holds them. Concurrent callers wait for
// one another on a lock file.
func Ensure(ctx context.Context, out io.Writer) (string, error) {
	bin := BinDir()
	if Built() {
		return bin, nil
	}
	top := filepath.Dir(bin)
	if err := os.MkdirAll(top, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(top, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		fmt.Fprintf(out, "another build of the Kubernetes binaries is running; waiting for it\n")
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return "", err
		}
	}
	if Built() {
		return bin, nil
	}
	gobin, err := findGo()
	if err != nil {
		return "", err
	}
	src := filepath.Join(top, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), kubeMod, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.sum"), kubeSum, 0o644); err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	kube, etcd := Versions()
	fmt.Fprintf(out, "building Kubernetes %s and etcd %s from the Go module proxy into %s\n", kube, etcd, bin)
	fmt.Fprintf(out, "(once per version; a cold build takes about 13 minutes on 2 cores)\n")
	start := time.Now()
	for _, b := range Binaries {
		if err := goBuild(ctx, out, gobin, src, filepath.Join(tmp, b.Name), b.Pkg, start); err != nil {
			return "", fmt.Errorf("build %s: %w", b.Name, err)
		}
	}
	os.RemoveAll(bin)
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "built in %s\n", time.Since(start).Round(time.Second))
	return bin, nil
}

func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", errors.New("the Go toolchain (go 1.26 or newer) is needed to build the Kubernetes binaries, and `go` is not on PATH")
}

// goBuild runs one `go build -v`, counting the packages it compiles as
// progress and keeping the tail of its output for the error message.
func goBuild(ctx context.Context, out io.Writer, gobin, dir, dst, pkg string, start time.Time) error {
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	return runGo(ctx, out, gobin, dir, env, []string{"build", "-v", "-ldflags", versionLDFlags(), "-o", dst, pkg}, filepath.Base(dst), start)
}

// runGo runs the go command with args in dir, reporting progress under name.
func runGo(ctx context.Context, out io.Writer, gobin, dir string, env, args []string, name string, start time.Time) error {
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	var n atomic.Int64
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			n.Add(1)
			tail = append(tail, sc.Text())
			if len(tail) > 20 {
				tail = tail[1:]
			}
		}
	}()
	tick := time.NewTicker(20 * time.Second)
	defer tick.Stop()
	werr := make(chan error, 1)
	go func() { werr <- cmd.Wait(); pw.Close() }()
	fmt.Fprintf(out, "  %s ...\n", name)
	for {
		select {
		case err := <-werr:
			<-done
			if err != nil {
				return fmt.Errorf("%w\n%s", err, joinLines(tail))
			}
			fmt.Fprintf(out, "  %s done (%s elapsed)\n", name, time.Since(start).Round(time.Second))
			return nil
		case <-tick.C:
			fmt.Fprintf(out, "  %s: %d packages compiled, %s elapsed\n", name, n.Load(), time.Since(start).Round(time.Second))
		}
	}
}

func joinLines(l []string) string {
	s := ""
	for _, x := range l {
		s += x + "\n"
	}
	return s
}
