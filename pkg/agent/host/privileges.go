package node

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Capabilities the agent needs (bit numbers from linux/capability.h).
var neededCapabilities = []struct {
	Name string
	Bit  uint
	Why  string
}{
	{"CAP_NET_ADMIN", 12, "links, addresses, routes and the nftables table"},
	{"CAP_SYS_ADMIN", 21, "entering pods' network namespaces (setns)"},
}

// Privileges is what the agent's process was given, as read from the kernel.
type Privileges struct {
	CapEff uint64 // effective capabilities (/proc/self/status CapEff)
	// Forwarding is net.ipv4.ip_forward ("0" or "1"); ForwardingWritable tells whether this
	// process could change it (false when /proc/sys is mounted read-only, as in an
	// unprivileged container).
	Forwarding         string
	ForwardingWritable bool
}

// Missing lists, one sentence each, what the agent lacks to run on this node; empty when
// nothing is missing.
func (p Privileges) Missing() []string {
	var out []string
	for _, c := range neededCapabilities {
		if p.CapEff&(1<<c.Bit) == 0 {
			out = append(out, fmt.Sprintf("capability %s is missing (needed for %s)", c.Name, c.Why))
		}
	}
	if p.Forwarding != "1" && !p.ForwardingWritable {
		out = append(out, fmt.Sprintf("net.ipv4.ip_forward is %q and /proc/sys is read-only here: set it to 1 on the node, or run the agent privileged", p.Forwarding))
	}
	return out
}

// checkPrivileges reports whether the process has what the agent needs. When it has not, it
// says which, once, in the log, on the Node as a Warning event, and in /readyz.
func (a *Agent) checkPrivileges() bool {
	read := a.Privileges
	if read == nil {
		read = ReadPrivileges
	}
	p, err := read()
	var missing []string
	if err != nil {
		missing = []string{"cannot read the process's privileges: " + err.Error()}
	} else {
		missing = p.Missing()
	}
	if len(missing) == 0 {
		if a.Health != nil {
			a.Health.Ready.Set("privileges", func() error { return nil })
		}
		return true
	}
	msg := "sluice-agent cannot run on this node: " + strings.Join(missing, "; ")
	a.Log.Error("missing privileges; not starting the pod network", "missing", strings.Join(missing, "; "))
	if a.Health != nil {
		a.Health.Ready.Set("privileges", func() error { return errors.New(strings.Join(missing, "; ")) })
	}
	if a.Events != nil {
		a.Events.Event(&corev1.ObjectReference{Kind: "Node", Name: a.NodeName, UID: types.UID(a.NodeName)},
			corev1.EventTypeWarning, "SluiceAgentMissingPrivileges", msg)
	}
	return false
}

// ReadPrivileges reads the running process's capabilities and the node's forwarding setting.
func ReadPrivileges() (Privileges, error) {
	var p Privileges
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return p, err
	}
	found := false
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			if p.CapEff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				return p, fmt.Errorf("/proc/self/status CapEff %q: %w", v, err)
			}
			found = true
		}
	}
	if !found {
		return p, errors.New("/proc/self/status has no CapEff line")
	}
	const fwd = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(fwd)
	if err != nil {
		return p, err
	}
	p.Forwarding = strings.TrimSpace(string(b))
	// Opening for writing writes nothing, and fails on a read-only mount (EROFS).
	if f, err := os.OpenFile(fwd, os.O_WRONLY, 0); err == nil {
		f.Close()
		p.ForwardingWritable = true
	} else if !errors.Is(err, syscall.EROFS) && !errors.Is(err, os.ErrPermission) {
		return p, err
	}
	return p, nil
}
