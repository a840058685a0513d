// Command bench-install measures Sluice installed as users install it, on the lab's real
// nodes (kubelet, containerd, runc), against the reference CNI plugins (bridge + host-local)
// on the same kind of lab in the same run:
//
//   - helm install → networked: one pod per node is created on a lab without a pod network
//     (the pods wait for one), then `helm install` of the chart starts; the time until every
//     one of them is Running and Ready. For the reference, the same pods, then the bridge
//     conflist written on every node.
//   - pod start latency: pods created one at a time on a networked lab, each
//     create → Running and Ready observed by a watch before the next is created.
//
// Each repeat brings up a fresh lab for each system, alternating which goes first. The raw
// output is written to bench/results/ with the commit, and the Markdown table to stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

type system string

const (
	sluice system = "Sluice (helm)"
	bridge system = "bridge + host-local"
)

type sample struct {
	sys       system
	install   time.Duration   // → every node's pods networked
	podStarts []time.Duration // create → Running and Ready
}

var (
	labBin  string
	repeats = flag.Int("repeats", 3, "labs per system (alternating)")
	pods    = flag.Int("pods", 10, "pods started one at a time per lab")
	nodes   = flag.Int("nodes", 3, "nodes per lab")
	out     io.Writer // stderr and the raw file
	tab     io.Writer // stdout and the raw file
)

func main() {
	flag.Parse()
	root, err := image.FindSource(".")
	must(err)
	labBin = filepath.Join(root, "bin", "sluice-lab")
	commit, _ := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	dirty, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output()
	rev := strings.TrimSpace(string(commit))
	if len(dirty) > 0 {
		rev += "-dirty"
	}
	must(os.MkdirAll(filepath.Join(root, "bench", "results"), 0o755))
	raw := filepath.Join(root, "bench", "results", fmt.Sprintf("install-%s-%s.txt", time.Now().UTC().Format("20060102T150405Z"), rev))
	f, err := os.Create(raw)
	must(err)
	defer f.Close()
	out = io.MultiWriter(os.Stderr, f)
	tab = io.MultiWriter(os.Stdout, f)
	host, _ := os.Hostname()
	cpu, _ := exec.Command("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").Output()
	fmt.Fprintf(out, "bench-install at %s, %s, %d CPUs,%s, %d repeats, %d nodes, %d pods\n", rev, host, nproc(), strings.TrimRight(string(cpu), "\n"), *repeats, *nodes, *pods)

	ctx := context.Background()
	_, err = kubebuild.EnsureNodeRuntime(ctx, out)
	must(err)
	plugins, err := kubebuild.EnsureReferencePlugins(ctx, out)
	must(err)
	work, err := os.MkdirTemp("", "bench-install-")
	must(err)
	defer os.RemoveAll(work)
	imgs := filepath.Join(work, "images")
	cmd := exec.Command(labBin, "images", "--bin-dir", filepath.Join(root, "bin", "static"), "--out", imgs, "--version", "bench")
	cmd.Stdout, cmd.Stderr = out, out
	must(cmd.Run())

	var samples []sample
	for r := 0; r < *repeats; r++ {
		order := []system{sluice, bridge}
		if r%2 == 1 {
			order = []system{bridge, sluice}
		}
		for _, sys := range order {
			s, err := run(ctx, sys, filepath.Join(work, fmt.Sprintf("lab-%d", r)), imgs, plugins)
			must(err)
			fmt.Fprintf(out, "repeat %d %s: networked %s; pod starts %v\n", r+1, sys, s.install.Round(time.Millisecond), rounded(s.podStarts))
			samples = append(samples, s)
		}
	}
	table(samples)
	fmt.Fprintf(os.Stderr, "raw output: %s\n", raw)
}

// run brings up a lab of real nodes without a pod network, creates one pod per node,
// installs the system, times until they are all Ready, then times pod starts.
func run(ctx context.Context, sys system, state, imgs, plugins string) (sample, error) {
	s := sample{sys: sys}
	lab1 := func(args ...string) error {
		c := labrun.Lab{Bin: labBin, StateDir: state}.Command(args...)
		c.Stdout, c.Stderr = io.Discard, out
		return c.Run()
	}
	defer lab1("down")
	if err := lab1("up", "--runtime", "containerd", "--pod-network", "none", "--nodes", fmt.Sprint(*nodes), "--api-port", "16490",
		"--image-archive", filepath.Join(imgs, "pause.tar"), "--image-archive", filepath.Join(imgs, "testserver.tar"),
		"--image-archive", filepath.Join(imgs, "sluice.tar")); err != nil {
		return s, fmt.Errorf("lab up: %w", err)
	}
	c, err := lab.LoadConfig(state)
	if err != nil {
		return s, err
	}
	cs, err := labrun.Client(c.Kubeconfig(), 0, 0)
	if err != nil {
		return s, err
	}
	m, err := image.ReadManifest(imgs)
	if err != nil {
		return s, err
	}
	ts, _ := m.Get("testserver")
	sl, _ := m.Get("sluice")
	ns := "bench"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return s, err
	}
	labrun.WaitServiceAccount(ctx, cs, ns, 100, 200*time.Millisecond) // pods are refused without it; a create fails below if it never shows
	var names []string
	for i, n := range c.NodeNames() {
		name := fmt.Sprintf("first-%d", i)
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, podSpec(name, n, ts.Ref), metav1.CreateOptions{}); err != nil {
			return s, err
		}
		names = append(names, name)
	}
	start := time.Now()
	switch sys {
	case sluice:
		args := []string{"helm", "--", "install", lab.ReleaseName, filepath.Join(sourceRoot(), "deploy", "helm", "sluice"),
			"--namespace", lab.ReleaseNamespace, "--create-namespace"}
		for _, v := range c.ChartValues(sl.Ref) {
			args = append(args, "--set", v)
		}
		if err := lab1(args...); err != nil {
			return s, fmt.Errorf("helm install: %w", err)
		}
	case bridge:
		for _, n := range c.NodeNames() {
			if err := installBridge(c, n, plugins); err != nil {
				return s, err
			}
		}
	}
	for _, name := range names {
		if err := waitReady(ctx, cs, ns, name, 5*time.Minute); err != nil {
			return s, fmt.Errorf("%s: %w", name, err)
		}
	}
	s.install = time.Since(start)

	for i := 0; i < *pods; i++ {
		node := c.NodeNames()[i%len(c.NodeNames())]
		name := fmt.Sprintf("p-%d", i)
		t0 := time.Now()
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, podSpec(name, node, ts.Ref), metav1.CreateOptions{}); err != nil {
			return s, err
		}
		if err := waitReady(ctx, cs, ns, name, 2*time.Minute); err != nil {
			return s, fmt.Errorf("%s: %w", name, err)
		}
		s.podStarts = append(s.podStarts, time.Since(t0))
		time.Sleep(500 * time.Millisecond) // let the node settle; the next create is timed alone
	}
	return s, nil
}

// installBridge gives a node the reference plugins and a bridge + host-local conflist
// with a per-node /24 (no routes between nodes: only the pods' start is measured).
func installBridge(c *lab.Config, node, plugins string) error {
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		b, err := os.ReadFile(filepath.Join(plugins, p))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.CNIBinDir(node), p), b, 0o755); err != nil {
			return err
		}
	}
	i := slices.Index(c.NodeNames(), node) + 1
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "bench-bridge", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
]}`, i)
	tmp := filepath.Join(c.CNIConfDir(node), ".10-bridge.conflist")
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.CNIConfDir(node), "10-bridge.conflist"))
}

func podSpec(name, node, img string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "server", Image: img, ImagePullPolicy: corev1.PullNever,
				Args: []string{"serve", "--name=" + name, "--tcp=8080"},
			}},
		},
	}
}

func waitReady(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("not Running and Ready within %s", timeout)
}

func table(samples []sample) {
	fmt.Fprintf(tab, "| system | helm install → 3 nodes' pods networked (s) | pod start, create → Ready (ms) |\n| --- | --- | --- |\n")
	med := map[system][2]time.Duration{}
	for _, sys := range []system{sluice, bridge} {
		var inst, starts []time.Duration
		for _, s := range samples {
			if s.sys == sys {
				inst = append(inst, s.install)
				starts = append(starts, s.podStarts...)
			}
		}
		mi, lo, hi := stats.Spread(inst)
		ms, slo, shi := stats.Spread(starts)
		med[sys] = [2]time.Duration{mi, ms}
		fmt.Fprintf(tab, "| %s | %.2f (%.2f–%.2f, %d labs) | %d (%d–%d, %d pods) |\n", sys, mi.Seconds(), lo.Seconds(), hi.Seconds(), len(inst),
			ms.Milliseconds(), slo.Milliseconds(), shi.Milliseconds(), len(starts))
	}
	fmt.Fprintf(tab, "| Sluice / bridge | %.2f | %.2f |\n", ratio(med[sluice][0], med[bridge][0]), ratio(med[sluice][1], med[bridge][1]))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func rounded(d []time.Duration) []time.Duration {
	var out []time.Duration
	for _, x := range d {
		out = append(out, x.Round(time.Millisecond))
	}
	return out
}

func sourceRoot() string {
	r, err := image.FindSource(".")
	must(err)
	return r
}

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-install:", err)
		os.Exit(1)
	}
}
