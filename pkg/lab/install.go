package lab

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/deploy"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
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
	case c.SluiceImage == "":
		return fmt.Errorf("--install %s: no Sluice image archive (--sluice-image, as `make images` writes)", InstallHelm)
	}
	return nil
}

// ArchiveImageName reads the image name an OCI layout archive carries in its index
// (the annotation `ctr images import` names the image by).
func ArchiveImageName(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no index.json (not an OCI image layout archive)", archive)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", archive, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", fmt.Errorf("%s: index.json: %w", archive, err)
		}
		for _, m := range idx.Manifests {
			if n := m.Annotations["io.containerd.image.name"]; n != "" {
				return n, nil
			}
		}
		return "", fmt.Errorf("%s: index.json names no image (annotation io.containerd.image.name)", archive)
	}
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
	err := fs.WalkDir(deploy.Chart(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(deploy.Chart(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	return dir, err
}

// installChart imports the Sluice image into every node and installs (or upgrades) the
// release, waiting until the agents and controllers are Ready.
func (l *Lab) installChart(ctx context.Context) error {
	c := l.C
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
	return nil
}
