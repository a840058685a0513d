// Package labcmd is the command line of sluice-lab.
package labcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/lab/kubelet"
	"github.com/sluice-net/sluice/pkg/lab/testserver"
	"github.com/sluice-net/sluice/pkg/netns"
)

// ExitError carries an exit status without a message of its own.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return "exit status " + strconv.Itoa(e.Code) }

// Main runs the command line and returns the process exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer klog.Flush()
	root := NewRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	fmt.Fprintf(os.Stderr, "sluice-lab: %v\n", err)
	return 1
}

// NewRoot builds the command tree.
func NewRoot() *cobra.Command {
	var stateDir string
	root := &cobra.Command{
		Use:           "sluice-lab",
		Short:         "A real multi-node Kubernetes cluster on one machine, for Sluice",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `sluice-lab runs a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, built from the Go module proxy) and
nodes that are network namespaces on a bridged fabric, each with a lab kubelet
that runs pods in network namespaces through CNI.`,
	}
	root.PersistentFlags().StringVar(&stateDir, "state-dir", "", "the lab's state directory (default $SLUICE_LAB_STATE_DIR or "+lab.DefaultStateDir+")")
	// The lab's own processes (kubelets, forwarder, test servers) log with klog, as
	// client-go does inside them; -v is klog's verbosity. Only -v is offered: the rest of
	// klog's flags (log files, headers) are not needed by processes whose output the lab
	// already writes to a file each.
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	v := klogFlags.Lookup("v")
	v.Usage = "log verbosity of the lab's processes (kubelets, forwarder, test servers) and of client-go in them"
	root.PersistentFlags().AddGoFlag(v)
	sd := func() (string, error) { return lab.StateDirFrom(stateDir) }
	open := func(cmd *cobra.Command) (*lab.Lab, error) {
		d, err := sd()
		if err != nil {
			return nil, err
		}
		return lab.Open(d, cmd.OutOrStdout())
	}

	// up
	var nodes, apiPort int
	var demo bool
	var podNetwork, serviceProxy, sluiceBinDir, runtime string
	var imageArchives []string
	var install, sluiceImage string
	up := &cobra.Command{
		Use:   "up [--nodes N] [--state-dir DIR] [--demo]",
		Short: "Start the lab (idempotent: resumes a half-started lab, leaves a running one alone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := sd()
			if err != nil {
				return err
			}
			o := lab.UpOptions{StateDir: d, Demo: demo, PodNetwork: podNetwork, ServiceProxy: serviceProxy, SluiceBinDir: sluiceBinDir, Runtime: runtime, ImageArchives: imageArchives,
				Install: install, SluiceImage: sluiceImage}
			if err := lab.ValidRuntime(runtime); err != nil {
				return err
			}
			if cmd.Flags().Changed("nodes") {
				if nodes < 1 || nodes > lab.MaxNodes {
					return fmt.Errorf("--nodes %d: want 1 to %d", nodes, lab.MaxNodes)
				}
				o.Nodes = nodes
			}
			if cmd.Flags().Changed("api-port") {
				if apiPort < 1 || apiPort > 65535 {
					return fmt.Errorf("--api-port %d: want 1 to 65535", apiPort)
				}
				o.APIPort = apiPort
			}
			l, err := lab.Up(cmd.Context(), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return l.Status(cmd.Context(), cmd.OutOrStdout())
		},
	}
	up.Flags().IntVar(&nodes, "nodes", 3, "number of nodes (on an existing lab, a larger number adds nodes)")
	up.Flags().IntVar(&apiPort, "api-port", lab.DefaultAPIPort, "loopback port on the host forwarded to the API server (new lab only)")
	up.Flags().BoolVar(&demo, "demo", false, "deploy the demo workload and print its connectivity matrix")
	up.Flags().StringVar(&podNetwork, "pod-network", "", "sluice (default: Sluice's controller and agents) or none (new lab only)")
	up.Flags().StringVar(&serviceProxy, "service-proxy", "", "sluice (default: the agents load-balance Services), kube-proxy-nftables or kube-proxy-iptables (new lab only)")
	up.Flags().StringVar(&runtime, "runtime", "", "lab (default: the lab kubelet, pods are network namespaces) or containerd (real kubelet, containerd and runc on every node; new lab only)")
	up.Flags().StringVar(&install, "install", "", "how Sluice gets onto the nodes: processes (default: the lab starts controllers and agents) or helm (the chart, as a user installs it; needs --runtime containerd; new lab only)")
	up.Flags().StringVar(&sluiceImage, "sluice-image", "", "with --install helm: the OCI archive of Sluice's image, as make images writes it (default: built from the source tree sluice-lab runs in)")
	up.Flags().StringSliceVar(&imageArchives, "image-archive", nil, "with --runtime containerd: an image archive (OCI layout or docker save tar) to import into every node's containerd (repeatable; remembered for nodes added later; default for a new lab: the pause and test-server images of sluice-lab images, built from the source tree)")
	up.Flags().StringVar(&sluiceBinDir, "sluice-bin-dir", "", "directory with sluice-controller, sluice-agent, sluice-cni (default: beside sluice-lab)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop everything and remove every namespace, link and file of the lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := sd()
			if err != nil {
				return err
			}
			return lab.Down(cmd.Context(), d, cmd.OutOrStdout())
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show components, nodes and pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open(cmd)
			if err != nil {
				return err
			}
			return l.Status(cmd.Context(), cmd.OutOrStdout())
		},
	}

	kubeconfig := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the administrator's kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), l.C.Kubeconfig())
			return nil
		},
	}

	kubectl := &cobra.Command{
		Use:                "kubectl -- ARGS…",
		Short:              "Run the lab's kubectl against the lab",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flag parsing is off so kubectl sees its own flags; pick ours out.
			rest := takeStateDir(args, &stateDir)
			l, err := open(cmd)
			if err != nil {
				return err
			}
			bin, err := kubebuild.Ensure(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return runExit(bin+"/kubectl", append([]string{"--kubeconfig=" + l.C.Kubeconfig()}, rest...))
		},
	}

	execCmd := &cobra.Command{
		Use:   "exec NAMESPACE/POD|node/NODE|external -- CMD…",
		Short: "Run CMD inside a pod's, a node's or the external host's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: sluice-lab exec TARGET -- CMD…")
			}
			l, err := open(cmd)
			if err != nil {
				return err
			}
			code, err := l.Exec(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitError{code}
			}
			return nil
		},
	}

	var timeout, interval time.Duration
	var source string
	var sourcePort uint16
	var count int
	probe := &cobra.Command{
		Use:   "probe tcp|udp|sctp HOST:PORT [--timeout D] [--source IP] [--source-port P] [--count N]",
		Short: "Send one connection or datagram to a lab test server and print its reply",
		Long: `Send one connection or datagram to a lab test server and print its reply.
With --count N, send N probes one after another (each a new connection) and
print one line per probe: the reply, or "error: …"; the exit status is 1 if
any failed.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var src netip.Addr
			if source != "" {
				var err error
				if src, err = netip.ParseAddr(source); err != nil {
					return fmt.Errorf("--source %q: not an IP address", source)
				}
			}
			if count < 1 {
				return fmt.Errorf("--count %d: want at least 1", count)
			}
			failed := false
			for i := range count {
				if i > 0 && interval > 0 {
					time.Sleep(interval)
				}
				line, err := testserver.ProbeFrom(cmd.Context(), args[0], netip.AddrPortFrom(src, sourcePort), args[1], timeout)
				switch {
				case err != nil && count == 1:
					fmt.Fprintf(cmd.ErrOrStderr(), "sluice-lab probe: %s %s: %v\n", args[0], args[1], err)
					return ExitError{1}
				case err != nil:
					fmt.Fprintf(cmd.OutOrStdout(), "error: %v\n", err)
					failed = true
				default:
					fmt.Fprintln(cmd.OutOrStdout(), line)
				}
			}
			if failed {
				return ExitError{1}
			}
			return nil
		},
	}
	probe.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for each reply")
	probe.Flags().StringVar(&source, "source", "", "source address to send from (must be assigned locally)")
	probe.Flags().Uint16Var(&sourcePort, "source-port", 0, "source port to send from (default: any)")
	probe.Flags().IntVar(&count, "count", 1, "number of probes, one after another")
	probe.Flags().DurationVar(&interval, "interval", 0, "pause between probes with --count")

	var mo lab.MatrixOptions
	var asJSON bool
	matrix := &cobra.Command{
		Use:   "matrix [-n NAMESPACE…] [--port P] [--protocol tcp]",
		Short: "Probe every pod from every pod with real packets and print the truth table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open(cmd)
			if err != nil {
				return err
			}
			m, err := l.Matrix(cmd.Context(), mo)
			if err != nil {
				return err
			}
			if asJSON {
				return m.JSON(cmd.OutOrStdout())
			}
			m.Print(cmd.OutOrStdout())
			return nil
		},
	}
	matrix.Flags().StringSliceVarP(&mo.Namespaces, "namespace", "n", nil, "namespaces to include (repeatable; default all but kube-*)")
	matrix.Flags().IntVar(&mo.Port, "port", 80, "destination port")
	matrix.Flags().StringVar(&mo.Protocol, "protocol", "tcp", "tcp, udp or sctp")
	matrix.Flags().DurationVar(&mo.Timeout, "timeout", 2*time.Second, "per-probe timeout")
	matrix.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var buildRuntime string
	build := &cobra.Command{
		Use:   "build [--runtime containerd]",
		Short: "Build (once) the pinned Kubernetes and etcd binaries into the cache",
		Long: `Build (once) the pinned Kubernetes and etcd binaries into the cache. With
--runtime containerd, also the real nodes' kubelet, containerd and runc.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lab.ValidRuntime(buildRuntime); err != nil {
				return err
			}
			if buildRuntime == lab.RuntimeContainerd {
				d, err := kubebuild.EnsureNodeRuntime(cmd.Context(), cmd.OutOrStdout())
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			d, err := kubebuild.Ensure(cmd.Context(), cmd.OutOrStdout())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	build.Flags().StringVar(&buildRuntime, "runtime", lab.RuntimeLab, "lab, or containerd to build the real nodes' binaries too")

	root.AddCommand(up, down, status, kubeconfig, kubectl, execCmd, probe, matrix, build)
	root.AddCommand(helmCommand(&stateDir))
	root.AddCommand(imagesCommand())
	root.AddCommand(internalCommands(&stateDir)...)
	return root
}

// internalCommands are what the lab runs inside its namespaces.
func internalCommands(stateDir *string) []*cobra.Command {
	nsexec := &cobra.Command{
		Use:                "nsexec NETNS_PATH -- CMD…",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 3 || args[1] != "--" {
				return errors.New("usage: sluice-lab nsexec NETNS_PATH -- CMD…")
			}
			return netns.Exec(args[0], args[2:])
		},
	}

	var name string
	var tcp, udp, sctp []int
	serve := &cobra.Command{
		Use:   "serve [--name NAME] [--tcp P,…] [--udp P,…] [--sctp P,…]",
		Short: "Run the lab test server in the current network namespace",
		Long: `Run the lab test server in the current network namespace. It answers
with --name, or else $POD_NAME (in a container: the pod's name through the
downward API).`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				name = os.Getenv("POD_NAME")
			}
			if name == "" {
				return errors.New("serve: no name: give --name or set $POD_NAME")
			}
			s := &testserver.Server{Name: name, Ports: testserver.Ports{TCP: tcp, UDP: udp, SCTP: sctp}}
			return s.Run(cmd.Context())
		},
	}
	serve.Flags().StringVar(&name, "name", "", "name to answer with (default $POD_NAME)")
	serve.Flags().IntSliceVar(&tcp, "tcp", nil, "TCP ports")
	serve.Flags().IntSliceVar(&udp, "udp", nil, "UDP ports")
	serve.Flags().IntSliceVar(&sctp, "sctp", nil, "SCTP ports")

	var listen, nsName, to string
	forward := &cobra.Command{
		Use:    "forward --listen ADDR --netns NAME --to ADDR",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Forward(cmd.Context(), listen, netns.Path(nsName), to)
		},
	}
	forward.Flags().StringVar(&listen, "listen", "", "")
	forward.Flags().StringVar(&nsName, "netns", "", "")
	forward.Flags().StringVar(&to, "to", "", "")

	var node string
	kl := &cobra.Command{
		Use:    "kubelet --node NODE",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := lab.StateDirFrom(*stateDir)
			if err != nil {
				return err
			}
			c, err := lab.LoadConfig(d)
			if err != nil {
				return err
			}
			o, err := c.KubeletOptions(node)
			if err != nil {
				return err
			}
			rc, err := clientcmd.BuildConfigFromFlags("", c.NodeKubeconfig(node))
			if err != nil {
				return err
			}
			rc.QPS, rc.Burst = 50, 100
			if o.Client, err = kubernetes.NewForConfig(rc); err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Network = &kubelet.CNI{ConfDir: c.CNIConfDir(node), BinDir: c.CNIBinDir(node), CacheDir: c.NodeDir(node) + "/cni/cache"}
			o.Sandboxes = kubelet.IPNetns{}
			o.Containers = &kubelet.TestServers{Self: self, Dir: c.NodeDir(node) + "/pods"}
			o.Prober = kubelet.TCPProber{}
			return kubelet.New(o).Run(cmd.Context())
		},
	}
	kl.Flags().StringVar(&node, "node", "", "node name")
	kl.MarkFlagRequired("node")
	var binds []string
	var outerMntns string
	nodeMounts := &cobra.Command{
		Use:    "node-mounts --bind SRC:DST…",
		Short:  "Hold a real node's mount namespace: bind-mount the node's directories and wait",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.NodeMounts(cmd.Context(), outerMntns, binds)
		},
	}
	nodeMounts.Flags().StringArrayVar(&binds, "bind", nil, "SRC:DST to bind-mount")
	nodeMounts.Flags().StringVar(&outerMntns, "outer-mntns", "", "the mount namespace it must not be in (mnt:[INODE])")
	return []*cobra.Command{nsexec, serve, forward, kl, nodeMounts}
}

func runExit(bin string, args []string) error {
	cmd := execCommand(bin, args)
	err := cmd.Run()
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) {
		return ExitError{ee.ExitCode()}
	}
	return err
}
