package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
)

// clients are the API clients of the commands that talk to a cluster.
type clients struct {
	kube   kubernetes.Interface
	sluice versioned.Interface
}

// newClients connects to the cluster of a kubeconfig: the file given, else $KUBECONFIG,
// else ~/.kube/config, with the current context. Tests replace it with fakes.
var newClients = func(kubeconfig string) (*clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "sluicectl"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	sluice, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("sluice client: %w", err)
	}
	return &clients{kube: kube, sluice: sluice}, nil
}

// pollInterval is how often a command looks whether the controller has applied a change.
var pollInterval = 50 * time.Millisecond

type podNetworkOptions struct {
	global  *globalOptions
	timeout time.Duration
	to      string
}

func newPodNetworkCommand(g *globalOptions) *cobra.Command {
	o := &podNetworkOptions{global: g}
	cmd := &cobra.Command{
		Use:   "pod-network",
		Short: "Join, isolate or make global the virtual networks (netIDs) of namespaces",
		Long: `Multitenant operations on namespaces' virtual networks (VNIDs), as OpenShift SDN's
"oc adm pod-network". Every namespace has a NetNamespace named after it whose spec.netID is its
VNID; in Multitenant mode pods reach pods of the same netID, and netID 0 (global) reaches and
is reached by all.

Each command asks sluice-controller for the change by setting the annotation
` + sluicev1alpha1.AnnotationMultitenantChange + ` on the NetNamespaces, waits until the controller
has applied it (--timeout), and prints the resulting netIDs. The controller makes the changes
one at a time, so that a netID it hands out to isolate a namespace is never handed out twice.

Exit status: 0 applied; 1 the controller refused a change (the reason is printed); 2 bad
input (an unknown namespace, a namespace without a NetNamespace, bad flags); 3 the cluster
could not be reached or the change was not applied within --timeout.`,
	}
	cmd.PersistentFlags().DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for sluice-controller to apply the change")

	join := &cobra.Command{
		Use:   "join-projects --to=NAMESPACE NAMESPACE...",
		Short: "Give namespaces the netID of the namespace --to, so that their pods reach each other",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.to == "" {
				return badInput("--to: the namespace to join is required")
			}
			return o.run(cmd, sluicev1alpha1.MultitenantChangeJoinPrefix+o.to, args)
		},
	}
	join.Flags().StringVar(&o.to, "to", "", "the namespace whose netID the others get")
	isolate := &cobra.Command{
		Use:   "isolate-projects NAMESPACE...",
		Short: "Give each namespace a netID of its own (one it already holds alone is kept)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, sluicev1alpha1.MultitenantChangeIsolate, args)
		},
	}
	global := &cobra.Command{
		Use:   "make-projects-global NAMESPACE...",
		Short: "Give namespaces netID 0: their pods reach and are reached by every pod",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, sluicev1alpha1.MultitenantChangeGlobal, args)
		},
	}
	cmd.AddCommand(join, isolate, global)
	return cmd
}

func failed(lines ...string) *exitError { return &exitError{code: exitFailed, lines: lines} }

// run asks for change on the namespaces, waits for the controller, and prints the netIDs.
func (o *podNetworkOptions) run(cmd *cobra.Command, change string, args []string) error {
	if o.timeout <= 0 {
		return badInput(fmt.Sprintf("--timeout %v: want a positive duration", o.timeout))
	}
	var targets []string // the namespaces to change, in the order given, once each
	var bad []string
	for _, n := range args {
		for _, msg := range validation.IsDNS1123Label(n) {
			bad = append(bad, fmt.Sprintf("namespace %q: not a namespace name: %s", n, msg))
		}
		if !slices.Contains(targets, n) {
			targets = append(targets, n)
		}
	}
	shown := targets // the namespaces whose netIDs are printed
	if o.to != "" && change == sluicev1alpha1.MultitenantChangeJoinPrefix+o.to {
		for _, msg := range validation.IsDNS1123Label(o.to) {
			bad = append(bad, fmt.Sprintf("--to %q: not a namespace name: %s", o.to, msg))
		}
		targets = slices.DeleteFunc(slices.Clone(targets), func(n string) bool { return n == o.to })
		shown = append([]string{o.to}, targets...)
	}
	if len(bad) > 0 {
		return badInput(bad...)
	}

	c, err := newClients(o.global.kubeconfig)
	if err != nil {
		return badInput(err.Error())
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()

	// Every namespace must exist and have a NetNamespace, --to included; all problems at once.
	for _, n := range shown {
		if _, err := c.kube.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			bad = append(bad, fmt.Sprintf("unknown project %q: namespace %s does not exist", n, n))
			continue
		} else if err != nil {
			return failed(fmt.Sprintf("get namespace %s: %v", n, err))
		}
		if _, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			bad = append(bad, fmt.Sprintf("namespace %s has no NetNamespace %s (is sluice-controller running?)", n, n))
		} else if err != nil {
			return failed(fmt.Sprintf("get NetNamespace %s: %v", n, err))
		}
	}
	if len(bad) > 0 {
		return badInput(bad...)
	}
	o.noteMode(ctx, c, cmd.ErrOrStderr())

	// One merge patch each: the request, and no answer to an earlier one.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:null}}}`,
		sluicev1alpha1.AnnotationMultitenantChange, change, sluicev1alpha1.AnnotationMultitenantChangeError)
	for _, n := range targets {
		if _, err := c.sluice.SluiceV1alpha1().NetNamespaces().Patch(ctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return failed(fmt.Sprintf("ask for %s=%s on NetNamespace %s: %v", sluicev1alpha1.AnnotationMultitenantChange, change, n, err))
		}
	}

	// Wait until the controller has removed every request (applied, or answered with an error).
	result := map[string]*sluicev1alpha1.NetNamespace{}
	waiting := slices.Clone(targets)
	for len(waiting) > 0 {
		var still []string
		for _, n := range waiting {
			nn, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(ctx, n, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return failed(fmt.Sprintf("NetNamespace %s was deleted while waiting for the change (was namespace %s deleted?)", n, n))
			case err != nil && ctx.Err() != nil:
				still = append(still, n)
			case err != nil:
				return failed(fmt.Sprintf("get NetNamespace %s: %v", n, err))
			case nn.Annotations[sluicev1alpha1.AnnotationMultitenantChange] != "":
				still = append(still, n)
			default:
				result[n] = nn
			}
		}
		waiting = still
		if len(waiting) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			var lines []string
			for _, n := range waiting {
				lines = append(lines, fmt.Sprintf("namespace %s: the change %s=%s was not applied within %v (is sluice-controller running?)",
					n, sluicev1alpha1.AnnotationMultitenantChange, change, o.timeout))
			}
			return failed(lines...)
		case <-time.After(pollInterval):
		}
	}
	for _, n := range shown {
		if result[n] != nil {
			continue
		}
		nn, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return failed(fmt.Sprintf("get NetNamespace %s: %v", n, err))
		}
		result[n] = nn
	}

	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tNETID")
	for _, n := range shown {
		fmt.Fprintf(w, "%s\t%d\n", n, result[n].Spec.NetID)
	}
	if err := w.Flush(); err != nil {
		return err
	}

	var refused []string
	for _, n := range targets {
		if msg := result[n].Annotations[sluicev1alpha1.AnnotationMultitenantChangeError]; msg != "" {
			refused = append(refused, fmt.Sprintf("namespace %s: sluice-controller refused the change: %s", n, msg))
		}
	}
	if len(refused) > 0 {
		return &exitError{code: exitFindings, lines: refused}
	}
	return nil
}

// noteMode says on standard error when netIDs do not isolate anything in the cluster's mode.
func (o *podNetworkOptions) noteMode(ctx context.Context, c *clients, stderr io.Writer) {
	cn, err := c.sluice.SluiceV1alpha1().ClusterNetworks().Get(ctx, sluicev1alpha1.ClusterNetworkName, metav1.GetOptions{})
	if err != nil {
		return // not ours to judge: the change is made either way
	}
	mode := cn.Spec.Mode
	if mode == "" {
		mode = sluicev1alpha1.DefaultMode
	}
	if mode != sluicev1alpha1.ModeMultitenant {
		fmt.Fprintf(stderr, "note: ClusterNetwork %s is in mode %s; netIDs isolate pods only in mode %s\n",
			cn.Name, mode, sluicev1alpha1.ModeMultitenant)
	}
}

// defaultKubeconfig describes where the kubeconfig comes from without --kubeconfig.
func defaultKubeconfig() string {
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return "$" + clientcmd.RecommendedConfigPathEnvVar + " (" + env + ")"
	}
	return "$" + clientcmd.RecommendedConfigPathEnvVar + ", else ~/.kube/config"
}
