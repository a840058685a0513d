// Package host is what the agent installs on, and requires of, its node: the
// CNI plugin and its configuration, the privileges it checks before it
// starts, and the uninstall that removes all of it.
package host

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/sluice-net/sluice/pkg/health"
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

// Reporter is where CheckPrivileges says what is missing.
type Reporter struct {
	NodeName string
	Log      logr.Logger
	Health   *health.Server       // nil: no /readyz
	Events   record.EventRecorder // nil: no Node event
}

// CheckPrivileges reports whether the process has what the agent needs
// (read: ReadPrivileges in real life). When it has not, it says which,
// once, in the log, on the Node as a Warning event, and in /readyz.
func CheckPrivileges(read func() (Privileges, error), r Reporter) bool {
	p, err := read()
	var missing []string
	if err != nil {
		missing = []string{"cannot read the process's privileges: " + err.Error()}
	} else {
		missing = p.Missing()
	}
	if len(missing) == 0 {
		if r.Health != nil {
			r.Health.Ready.Set("privileges", func() error { return nil })
		}
		return true
	}
	msg := "sluice-agent cannot run on this node: " + strings.Join(missing, "; ")
	r.Log.Error(nil, "Missing privileges; not starting the pod network", "missing", strings.Join(missing, "; "))
	if r.Health != nil {
		r.Health.Ready.Set("privileges", func() error { return errors.New(strings.Join(missing, "; ")) })
	}
	if r.Events != nil {
		r.Events.Event(&corev1.ObjectReference{Kind: "Node", Name: r.NodeName, UID: types.UID(r.NodeName)},
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
