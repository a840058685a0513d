package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK = 0
	// exitFindings: the command ran and printed its answer, and the answer holds problems
	// (networks that overlap).
	exitFindings = 1
	// exitBadInput: bad flags, an unreadable file, or an input value that is invalid; one
	// line per problem on standard error.
	exitBadInput = 2
	// exitFailed: the command could not do its work: the cluster could not be reached, or a
	// change was not applied in time.
	exitFailed = 3
)

// globalOptions are the flags every command has.
type globalOptions struct {
	kubeconfig string
}

// exitError carries an exit status and the lines to print on standard error.
type exitError struct {
	code  int
	lines []string
}

func (e *exitError) Error() string { return strings.Join(e.lines, "\n") }

func badInput(lines ...string) *exitError { return &exitError{code: exitBadInput, lines: lines} }

// run executes sluicectl with args and returns its exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		for _, l := range ee.lines {
			fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), l)
		}
		return ee.code
	}
	// Cobra's own errors: an unknown command or flag, a bad flag value, stray arguments.
	fmt.Fprintf(stderr, "%s: %s (see --help)\n", cmd.CommandPath(), err)
	return exitBadInput
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluicectl",
		Short: "Operate and plan Sluice cluster networks",
		Long: `sluicectl is the operator's tool for Sluice, an SDN for Kubernetes.

Exit status: 0 success; 1 the command ran and found problems (such as overlapping
networks, or a change the controller refused); 2 bad input (flags, files or values), one
line per problem on standard error; 3 the command could not do its work (the cluster could
not be reached, or a change was not applied in time).`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	g := &globalOptions{}
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster, for commands that talk to one (default "+defaultKubeconfig()+")")
	root.AddCommand(newPlanCommand())
	root.AddCommand(newPodNetworkCommand(g))
	return root
}
