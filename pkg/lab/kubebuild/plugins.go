package kubebuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ReferencePluginsVersion pins the reference CNI plugins
// (github.com/containernetworking/plugins) that tests and benchmarks use as
// the anchor Sluice's own plugin is compared with.
const ReferencePluginsVersion = "v1.9.1"

// ReferencePlugins are the plugins built: bridge and ptp with host-local IPAM,
// and loopback.
var ReferencePlugins = []string{"main/bridge", "main/ptp", "main/loopback", "ipam/host-local"}

// EnsureReferencePlugins builds the reference CNI plugins once into the cache
// and returns their directory.
func EnsureReferencePlugins(ctx context.Context, out io.Writer) (string, error) {
	dir := filepath.Join(CacheRoot(), "cni-plugins-"+ReferencePluginsVersion)
	bin := filepath.Join(dir, "bin")
	if _, err := os.Stat(filepath.Join(bin, "host-local")); err == nil {
		return bin, nil
	}
	gobin, err := findGo()
	if err != nil {
		return "", err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module sluice.dev/reference-cni-plugins\n\ngo 1.26.0\n"), 0o644); err != nil {
		return "", err
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	fmt.Fprintf(out, "building the reference CNI plugins %s into %s\n", ReferencePluginsVersion, bin)
	if err := run("get", "github.com/containernetworking/plugins@"+ReferencePluginsVersion); err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	os.RemoveAll(tmp)
	args := []string{"build", "-o", tmp + "/"}
	for _, p := range ReferencePlugins {
		args = append(args, "github.com/containernetworking/plugins/plugins/"+p)
	}
	if err := run(args...); err != nil {
		return "", err
	}
	os.RemoveAll(bin)
	return bin, os.Rename(tmp, bin)
}
