// Package plugin is the body of the sluice-cni binary: each CNI command is
// forwarded to the agent's CNI server and the agent's answer is printed as
// the runtime expects it. The plugin keeps no state and makes no decisions;
// VERSION and the checks of the environment are skel's.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/sluice-net/sluice/pkg/cni"
)

// DefaultTimeout bounds one call to the agent. Runtimes give a sandbox a
// few minutes (kubelet's runtime-request-timeout is 2m); a plugin that
// outlives that only keeps the runtime's worker busy.
const DefaultTimeout = 2 * time.Minute

// Plugin forwards CNI commands to the agent.
type Plugin struct {
	// Stdout receives the ADD result (os.Stdout when nil).
	Stdout io.Writer
	// Timeout bounds each call to the agent (DefaultTimeout when zero).
	Timeout time.Duration
}

// Funcs returns the callbacks for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// Add forwards ADD and prints the agent's result in the configuration's
// cniVersion.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	reply, conf, err := p.forward(cni.CmdAdd, args)
	if err != nil {
		return err
	}
	if len(reply.Result) == 0 {
		return types.NewError(types.ErrInternal, "the sluice agent answered ADD without a result", "")
	}
	res, err := create.CreateFromBytes(reply.Result)
	if err != nil {
		return types.NewError(types.ErrInternal, "the sluice agent answered ADD with an unreadable result", err.Error())
	}
	// The agent already answers in the request's version; converting again
	// is a no-op then, and protects the runtime from an agent that does not.
	res, err = res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("cannot convert the agent's result to CNI version %s", conf.CNIVersion), err.Error())
	}
	return res.PrintTo(p.stdout())
}

// Del forwards DEL. Idempotency is the agent's: it answers success for a
// container it never saw.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	_, _, err := p.forward(cni.CmdDel, args)
	return err
}

// Check forwards CHECK.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	_, _, err := p.forward(cni.CmdCheck, args)
	return err
}

// GC forwards GC; the valid attachments travel inside the configuration.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	_, _, err := p.forward(cni.CmdGC, args)
	return err
}

// Status forwards STATUS. An agent that cannot be reached cannot service
// ADD, which the spec reports with code 50 rather than the transport's 11.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	_, _, err := p.forward(cni.CmdStatus, args)
	var e *types.Error
	if errors.As(err, &e) && e.Code == types.ErrTryAgainLater {
		return types.NewError(cni.ErrPluginNotAvailable, e.Msg, e.Details)
	}
	return err
}

// forward sends one command to the agent. The error is a *types.Error:
// the configuration's, the transport's, or the agent's unchanged.
func (p *Plugin) forward(cmd string, args *skel.CmdArgs) (*cni.Reply, *cni.NetConf, error) {
	conf, err := cni.ParseNetConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	reply, err := cni.Call(ctx, conf.AgentSocket, cni.Request{
		Version:     cni.ProtocolVersion,
		Command:     cmd,
		ContainerID: args.ContainerID,
		Netns:       args.Netns,
		IfName:      args.IfName,
		Args:        args.Args,
		Config:      args.StdinData,
	})
	if err != nil {
		return nil, nil, err
	}
	if reply.Error != nil {
		return nil, nil, reply.Error
	}
	return reply, conf, nil
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

func (p *Plugin) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}
