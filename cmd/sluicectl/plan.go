package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/fielderr"
	"github.com/sluice-net/sluice/pkg/plan"
)

type planOptions struct {
	file           string
	output         string
	clusterNetwork string
}

func newPlanCommand() *cobra.Command {
	o := &planOptions{}
	cmd := &cobra.Command{
		Use:   "plan [-f plan.yaml] [--cluster-network clusternetwork.yaml] [-o table|json|yaml]",
		Short: "Plan cluster capacity and addresses; check a ClusterNetwork before applying it",
		Long:  planHelp(),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "plan file, one YAML or JSON document (- reads standard input); without it every default applies")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&o.clusterNetwork, "cluster-network", "", "ClusterNetwork manifest (sluice.dev/v1alpha1) to check; its pod and service networks replace the plan's")
	return cmd
}

func (o *planOptions) validate() error {
	switch o.output {
	case "table", "json", "yaml":
	default:
		return badInput(fmt.Sprintf("--output: %q is not table, json or yaml", o.output))
	}
	if o.file == "-" && o.clusterNetwork == "-" {
		return badInput("--file and --cluster-network cannot both read standard input")
	}
	return nil
}

func (o *planOptions) run(stdin io.Reader, stdout io.Writer) error {
	in := plan.DefaultInput()
	if o.file != "" {
		data, err := readInput(o.file, stdin)
		if err != nil {
			return badInput(err.Error())
		}
		if in, err = plan.DecodeInput(data); err != nil {
			return inputError(o.file, err)
		}
	}

	var res plan.Result
	var err error
	if o.clusterNetwork != "" {
		data, rerr := readInput(o.clusterNetwork, stdin)
		if rerr != nil {
			return badInput(rerr.Error())
		}
		cn, derr := plan.DecodeClusterNetwork(data)
		if derr != nil {
			return inputError(o.clusterNetwork, derr)
		}
		res, err = plan.CheckClusterNetwork(in, cn)
	} else {
		res, err = plan.Compute(in)
	}
	if err != nil {
		return o.valueError(err)
	}

	out, err := render(res, o.output)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, out); err != nil {
		return err
	}
	if n := len(res.Conflicts); n > 0 {
		return &exitError{code: exitFindings, lines: []string{fmt.Sprintf("%d network conflict(s); see conflicts in the output", n)}}
	}
	return nil
}

func readInput(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		// The *PathError already names the file.
		return nil, err
	}
	return data, nil
}

// inputError reports a file that could not be decoded: one line per problem, each prefixed
// with the file's name.
func inputError(name string, err error) error {
	if name == "-" {
		name = "<stdin>"
	}
	var lines []string
	var list fielderr.List
	if errors.As(err, &list) {
		for _, fe := range list {
			lines = append(lines, name+": "+fe.Error())
		}
	} else {
		lines = append(lines, name+": "+err.Error())
	}
	return badInput(lines...)
}

// valueError reports invalid values, naming the file each field came from: a manifest's
// fields (apiVersion, kind, spec.*) from --cluster-network, the rest from --file (or from
// the defaults, when only a manifest is given).
func (o *planOptions) valueError(err error) error {
	var list fielderr.List
	if !errors.As(err, &list) {
		return badInput(err.Error())
	}
	lines := make([]string, 0, len(list))
	for _, fe := range list {
		src := o.file
		if o.clusterNetwork != "" && (strings.HasPrefix(fe.Field, "spec.") || fe.Field == "apiVersion" || fe.Field == "kind") {
			src = o.clusterNetwork
		}
		switch src {
		case "":
			src = "defaults"
		case "-":
			src = "<stdin>"
		}
		lines = append(lines, src+": "+fe.Error())
	}
	return badInput(lines...)
}

func render(r plan.Result, format string) (string, error) {
	switch format {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return "", err
		}
		return string(b) + "\n", nil
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return "", err
		}
		return string(b), nil
	default:
		return plan.Table(r), nil
	}
}

// planHelp is the long help: the formulas, every plan field with its default, the
// ClusterNetwork defaults and the exit statuses. It is generated from pkg/plan so that it
// cannot drift from the code.
func planHelp() string {
	var b strings.Builder
	b.WriteString(`Plan a cluster's capacity and addresses by the method of OpenShift's capacity-planning
chapter (compute, network and storage planning), and check a ClusterNetwork before it is
applied.

sluicectl plan reads one plan document (-f; every field optional) and prints:

`)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, f := range plan.Formulas() {
		fmt.Fprintf(tw, "  %s\t%s\n", f.Answer, f.Formula)
	}
	tw.Flush()

	b.WriteString(`
Plan fields and their defaults:

`)
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, d := range plan.FieldDocs() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", d.Path, d.Default, d.Help)
	}
	tw.Flush()

	def := plan.DefaultClusterNetwork()
	fmt.Fprintf(&b, `
--cluster-network reads a manifest such as

  apiVersion: %s
  kind: %s
  metadata: {name: default}
  spec:
    clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: %d}]
    serviceNetwork: %s
    mode: %-16s # Subnet | Multitenant | NetworkPolicy
    encapsulation: %-7s # VXLAN | None
    vxlanPort: %d
    mtu: %d

(apiVersion and kind are required; the spec's fields default to the values shown) and
checks it as a plan whose pod and service networks are the manifest's: CIDRs, host subnet
lengths, overlaps with the plan's datacenter networks, and the nodes and pods it allows.

Exit status: 0 the plan printed; 1 the plan printed and networks overlap (see conflicts);
2 bad input, with one line per problem naming the field and its value.
`, def.APIVersion, def.Kind, *def.Spec.ClusterNetworks[0].HostSubnetLength, def.Spec.ServiceNetwork,
		def.Spec.Mode, def.Spec.Encapsulation, def.Spec.VXLANPort, def.Spec.MTU)
	return b.String()
}
