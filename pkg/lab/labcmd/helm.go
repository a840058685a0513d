package labcmd

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// helmCommand is `sluice-lab helm -- ARGS…`: the pinned Helm (built into the cache on first
// use) with the lab's admin kubeconfig, or with none when no lab runs (helm template, lint).
func helmCommand(stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:                "helm -- ARGS…",
		Short:              "Run the pinned Helm (" + kubebuild.HelmVersion + ") against the lab",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			rest := takeStateDir(args, stateDir)
			bin, err := kubebuild.EnsureHelm(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if d, err := lab.StateDirFrom(*stateDir); err == nil {
				if l, err := lab.Open(d, cmd.OutOrStdout()); err == nil {
					rest = append([]string{"--kubeconfig=" + l.C.Kubeconfig()}, rest...)
				}
			}
			return runExit(bin, rest)
		},
	}
}

// takeStateDir returns args without --state-dir (which it stores) and without the first
// "--": for commands that hand their arguments to another program unparsed.
func takeStateDir(args []string, stateDir *string) []string {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(rest, args[i+1:]...)
		case a == "--state-dir" && i+1 < len(args):
			*stateDir = args[i+1]
			i++
		case strings.HasPrefix(a, "--state-dir="):
			*stateDir = strings.TrimPrefix(a, "--state-dir=")
		default:
			rest = append(rest, a)
		}
	}
	return rest
}
