package cniserver

import (
	"context"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Call is one validated CNI call for a container, as the Handler sees it.
type Call struct {
	ContainerID, Netns, IfName string
	// From CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID); empty
	// when the runtime is not a Kubernetes one.
	PodNamespace, PodName, PodUID string
	CNIVersion                    string // the netconf's cniVersion
	RawConfig                     []byte // the netconf as the runtime passed it
}

// Handler does the work behind the CNI server: the pod network (addresses,
// veths, routes). The server has validated the call, holds the container's
// lock (at most one call per container ID at a time; different containers
// run in parallel), and converts results and errors for the runtime:
//
//   - a *types.Error is returned to the runtime unchanged; any other error
//     becomes code 999 (internal) with err.Error() as details;
//   - Add returns the result in the current (1.x) format; the server
//     converts it to the request's cniVersion;
//   - Del must succeed when there is nothing to delete (a container it never
//     saw, a second DEL, a netns already gone) — and it is called even
//     before the server is ready (SetReady), so that a runtime can always
//     clean up;
//   - GC releases everything not in valid (the runtime's still-valid
//     attachments of this network);
//   - Status returns nil when ADDs can be served; a plain error is reported
//     as code 50 (plugin not available).
//
// The context is not cancelled when the runtime gives up on the call (the
// plugin is killed): a half-done ADD is finished and the runtime's DEL cleans
// it up. It is cancelled when the server shuts down after its grace period.
type Handler interface {
	Add(ctx context.Context, c *Call) (*current.Result, error)
	Del(ctx context.Context, c *Call) error
	Check(ctx context.Context, c *Call) error
	GC(ctx context.Context, valid []types.GCAttachment) error
	Status(ctx context.Context) error
}
