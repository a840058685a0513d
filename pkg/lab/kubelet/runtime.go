package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Sandbox is what a container runtime calls a pod sandbox; in the lab it is a
// network namespace.
type Sandbox struct {
	ContainerID string // the infra container's ID, as CNI sees it
	Netns       string // namespace name (its path is netns.Path(Netns))
	NetnsPath   string
	Namespace   string
	Name        string
	UID         string
}

// Network is the pod network as the kubelet drives it: CNI in real life, a
// fake in unit tests.
type Network interface {
	// Add attaches the sandbox to the pod network and returns its addresses.
	Add(ctx context.Context, sb Sandbox) ([]netip.Addr, error)
	// Del detaches it; it succeeds for a sandbox the network does not know.
	Del(ctx context.Context, sb Sandbox) error
	// GC tells the network which attachments are still valid.
	GC(ctx context.Context, valid []Sandbox) error
}

// ErrNoNetworkConfig is returned while the node's CNI directory holds no
// network configuration: there is no pod network to attach to.
var ErrNoNetworkConfig = errors.New("no CNI network configuration")

// CNI is the real Network: libcni with the node's own configuration and
// plugin directories, exactly as a container runtime uses it.
type CNI struct {
	ConfDir  string
	BinDir   string
	CacheDir string
}

var _ Network = &CNI{}

// load picks the first configuration file in lexical order, as containerd
// and CRI-O do, accepting .conflist and the older single-plugin .conf/.json.
func (c *CNI) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(c.ConfDir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory %s: %w", c.ConfDir, err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("%w in %s (the pod network's agent writes one when it starts on this node)", ErrNoNetworkConfig, c.ConfDir)
	}
	f := files[0]
	if strings.HasSuffix(f, ".conflist") {
		l, err := libcni.ConfListFromFile(f)
		if err != nil {
			return nil, fmt.Errorf("CNI configuration %s: %w", f, err)
		}
		return l, nil
	}
	conf, err := libcni.ConfFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", f, err)
	}
	l, err := libcni.ConfListFromConf(conf)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", f, err)
	}
	return l, nil
}

func (c *CNI) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{c.BinDir}, c.CacheDir, nil)
}

func runtimeConf(sb Sandbox) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: sb.ContainerID,
		NetNS:       sb.NetnsPath,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", sb.Namespace},
			{"K8S_POD_NAME", sb.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sb.ContainerID},
			{"K8S_POD_UID", sb.UID},
		},
	}
}

func (c *CNI) Add(ctx context.Context, sb Sandbox) ([]netip.Addr, error) {
	list, err := c.load()
	if err != nil {
		return nil, err
	}
	res, err := c.cni().AddNetworkList(ctx, list, runtimeConf(sb))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (network %q): %w", list.Name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (network %q) returned an unusable result: %w", list.Name, err)
	}
	var ips []netip.Addr
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("CNI ADD (network %q) returned no IP address", list.Name)
	}
	return ips, nil
}

func (c *CNI) Del(ctx context.Context, sb Sandbox) error {
	list, err := c.load()
	if errors.Is(err, ErrNoNetworkConfig) {
		// Nothing can have been attached through a configuration that is
		// gone; the namespace is deleted next, which removes its links.
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.cni().DelNetworkList(ctx, list, runtimeConf(sb)); err != nil {
		return fmt.Errorf("CNI DEL (network %q): %w", list.Name, err)
	}
	return nil
}

func (c *CNI) GC(ctx context.Context, valid []Sandbox) error {
	list, err := c.load()
	if errors.Is(err, ErrNoNetworkConfig) {
		return nil
	}
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, sb := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: sb.ContainerID, IfName: "eth0"})
	}
	return c.cni().GCNetworkList(ctx, list, args)
}

// record is the kubelet's durable memory of one pod sandbox, written before
// the sandbox is created so that a crash at any point leaves enough to clean
// up after.
type podRecord struct {
	Sandbox
	IPs      []netip.Addr `json:"ips,omitempty"`
	Attached bool         `json:"attached"` // CNI ADD succeeded
	Restarts int32        `json:"restarts"`
	Started  bool         `json:"started"` // the test server was started at least once
}

func (r *podRecord) key() string { return r.Namespace + "/" + r.Name }

func recordPath(dir, uid string) string { return filepath.Join(dir, uid+".json") }

func removeRecord(dir, uid string) error {
	for _, ext := range []string{".json", ".pid"} {
		if err := os.Remove(filepath.Join(dir, uid+ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
