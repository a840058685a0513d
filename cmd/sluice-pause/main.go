// Command sluice-pause is the sandbox ("pause") container of a pod: it holds
// the pod's namespaces, reaps orphaned processes and exits on SIGINT or SIGTERM.
package main

import (
	"os"

	"github.com/sluice-net/sluice/pkg/pause"
)

func main() { os.Exit(pause.Main(os.Args[1:])) }
