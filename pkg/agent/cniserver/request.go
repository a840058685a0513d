package cniserver

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sluice-net/sluice/pkg/cni"
)

// k8sArgs is CNI_ARGS as Kubernetes runtimes (containerd, CRI-O) pass it.
// The field names are the keys (types.LoadArgs matches them by name).
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
}

// minVersion is the first spec version that has the command.
var minVersion = map[string]string{
	cni.CmdAdd:    "0.3.0",
	cni.CmdDel:    "0.3.0",
	cni.CmdCheck:  "0.4.0",
	cni.CmdGC:     "1.1.0",
	cni.CmdStatus: "1.1.0",
}

// validate checks a request and turns it into the Handler's terms. Every
// failure is a CNI error naming the field and its value: 1 for versions, 4
// for the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
// CNI_ARGS), 6 and 7 for the configuration.
func validate(req *cni.Request) (*cni.NetConf, *Call, *types.Error) {
	if req.Version != cni.ProtocolVersion {
		return nil, nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("sluice-cni speaks protocol version %d, the agent speaks %d", req.Version, cni.ProtocolVersion),
			"install the sluice-cni binary that comes with this agent")
	}
	minV, ok := minVersion[req.Command]
	if !ok {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("invalid CNI_COMMAND %q", req.Command), "the agent serves ADD, DEL, CHECK, GC and STATUS")
	}
	conf, err := cni.ParseNetConf(req.Config)
	if err != nil {
		return nil, nil, asCNIError(err)
	}
	if ge, _ := version.GreaterThanOrEqualTo(conf.CNIVersion, minV); !ge {
		return nil, nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("%s needs cniVersion %s or later, the configuration has %q", req.Command, minV, conf.CNIVersion), "")
	}
	call := &Call{
		ContainerID: req.ContainerID,
		Netns:       req.Netns,
		IfName:      req.IfName,
		CNIVersion:  conf.CNIVersion,
		RawConfig:   req.Config,
	}
	if req.Command == cni.CmdGC || req.Command == cni.CmdStatus {
		return conf, call, nil
	}

	if req.ContainerID == "" {
		return nil, nil, envError("CNI_CONTAINERID is empty", "")
	}
	if e := utils.ValidateContainerID(req.ContainerID); e != nil {
		return nil, nil, envError(fmt.Sprintf("invalid CNI_CONTAINERID %q: %s", req.ContainerID, e.Msg), e.Details)
	}
	if e := utils.ValidateInterfaceName(req.IfName); e != nil {
		return nil, nil, envError(fmt.Sprintf("invalid CNI_IFNAME %q: %s", req.IfName, e.Msg), e.Details)
	}
	if req.Command != cni.CmdDel {
		// DEL may come after the namespace is gone; ADD and CHECK need it.
		if req.Netns == "" {
			return nil, nil, envError(fmt.Sprintf("CNI_NETNS is empty; %s needs the container's network namespace", req.Command), "")
		}
		if !filepath.IsAbs(req.Netns) {
			return nil, nil, envError(fmt.Sprintf("invalid CNI_NETNS %q: not an absolute path", req.Netns), "")
		}
	}
	var a k8sArgs
	if err := types.LoadArgs(req.Args, &a); err != nil {
		return nil, nil, envError(fmt.Sprintf("invalid CNI_ARGS %q", req.Args), err.Error())
	}
	call.PodNamespace = string(a.K8S_POD_NAMESPACE)
	call.PodName = string(a.K8S_POD_NAME)
	call.PodUID = string(a.K8S_POD_UID)
	return conf, call, nil
}

func envError(msg, details string) *types.Error {
	return types.NewError(types.ErrInvalidEnvironmentVariables, msg, details)
}

// asCNIError returns err as a CNI error: itself when it is one (or wraps
// one), else code 999 with the cause.
func asCNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
