package kubebuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// HelmVersion pins the Helm the lab installs Sluice's chart with, and that renders
// deploy/sluice.yaml from it.
const HelmVersion = "v4.3.2"

// HelmPath is where the pinned Helm lives once built.
func HelmPath() string {
	return filepath.Join(CacheRoot(), "helm-"+HelmVersion, "bin", "helm")
}

// EnsureHelm builds Helm from the Go module proxy once into the cache and returns the
// binary's path.
func EnsureHelm(ctx context.Context, out io.Writer) (string, error) {
	p := HelmPath()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	gobin, err := findGo()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(filepath.Dir(p))
	tmp := filepath.Join(dir, "bin.tmp")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "building Helm %s from the Go module proxy into %s (once, about 2 minutes)\n", HelmVersion, filepath.Dir(p))
	cmd := exec.CommandContext(ctx, gobin, "install",
		"-ldflags", "-X helm.sh/helm/v4/internal/version.version="+HelmVersion,
		"helm.sh/helm/v4/cmd/helm@"+HelmVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install helm %s: %w: %s", HelmVersion, err, b)
	}
	os.RemoveAll(filepath.Dir(p))
	if err := os.Rename(tmp, filepath.Dir(p)); err != nil {
		return "", err
	}
	return p, nil
}
