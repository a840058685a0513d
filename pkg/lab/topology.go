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

// FabricCommands make the lab's fabric: a namespace holding a bridge.
func FabricCommands(c *Config) [][]string {
	f := c.FabricNetns()
	return [][]string{
		{"ip", "netns", "add", f},
		{"ip", "-n", f, "link", "set", "lo", "up"},
		{"ip", "-n", f, "link", "add", bridgeName, "type", "bridge"},
		{"ip", "-n", f, "link", "set", bridgeName, "up"},
	}
}

// MemberCommands attach one member to the fabric: its namespace, and a veth
// pair with eth0 inside the member and v-NAME on the bridge.
func MemberCommands(c *Config, m Member) [][]string {
	f := c.FabricNetns()
	peer := "v-" + m.Name
	return [][]string{
		{"ip", "netns", "add", m.Netns},
		{"ip", "-n", m.Netns, "link", "set", "lo", "up"},
		{"ip", "link", "add", peer, "netns", f, "type", "veth", "peer", "name", "eth0", "netns", m.Netns},
		{"ip", "-n", f, "link", "set", peer, "master", bridgeName, "up"},
		{"ip", "-n", m.Netns, "addr", "add", fmt.Sprintf("%s/%d", m.Addr, c.Fabric.Bits()), "dev", "eth0"},
		{"ip", "-n", m.Netns, "link", "set", "eth0", "up"},
	}
}

// TopologyCommands are all the commands that build the lab's network.
func TopologyCommands(c *Config) [][]string {
	cmds := FabricCommands(c)
	for _, m := range c.Members() {
		cmds = append(cmds, MemberCommands(c, m)...)
	}
	return cmds
}

func run(ctx context.Context, r Runner, cmds [][]string) error {
	for _, argv := range cmds {
		if _, err := r.Run(ctx, argv...); err != nil {
			return err
		}
	}
	return nil
}

// memberHealthy reports whether the member's namespace exists with its
// address on eth0.
func memberHealthy(ctx context.Context, r Runner, have map[string]bool, m Member) bool {
	if !have[m.Netns] {
		return false
	}
	out, err := r.Run(ctx, "ip", "-n", m.Netns, "-o", "-4", "addr", "show", "dev", "eth0")
	return err == nil && strings.Contains(string(out), " "+m.Addr.String()+"/")
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
		if !memberHealthy(ctx, r, have, m) {
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
