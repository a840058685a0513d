package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
)

// Path is the HTTP path of the CNI endpoint on the agent's socket.
const Path = "/v1/cni"

// maxReply bounds what the client reads from the agent; a CNI result is a
// few hundred bytes.
const maxReply = 1 << 20

// Call sends req to the agent's CNI server on socketPath (HTTP POST Path over
// the unix socket) and returns the agent's reply. req.Version is set to
// ProtocolVersion when zero.
//
// When the agent answered, the reply is returned with a nil error even if it
// carries a CNI error in Reply.Error: that error is the agent's verdict and
// goes to the runtime unchanged. When the agent could not be asked, the error
// is a *types.Error for the runtime:
//
//   - no socket, connection refused, or the agent answering 503 Service
//     Unavailable: code 11 (TRY_AGAIN_LATER), naming the socket — the agent
//     is starting or restarting;
//   - anything else (permission denied, timeout, an unreadable answer): code
//     999 with the cause.
func Call(ctx context.Context, socketPath string, req Request) (*Reply, error) {
	if req.Version == 0 {
		req.Version = ProtocolVersion
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "cannot encode the request to the sluice agent", err.Error())
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		// One request per plugin process: nothing to keep alive.
		DisableKeepAlives: true,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sluice-agent"+Path, bytes.NewReader(body))
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "cannot build the request to the sluice agent", err.Error())
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, transportError(socketPath, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("cannot read the answer of the sluice agent on %s", socketPath), err.Error())
	}

	switch resp.StatusCode {
	case http.StatusOK:
		var r Reply
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, types.NewError(types.ErrInternal,
				fmt.Sprintf("unreadable answer from the sluice agent on %s", socketPath), err.Error())
		}
		return &r, nil
	case http.StatusServiceUnavailable:
		// The agent explains itself when it can (not ready yet); keep its
		// words, but the code must be TRY_AGAIN_LATER whatever it says.
		var r Reply
		if json.Unmarshal(data, &r) == nil && r.Error != nil && r.Error.Code == types.ErrTryAgainLater {
			return &r, nil
		}
		return nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the sluice agent on %s is not ready", socketPath), snippet(data))
	default:
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("the sluice agent on %s answered %s", socketPath, resp.Status), snippet(data))
	}
}

// transportError maps a failure to reach the agent to a CNI error.
func transportError(socketPath string, err error) *types.Error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the sluice agent is not running: no socket at %s", socketPath), err.Error())
	case errors.Is(err, syscall.ECONNREFUSED):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the sluice agent is not accepting connections on %s", socketPath), err.Error())
	case errors.Is(err, syscall.EAGAIN):
		// A unix socket's accept backlog is full: the agent is busy.
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the sluice agent on %s is overloaded", socketPath), err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("no answer from the sluice agent on %s in time", socketPath), err.Error())
	default:
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("cannot reach the sluice agent on %s", socketPath), err.Error())
	}
}

func snippet(b []byte) string {
	const n = 512
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
