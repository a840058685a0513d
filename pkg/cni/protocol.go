// Package cni is the contract between the sluice-cni plugin and the agent's
// CNI server: the request and reply that travel over the agent's unix socket,
// and the client the plugin uses.
//
// The plugin is thin: it forwards each call — command, container ID, netns,
// interface name, CNI_ARGS and the network configuration exactly as the
// runtime passed them — and prints what the agent answers. All logic lives in
// the agent.
package cni

import (
	"encoding/json"

	"github.com/containernetworking/cni/pkg/types"
)

// ProtocolVersion is the version of this request/reply format. The server
// rejects requests of another version with a CNI error naming both.
const ProtocolVersion = 1

// DefaultSocket is where the agent listens (root only, mode 0600).
const DefaultSocket = "/var/run/sluice/cni.sock"

// Commands.
const (
	CmdAdd    = "ADD"
	CmdDel    = "DEL"
	CmdCheck  = "CHECK"
	CmdStatus = "STATUS"
	CmdGC     = "GC"
)

// STATUS error codes (CNI spec 1.1, "STATUS: Check plugin status"); the
// library has no constants for them.
const (
	// ErrPluginNotAvailable: the plugin cannot service ADD requests.
	ErrPluginNotAvailable uint = 50
	// ErrPluginNotAvailableLimitedConnectivity: the plugin cannot service
	// ADD requests, and existing containers may have limited connectivity.
	ErrPluginNotAvailableLimitedConnectivity uint = 51
)

// Request is one CNI call, forwarded verbatim.
type Request struct {
	Version     int    `json:"version"`
	Command     string `json:"command"`
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// Args is CNI_ARGS as given ("K=V;K=V"): K8S_POD_NAMESPACE,
	// K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID.
	Args string `json:"args,omitempty"`
	// Config is the network configuration from stdin (for GC it carries
	// cni.dev/valid-attachments).
	Config json.RawMessage `json:"config"`
}

// Reply is the agent's answer: Result (a CNI result in the configuration's
// cniVersion, for ADD; empty otherwise) or Error.
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}
