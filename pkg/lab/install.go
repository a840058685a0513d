package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/deploy"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/version"
)

// How Sluice gets onto the lab's nodes.
const (
	// InstallProcesses: the lab starts the controllers and agents itself, as processes in
	// the control plane's and the nodes' namespaces (the default; works with either runtime).
	InstallProcesses = "processes"
	// InstallHelm: the lab installs the Helm chart (deploy/helm/sluice) onto real nodes, as a
	// user would: the controllers are a Deployment, the agents a DaemonSet, and the lab
	// starts none of them.
	InstallHelm = "helm"
)

// ReleaseName and ReleaseNamespace are the lab's Helm release of Sluice.
const (
	ReleaseName      = "sluice"
	ReleaseNamespace = "sluice-system"
)

// installsByHelm reports whether Sluice comes from the chart.
func (c *Config) installsByHelm() bool { return c.Install == InstallHelm }

// validateInstall checks the install mode against the rest of the lab.
func (c *Config) validateInstall() error {
	switch c.Install {
	case "", InstallProcesses:
		return nil
	case InstallHelm:
	default:
		return fmt.Errorf("--install %q: want %s or %s", c.Install, InstallProcesses, InstallHelm)
	}
	switch {
	case !c.RealNodes():
		return fmt.Errorf("--install %s needs real nodes (--runtime %s): the chart's pods are containers", InstallHelm, RuntimeContainerd)
	case c.PodNetwork != PodNetworkSluice:
		return fmt.Errorf("--install %s installs Sluice: it needs --pod-network %s", InstallHelm, PodNetworkSluice)
	}
	return nil
}

// ArchiveImageName reads the image name an OCI layout archive carries in its index
// (the annotation `ctr images import` names the image by).
func ArchiveImageName(archive string) (string, error) {
	idx, err := image.ReadArchiveIndex(archive)
	if err != nil {
		return "", err
	}
	for _, m := range idx.Manifests {
		if n := m.Annotations[image.AnnotationImageName]; n != "" {
			return n, nil
		}
	}
	return "", fmt.Errorf("%s: index.json names no image (annotation %s)", archive, image.AnnotationImageName)
}

// splitImage splits name:tag (the tag after the last colon that follows the last slash).
func splitImage(ref string) (repo, tag string) {
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// ChartValues are the values the lab installs the chart with: the lab's networks, the
// image imported into the nodes, and the API server's fabric address (the agents replace
// kube-proxy, so nothing serves the kubernetes Service before they run).
func (c *Config) ChartValues(image string) []string {
	repo, tag := splitImage(image)
	cp := c.ControlPlane()
	return []string{
		"image.repository=" + repo,
		"image.tag=" + tag,
		"image.pullPolicy=Never",
		"kubernetesAPI.host=" + cp.Addr.String(),
		"kubernetesAPI.port=6443",
		"clusterNetworks[0].cidr=" + LabClusterCIDR,
		"clusterNetworks[0].hostSubnetLength=" + strconv.Itoa(LabHostSubnetLength),
		"serviceNetwork=" + c.ServiceCIDR.String(),
		"serviceProxy.enabled=" + strconv.FormatBool(c.kubeProxyMode() == ""),
		"agent.netnsDirs[0]=" + nodeNetnsDir,
	}
}

// writeChart copies the embedded chart into the state directory and returns its path.
func (c *Config) writeChart() (string, error) {
	dir := c.Path("chart", "sluice")
	os.RemoveAll(dir)
	os.Remove(c.chartInstalledPath())
	return dir, os.CopyFS(dir, deploy.Chart())
}

// installChart imports the Sluice image into every node and installs (or upgrades) the
// release, waiting until the agents and controllers are Ready.
func (l *Lab) installChart(ctx context.Context) error {
	c := l.C
	if c.SluiceImage == "" {
		archive, err := l.buildSluiceImage(ctx)
		if err != nil {
			return fmt.Errorf("no --sluice-image given, and building one failed: %w", err)
		}
		c.SluiceImage = archive
		if err := c.Save(); err != nil {
			return err
		}
	}
	image, err := ArchiveImageName(c.SluiceImage)
	if err != nil {
		return fmt.Errorf("--sluice-image: %w", err)
	}
	if err := l.ImportImages(ctx, c.SluiceImage); err != nil {
		return err
	}
	helm, err := kubebuild.EnsureHelm(ctx, l.Out)
	if err != nil {
		return err
	}
	chart, err := c.writeChart()
	if err != nil {
		return err
	}
	args := []string{helm, "--kubeconfig=" + c.Kubeconfig(), "upgrade", "--install", ReleaseName, chart,
		"--namespace", ReleaseNamespace, "--create-namespace", "--wait", "--timeout", "5m"}
	for _, v := range c.ChartValues(image) {
		args = append(args, "--set", v)
	}
	start := time.Now()
	fmt.Fprintf(l.Out, "installing Sluice (%s) with Helm: release %s/%s\n", image, ReleaseNamespace, ReleaseName)
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	if out, err := l.R.Run(ctx, args...); err != nil {
		return fmt.Errorf("helm install: %w\n%s", err, out)
	}
	fmt.Fprintf(l.Out, "Sluice installed and ready in %s\n", time.Since(start).Round(100*time.Millisecond))
	return os.WriteFile(c.chartInstalledPath(), []byte(image+"\n"), 0o644)
}

// chartInstalledPath marks a lab whose release was installed (a resumed up that failed
// before installs it then).
func (c *Config) chartInstalledPath() string { return c.Path("chart", "installed") }

// chartPending reports whether up still has the chart to install.
func (c *Config) chartPending() bool {
	if !c.installsByHelm() {
		return false
	}
	_, err := os.Stat(c.chartInstalledPath())
	return err != nil
}

// buildSluiceImage builds Sluice's image from the source tree the lab runs in, as
// `make images` does (static binaries on the cached Debian root file system), into the
// state directory, and returns the archive.
func (l *Lab) buildSluiceImage(ctx context.Context) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	src, err := image.FindSource(wd)
	if err != nil {
		return "", fmt.Errorf("%w (run from the repository, or build one with `make images`)", err)
	}
	// Only the Sluice image: the nodes' pause and test-server images come from
	// ensureNodeImages.
	dir := l.C.Path("images")
	bin := filepath.Join(dir, "bin")
	if err := image.GoBuild(ctx, src, bin, version.Version, l.Out, image.SluiceBinaries...); err != nil {
		return "", err
	}
	o := image.Options{OutDir: dir, BinDir: bin, Log: l.Out, Rootfs: image.DefaultRootfs()}
	rfs, err := image.EnsureRootfs(ctx, o.Rootfs, false, l.Out)
	if err != nil {
		return "", err
	}
	r, err := image.BuildSluice(o, rfs)
	return r.Archive, err
}

// ensureNodeImages gives a new lab of real nodes the pause and test-server images when
// it was given no image archives: `sluice-lab images` builds them, without the Debian root
// file system.
func (l *Lab) ensureNodeImages(ctx context.Context) error {
	if !l.C.RealNodes() || len(l.C.ImageArchives) > 0 {
		return nil
	}
	imgs, err := image.EnsureLabImages(ctx, image.LabOptions{OutDir: l.C.Path("images", "lab"), Log: l.Out})
	if err != nil {
		return fmt.Errorf("the pause and test-server images (none given with --image-archive): %w", err)
	}
	l.C.ImageArchives = []string{imgs.Pause.Archive, imgs.TestServer.Archive}
	fmt.Fprintf(l.Out, "images for the nodes: %s, %s\n", imgs.Pause.Ref, imgs.TestServer.Ref)
	return l.C.Save()
}
