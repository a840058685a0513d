package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs a command and returns its combined output. The real one execs;
// tests use a fake that records.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// ExecRunner is the real Runner.
type ExecRunner struct{}

func (ExecRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// TopologyCommands are the iproute2 commands that build the fabric: a lab
// namespace holding a bridge, and one namespace per member attached to it by
// a veth pair (eth0 inside the member, v-NAME on the bridge).
func TopologyCommands(c *Config) [][]string {
	f := c.FabricNetns()
	cmds := [][]string{
		{"ip", "netns", "add", f},
		{"ip", "-n", f, "link", "set", "lo", "up"},
		{"ip", "-n", f, "link", "add", bridgeName, "type", "bridge"},
		{"ip", "-n", f, "link", "set", bridgeName, "up"},
	}
	for _, m := range c.Members() {
		peer := "v-" + m.Name
		cmds = append(cmds,
			[]string{"ip", "netns", "add", m.Netns},
			[]string{"ip", "-n", m.Netns, "link", "set", "lo", "up"},
			[]string{"ip", "link", "add", peer, "netns", f, "type", "veth", "peer", "name", "eth0", "netns", m.Netns},
			[]string{"ip", "-n", f, "link", "set", peer, "master", bridgeName, "up"},
			[]string{"ip", "-n", m.Netns, "addr", "add", fmt.Sprintf("%s/%d", m.Addr, c.Fabric.Bits()), "dev", "eth0"},
			[]string{"ip", "-n", m.Netns, "link", "set", "eth0", "up"},
		)
	}
	return cmds
}

// BuildTopology runs TopologyCommands.
func BuildTopology(ctx context.Context, r Runner, c *Config) error {
	for _, argv := range TopologyCommands(c) {
		if _, err := r.Run(ctx, argv...); err != nil {
			return err
		}
	}
	return nil
}

// TopologyHealthy reports whether every namespace exists and every member has
// its fabric address; if not, it says what is missing.
func TopologyHealthy(ctx context.Context, r Runner, c *Config) (bool, string) {
	out, err := r.Run(ctx, "ip", "netns", "list")
	if err != nil {
		return false, err.Error()
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			have[f[0]] = true
		}
	}
	for _, ns := range c.Namespaces() {
		if !have[ns] {
			return false, "network namespace " + ns + " is missing"
		}
	}
	for _, m := range c.Members() {
		out, err := r.Run(ctx, "ip", "-n", m.Netns, "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(string(out), " "+m.Addr.String()+"/") {
			return false, fmt.Sprintf("%s has no address %s on eth0", m.Netns, m.Addr)
		}
	}
	return true, ""
}

// ListNetns returns the names from `ip netns list`.
func ListNetns(ctx context.Context, r Runner) ([]string, error) {
	out, err := r.Run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}
