package host

import (
	"fmt"
	"os"
	"path/filepath"
)

// ConflistName is the file the agent installs in the CNI configuration
// directory; runtimes pick the first file in lexical order.
const ConflistName = "10-sluice.conflist"

// PluginName is the plugin binary's name in the CNI binary directory.
const PluginName = "sluice-cni"

// Paths are where the agent keeps its state and installs the plugin.
type Paths struct {
	StateDir   string // IPAM state lives in StateDir/ipam
	CNISocket  string // the CNI server's unix socket
	CNIBinDir  string // where the plugin is installed (/opt/cni/bin)
	CNIConfDir string // where the conflist is written (/etc/cni/net.d)
	PluginPath string // the sluice-cni binary to install
}

// InstallCNI copies the plugin binary and writes the conflist, each through
// a temporary file and a rename, the conflist last: its appearance is what
// tells the runtime that the node's network is ready.
func InstallCNI(p Paths) error {
	if err := os.MkdirAll(p.CNIBinDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(p.CNIConfDir, 0o755); err != nil {
		return err
	}
	bin, err := os.ReadFile(p.PluginPath)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(p.CNIBinDir, PluginName), bin, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "sluice",
  "plugins": [
    {"type": %q, "agentSocket": %q}
  ]
}
`, PluginName, p.CNISocket)
	return writeAtomic(filepath.Join(p.CNIConfDir, ConflistName), []byte(conf), 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
