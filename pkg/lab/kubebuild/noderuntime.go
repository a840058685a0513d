package kubebuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The container runtime of the lab's real nodes (`sluice-lab up --runtime
// containerd`). containerd v2 and runc are built from the Go module proxy
// like the Kubernetes binaries; kubelet from the same module graph as them
// (kube.mod), so the node and the control plane are one Kubernetes version.
const (
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
)

// NodeRuntimeBinaries are the programs of a real node, all in NodeRuntimeDir.
var NodeRuntimeBinaries = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc"}

// nodePart is one `go build` of some of NodeRuntimeBinaries.
type nodePart struct {
	name    string
	module  string // go get MODULE@VERSION into a module of our own; "" = kube.mod
	version string
	pkgs    []string
	tags    string
	ldflags string
	cgo     bool
}

func nodeParts() []nodePart {
	kube, _ := Versions()
	return []nodePart{
		{
			name: "runc", module: "github.com/opencontainers/runc", version: RuncVersion,
			pkgs: []string{"github.com/opencontainers/runc"},
			// Without seccomp every pod sandbox fails: containerd's default
			// spec asks for the RuntimeDefault profile.
			tags:    "seccomp",
			ldflags: "-X main.version=" + strings.TrimPrefix(RuncVersion, "v"),
			cgo:     true,
		},
		{
			name: "containerd", module: "github.com/containerd/containerd/v2", version: ContainerdVersion,
			pkgs: []string{
				"github.com/containerd/containerd/v2/cmd/containerd",
				"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
				"github.com/containerd/containerd/v2/cmd/ctr",
			},
			// The snapshotters that need C libraries or kernel features the lab
			// does not use are left out; overlayfs and native remain.
			tags:    "no_btrfs no_devmapper no_zfs",
			ldflags: "-X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion,
		},
		{
			name: "kubelet", pkgs: []string{"k8s.io/kubernetes/cmd/kubelet"},
			// Without it the kubelet reports v0.0.0-master, and the API
			// server's version skew checks and `kubectl get nodes` show that.
			ldflags: "-X k8s.io/component-base/version.gitVersion=" + kube,
		},
	}
}

// NodeRuntimeDir is where the real nodes' binaries live once built: a cache
// directory of its own, keyed by every version and the Kubernetes module
// graph, so building it never invalidates the control plane's cache.
func NodeRuntimeDir() string {
	kube, _ := Versions()
	h := sha256.New()
	h.Write(kubeMod)
	h.Write(kubeSum)
	key := fmt.Sprintf("node-kubelet-%s-containerd-%s-runc-%s-%s", kube, ContainerdVersion, RuncVersion, hex.EncodeToString(h.Sum(nil))[:8])
	return filepath.Join(CacheRoot(), key, "bin")
}

// NodeRuntimeBuilt reports whether every binary of a real node is cached.
func NodeRuntimeBuilt() bool {
	for _, b := range NodeRuntimeBinaries {
		if _, err := os.Stat(filepath.Join(NodeRuntimeDir(), b)); err != nil {
			return false
		}
	}
	return true
}

// EnsureNodeRuntime builds kubelet, containerd (with ctr and the runc shim)
// and runc unless they are cached, and returns their directory. runc is built
// with cgo against libseccomp (Debian: libseccomp-dev). The kubelet is built
// after any running build of the control plane's binaries has finished: it
// shares most packages with them, and then takes a minute instead of ten.
func EnsureNodeRuntime(ctx context.Context, out io.Writer) (string, error) {
	bin := NodeRuntimeDir()
	if NodeRuntimeBuilt() {
		return bin, nil
	}
	top := filepath.Dir(bin)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(top, "lock"), out, "the node runtime")
	if err != nil {
		return "", err
	}
	defer unlock()
	gobin, err := findGo()
	if err != nil {
		return "", err
	}
	start := time.Now()
	kube, _ := Versions()
	fmt.Fprintf(out, "building the node runtime (kubelet %s, containerd %s, runc %s) into %s\n", kube, ContainerdVersion, RuncVersion, bin)
	for _, p := range nodeParts() {
		if partBuilt(bin, p) {
			continue
		}
		if err := buildPart(ctx, out, gobin, top, bin, p, start); err != nil {
			return "", fmt.Errorf("build %s: %w", p.name, err)
		}
	}
	fmt.Fprintf(out, "node runtime built in %s\n", time.Since(start).Round(time.Second))
	return bin, nil
}

func partBuilt(bin string, p nodePart) bool {
	for _, pkg := range p.pkgs {
		if _, err := os.Stat(filepath.Join(bin, pkgBase(pkg))); err != nil {
			return false
		}
	}
	return true
}

func pkgBase(pkg string) string { return pkg[strings.LastIndexByte(pkg, '/')+1:] }

func buildPart(ctx context.Context, out io.Writer, gobin, top, bin string, p nodePart, start time.Time) error {
	src := filepath.Join(top, "src-"+p.name)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if p.cgo {
		env = append(env, "CGO_ENABLED=1")
		if _, err := os.Stat("/usr/include/seccomp.h"); err != nil {
			return fmt.Errorf("runc needs libseccomp's headers (/usr/include/seccomp.h is missing): apt-get install libseccomp-dev")
		}
	}
	if p.module == "" {
		if err := os.WriteFile(filepath.Join(src, "go.mod"), kubeMod, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(src, "go.sum"), kubeSum, 0o644); err != nil {
			return err
		}
		// Wait for a build of the control plane's binaries, if one runs.
		unlock, err := lockFile(filepath.Join(filepath.Dir(BinDir()), "lock"), out, "the Kubernetes binaries")
		if err != nil {
			return err
		}
		unlock()
	} else {
		mod := fmt.Sprintf("module sluice.dev/lab-node-%s\n\ngo 1.26.0\n", p.name)
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(mod), 0o644); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, gobin, "get", p.module+"@"+p.version)
		cmd.Dir, cmd.Env = src, env
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go get %s@%s: %w: %s", p.module, p.version, err, b)
		}
	}
	tmp := filepath.Join(top, "bin."+p.name+".tmp")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-v", "-trimpath", "-o", tmp + "/"}
	if p.tags != "" {
		args = append(args, "-tags", p.tags)
	}
	if p.ldflags != "" {
		args = append(args, "-ldflags", p.ldflags)
	}
	args = append(args, p.pkgs...)
	if err := runGo(ctx, out, gobin, src, env, args, p.name, start); err != nil {
		return err
	}
	for _, pkg := range p.pkgs {
		n := pkgBase(pkg)
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(bin, n)); err != nil {
			return err
		}
	}
	return nil
}

// lockFile takes an exclusive flock on path, saying so when it has to wait,
// and returns its release.
func lockFile(path string, out io.Writer, what string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		fmt.Fprintf(out, "another build of %s is running; waiting for it\n", what)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}
