package lab

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// Component is one long-running process of the lab.
type Component struct {
	Name  string   // etcd, kube-apiserver, …, kubelet-node1, external, forwarder
	Netns string   // namespace it runs in; empty for the host's
	Argv  []string // program and arguments (without the namespace wrapper)
	// Health is a URL checked from inside Netns ("" = process alive is
	// enough); unix://PATH is a socket that accepts connections.
	Health string
	// MountNSOf names the component whose mount and network namespaces this
	// one enters (a real node's namespace holder); Netns is then its
	// network namespace too.
	MountNSOf string
	// Env is added to the lab's environment.
	Env []string
}

// PKI returns the directory of the lab's certificates.
func (c *Config) PKI() string { return c.Path("pki") }

func (c *Config) pem(name, ext string) string { return filepath.Join(c.PKI(), name+"."+ext) }

// ControlPlaneComponents renders the command lines of etcd and the Kubernetes
// control plane. bin is the directory of the cached Kubernetes binaries.
func ControlPlaneComponents(c *Config, bin string) []Component {
	cp := c.ControlPlane()
	etcd := Component{
		Name:  "etcd",
		Netns: cp.Netns,
		Argv: []string{filepath.Join(bin, "etcd"),
			"--name=lab",
			"--data-dir=" + c.Path("etcd"),
			"--listen-client-urls=http://127.0.0.1:2379",
			"--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380",
			"--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=lab=http://127.0.0.1:2380",
			"--listen-metrics-urls=http://127.0.0.1:2381",
			"--log-level=warn",
		},
		Health: "http://127.0.0.1:2379/health",
	}
	apiserver := Component{
		Name:  "kube-apiserver",
		Netns: cp.Netns,
		Argv: []string{filepath.Join(bin, "kube-apiserver"),
			"--etcd-servers=http://127.0.0.1:2379",
			"--bind-address=0.0.0.0",
			"--secure-port=6443",
			"--advertise-address=" + cp.Addr.String(),
			"--tls-cert-file=" + c.pem("apiserver", "crt"),
			"--tls-private-key-file=" + c.pem("apiserver", "key"),
			"--client-ca-file=" + c.pem("ca", "crt"),
			"--kubelet-client-certificate=" + c.pem("apiserver-kubelet-client", "crt"),
			"--kubelet-client-key=" + c.pem("apiserver-kubelet-client", "key"),
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
			"--service-node-port-range=30000-32767",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(c.PKI(), "sa.pub"),
			"--service-account-signing-key-file=" + c.pem("sa", "key"),
			"--allow-privileged=true",
			// Logs, exec and port-forward reach a (real) kubelet at the node's
			// fabric address, checked against the lab CA.
			"--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
			"--kubelet-certificate-authority=" + c.pem("ca", "crt"),
			"--profiling=false",
			"--v=1",
		},
		Health: "https://127.0.0.1:6443/readyz",
	}
	kcm := Component{
		Name:  "kube-controller-manager",
		Netns: cp.Netns,
		Argv: []string{filepath.Join(bin, "kube-controller-manager"),
			"--kubeconfig=" + c.Path("kubeconfigs", "controller-manager.conf"),
			"--authentication-kubeconfig=" + c.Path("kubeconfigs", "controller-manager.conf"),
			"--authorization-kubeconfig=" + c.Path("kubeconfigs", "controller-manager.conf"),
			"--bind-address=127.0.0.1",
			"--secure-port=10257",
			"--controllers=*",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + c.pem("sa", "key"),
			"--root-ca-file=" + c.pem("ca", "crt"),
			"--cluster-signing-cert-file=" + c.pem("ca", "crt"),
			"--cluster-signing-key-file=" + c.pem("ca", "key"),
			"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		},
		Health: "https://127.0.0.1:10257/healthz",
	}
	sched := Component{
		Name:  "kube-scheduler",
		Netns: cp.Netns,
		Argv: []string{filepath.Join(bin, "kube-scheduler"),
			"--kubeconfig=" + c.Path("kubeconfigs", "scheduler.conf"),
			"--authentication-kubeconfig=" + c.Path("kubeconfigs", "scheduler.conf"),
			"--authorization-kubeconfig=" + c.Path("kubeconfigs", "scheduler.conf"),
			"--bind-address=127.0.0.1",
			"--secure-port=10259",
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		},
		Health: "https://127.0.0.1:10259/healthz",
	}
	return []Component{etcd, apiserver, kcm, sched}
}

// HostComponents renders the lab's own processes: the loopback forwarder to
// the API server, the external host's test server and one kubelet per node.
// self is the sluice-lab executable.
func HostComponents(c *Config, self string) []Component {
	cp := c.ControlPlane()
	comps := []Component{
		{
			Name: "api-forwarder",
			Argv: []string{self, "forward",
				"--listen=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort)),
				"--netns=" + cp.Netns,
				"--to=" + net.JoinHostPort(cp.Addr.String(), "6443")},
		},
		{
			Name:  "external",
			Netns: c.External().Netns,
			Argv:  []string{self, "serve", "--name=external", "--tcp=8080", "--udp=8080", "--sctp=8080"},
		},
	}
	for _, n := range c.NodeNames() {
		m, _ := c.Node(n)
		if c.RealNodes() {
			comps = append(comps, realKubelet(c, n, kubebuild.NodeRuntimeDir()))
			continue
		}
		comps = append(comps, Component{
			Name:  "kubelet-" + n,
			Netns: m.Netns,
			Argv:  []string{self, "kubelet", "--state-dir=" + c.StateDir, "--node=" + n},
		})
	}
	return comps
}

// PidFile and LogFile of a component.
func (c *Config) PidFile(comp string) string { return c.Path("run", comp+".pid") }
func (c *Config) LogFile(comp string) string { return c.Path("logs", comp+".log") }

// describe is a one-line summary for progress output.
func (comp Component) describe() string {
	if comp.Netns == "" {
		return fmt.Sprintf("%s (host)", comp.Name)
	}
	return fmt.Sprintf("%s (in %s)", comp.Name, comp.Netns)
}
