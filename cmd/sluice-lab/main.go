// Command sluice-lab runs a real multi-node Kubernetes cluster on one machine.
package main

import (
	"os"

	"github.com/sluice-net/sluice/pkg/lab/labcmd"
)

func main() { os.Exit(labcmd.Main(os.Args[1:])) }
