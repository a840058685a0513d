package kubelet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/lab/testserver"
	"github.com/sluice-net/sluice/pkg/netns"
)

// IPNetns is the real Sandboxes: named namespaces through iproute2, so they
// show in `ip netns list` like any other.
type IPNetns struct{}

var _ Sandboxes = IPNetns{}

func (IPNetns) Create(ctx context.Context, name string) (string, error) {
	if netns.Exists(name) {
		return netns.Path(name), nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return netns.Path(name), nil
}

func (IPNetns) Delete(ctx context.Context, name string) error {
	if !netns.Exists(name) {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (IPNetns) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(netns.RunDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}

// TestServers is the real Containers: `sluice-lab serve` inside the pod's
// namespace, detached, so that pods keep running across kubelet restarts.
type TestServers struct {
	Self string // the sluice-lab executable
	Dir  string // pid and log files
}

var _ Containers = &TestServers{}

func (t *TestServers) pidFile(r *podRecord) string { return filepath.Join(t.Dir, r.UID+".pid") }

func (t *TestServers) Start(r *podRecord, p testserver.Ports) error {
	argv := []string{t.Self, "nsexec", r.NetnsPath, "--", t.Self, "serve", "--name=" + r.Name}
	for _, x := range []struct {
		flag  string
		ports []int
	}{{"--tcp", p.TCP}, {"--udp", p.UDP}, {"--sctp", p.SCTP}} {
		if len(x.ports) > 0 {
			s := make([]string, len(x.ports))
			for i, n := range x.ports {
				s[i] = strconv.Itoa(n)
			}
			argv = append(argv, x.flag+"="+strings.Join(s, ","))
		}
	}
	_, err := proc.Start(proc.Spec{
		Name:    r.key(),
		Argv:    argv,
		LogFile: filepath.Join(t.Dir, r.UID+".log"),
		PidFile: t.pidFile(r),
	})
	return err
}

func (t *TestServers) Running(r *podRecord) bool { return proc.Running(t.pidFile(r)) != 0 }

func (t *TestServers) Stop(r *podRecord, grace time.Duration) error {
	defer os.Remove(filepath.Join(t.Dir, r.UID+".log"))
	return proc.Stop(t.pidFile(r), max(grace, 100*time.Millisecond))
}
