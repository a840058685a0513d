// Command sluice-cni is the CNI plugin the container runtime executes. It
// forwards every command to the sluice agent's CNI server on the node and
// prints the agent's answer; see pkg/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/sluice-net/sluice/pkg/cni"
	"github.com/sluice-net/sluice/pkg/cni/plugin"
)

func main() {
	p := &plugin.Plugin{}
	// cni.SupportedVersions = version.PluginSupports("0.3.0", "0.3.1",
	// "0.4.0", "1.0.0", "1.1.0"), shared with the agent's checks.
	skel.PluginMainFuncs(p.Funcs(), cni.SupportedVersions, "CNI plugin sluice-cni")
}
