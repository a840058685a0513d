package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginType is the "type" of sluice-cni's entry in a conflist; the runtime
// finds the binary by it.
const PluginType = "sluice-cni"

// SupportedVersions are the CNI spec versions the plugin and the agent
// speak. Results are produced in the configuration's version.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// NetConf is sluice-cni's entry in a network configuration list, as the
// runtime passes it on stdin (name and cniVersion injected from the list):
//
//	{"cniVersion": "1.1.0", "name": "sluice", "plugins": [
//	  {"type": "sluice-cni", "agentSocket": "/var/run/sluice/cni.sock"}]}
//
// Unknown keys (runtimeConfig, prevResult, capabilities, …) are allowed and
// travel to the agent untouched in Request.Config.
type NetConf struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Name       string `json:"name,omitempty"`
	Type       string `json:"type,omitempty"`
	// AgentSocket is the agent's CNI server; DefaultSocket when empty.
	AgentSocket string `json:"agentSocket,omitempty"`

	// ValidAttachments is set on GC only (CNI 1.1).
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// LegacyAttachments is the key libcni also sends on GC because an early
	// draft of the 1.1 spec used it (containernetworking/cni#1101). Read
	// only when cni.dev/valid-attachments is absent.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// ParseNetConf decodes and validates the plugin's network configuration.
// Errors are *types.Error with the spec's codes: 6 when the bytes are not a
// JSON object, 7 for a missing or wrong field (naming it and its value), 1
// for a cniVersion neither side supports. An empty agentSocket becomes
// DefaultSocket.
func ParseNetConf(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode the network configuration", err.Error())
	}
	if c.Type == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `network configuration has no "type"`,
			fmt.Sprintf("the plugin entry must have \"type\": %q", PluginType))
	}
	if c.Type != PluginType {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network configuration has \"type\": %q, want %q", c.Type, PluginType), "")
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `network configuration has no "name"`, "")
	}
	if err := CheckVersion(c.CNIVersion); err != nil {
		return nil, err
	}
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultSocket
	} else if !filepath.IsAbs(c.AgentSocket) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("\"agentSocket\": %q is not an absolute path", c.AgentSocket), "")
	}
	if c.ValidAttachments == nil {
		c.ValidAttachments = c.LegacyAttachments
	}
	return &c, nil
}

// CheckVersion returns a CNI error with code 1 unless v is one of
// SupportedVersions. An empty version means 0.1.0 (CNI spec), which is not
// supported.
func CheckVersion(v string) *types.Error {
	if v == "" {
		v = "0.1.0"
	}
	if slices.Contains(SupportedVersions.SupportedVersions(), v) {
		return nil
	}
	return types.NewError(types.ErrIncompatibleCNIVersion,
		fmt.Sprintf("incompatible CNI version: \"cniVersion\": %q", v),
		"sluice-cni supports "+strings.Join(SupportedVersions.SupportedVersions(), ", "))
}
