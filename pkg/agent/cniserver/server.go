// Package cniserver is the agent's side of sluice-cni: an HTTP server on a
// root-only unix socket that receives each CNI call the plugin forwards
// (pkg/cni), validates it, serialises calls per container, and dispatches
// them to a Handler that builds the pod network.
//
// Until the agent declares its node dataplane initialised (SetReady(true)),
// ADD, CHECK and GC answer TRY_AGAIN_LATER (11) and STATUS answers "plugin
// not available" (50), so the runtime retries instead of failing the pod;
// DEL always goes through, because a runtime must be able to clean up.
package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/go-logr/logr"

	"github.com/sluice-net/sluice/pkg/cni"
)

const (
	// maxRequest bounds a request body; a network configuration with a GC
	// list of every pod on a node is well below it.
	maxRequest = 4 << 20
	// shutdownGrace is how long Run lets calls in flight finish after its
	// context ends before it cancels them.
	shutdownGrace = 30 * time.Second
)

// Server is the agent's CNI server. Create it with New, start it with Run.
type Server struct {
	socketPath string
	h          Handler
	log        logr.Logger
	ready      atomic.Bool
	locks      *keyedLock
	grace      time.Duration

	// callCtx is the Handler's context: not tied to the plugin's
	// connection, cancelled when Run gives up on calls in flight. Set by
	// Run before it serves.
	callCtx context.Context
}

// New returns a server for socketPath that dispatches to h. It is not ready
// (see SetReady) and not listening (see Run).
func New(socketPath string, h Handler, log logr.Logger) *Server {
	return &Server{
		socketPath: socketPath,
		h:          h,
		log:        log.WithValues("component", "cniserver"),
		locks:      newKeyedLock(),
		grace:      shutdownGrace,
		callCtx:    context.Background(),
	}
}

// SetReady says whether the node's dataplane is initialised. While it is
// not (the default), ADD, CHECK and GC answer TRY_AGAIN_LATER and STATUS
// answers 50; DEL is always served.
func (s *Server) SetReady(ready bool) {
	if s.ready.Swap(ready) != ready {
		s.log.Info("CNI server readiness changed", "ready", ready)
	}
}

// Run listens on the socket and serves until ctx ends, then lets calls in
// flight finish (up to a grace period) and removes the socket. The socket's
// directory is created 0700 if missing; the socket is 0600. A stale socket
// file left by a crashed agent is removed first; a socket another process
// still serves is not, and Run fails. Run is called once.
func (s *Server) Run(ctx context.Context) error {
	l, err := s.listen()
	if err != nil {
		return err
	}
	// The listener unlinks the socket when closed; this covers the paths
	// where it is not.
	defer os.Remove(s.socketPath)

	callCtx, cancelCalls := context.WithCancel(context.Background())
	defer cancelCalls()
	s.callCtx = callCtx

	mux := http.NewServeMux()
	mux.HandleFunc(cni.Path, s.serveCNI)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          stdlog.New(logWriter{s.log}, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	s.log.Info("CNI server listening", "socket", s.socketPath)

	select {
	case err := <-served:
		return fmt.Errorf("CNI server on %s: %w", s.socketPath, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.grace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Info("CNI calls still running at shutdown; cancelling them", "grace", s.grace)
		cancelCalls()
		srv.Close()
	}
	<-served
	s.log.Info("CNI server stopped", "socket", s.socketPath)
	return nil
}

// listen prepares the directory, clears a stale socket and listens.
func (s *Server) listen() (net.Listener, error) {
	dir := filepath.Dir(s.socketPath)
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create CNI socket directory: %w", err)
		}
		// MkdirAll's mode is filtered by the umask; the socket's directory
		// is what keeps non-root users off the socket in the instant
		// between listen and chmod below.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict CNI socket directory: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("CNI socket directory: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("CNI socket directory %s is not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		// Not ours to change (it may be shared); the socket's own 0600
		// still keeps others out once it is set.
		s.log.Info("CNI socket directory is accessible to other users", "dir", dir, "mode", fi.Mode().Perm().String())
	}

	if fi, err := os.Lstat(s.socketPath); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", s.socketPath)
		}
		if c, err := net.DialTimeout("unix", s.socketPath, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process is serving %s (is a second agent running?)", s.socketPath)
		}
		if err := os.Remove(s.socketPath); err != nil {
			return nil, fmt.Errorf("remove stale CNI socket: %w", err)
		}
		s.log.Info("Removed stale CNI socket", "socket", s.socketPath)
	}
	l, err := net.Listen("unix", s.socketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on CNI socket: %w", err)
	}
	if err := os.Chmod(s.socketPath, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restrict CNI socket: %w", err)
	}
	return l, nil
}

func (s *Server) serveCNI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req cni.Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest))
	if err := dec.Decode(&req); err != nil {
		e := types.NewError(types.ErrDecodingFailure, "cannot decode the request from sluice-cni", err.Error())
		s.log.Error(e, "CNI request rejected", "code", e.Code)
		writeReply(w, http.StatusOK, &cni.Reply{Error: e})
		return
	}
	reply, status := s.handle(r.Context(), &req)
	writeReply(w, status, reply)
}

func writeReply(w http.ResponseWriter, status int, reply *cni.Reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(reply)
}

// handle serves one request. reqCtx ends when the plugin hangs up; it bounds
// only the wait for the container's lock.
func (s *Server) handle(reqCtx context.Context, req *cni.Request) (reply *cni.Reply, status int) {
	start := time.Now()
	log := s.log.WithValues("cmd", req.Command, "containerID", req.ContainerID, "ifName", req.IfName)
	defer func() {
		attrs := []any{"duration", time.Since(start).Round(time.Microsecond)}
		switch {
		case reply.Error == nil && (req.Command == cni.CmdCheck || req.Command == cni.CmdStatus):
			log.V(4).Info("CNI call done", attrs...)
		case reply.Error == nil:
			log.V(2).Info("CNI call done", attrs...)
		default:
			log.Error(reply.Error, "CNI call failed", append(attrs, "code", reply.Error.Code)...)
		}
	}()

	conf, call, verr := validate(req)
	if verr != nil {
		return &cni.Reply{Error: verr}, http.StatusOK
	}
	if call.PodName != "" {
		log = log.WithValues("pod", call.PodNamespace+"/"+call.PodName)
	}
	if !s.ready.Load() && req.Command != cni.CmdDel {
		if req.Command == cni.CmdStatus {
			return errReply(cni.ErrPluginNotAvailable, "the sluice agent is not ready: the node network is not initialised yet", "")
		}
		r, _ := errReply(types.ErrTryAgainLater, "the sluice agent is not ready: the node network is not initialised yet", "")
		return r, http.StatusServiceUnavailable
	}

	switch req.Command {
	case cni.CmdAdd, cni.CmdDel, cni.CmdCheck:
		// Wait for the container's lock as long as the plugin waits, and
		// not past the server's life.
		waitCtx, cancel := context.WithCancel(reqCtx)
		stop := context.AfterFunc(s.callCtx, cancel)
		unlock, err := s.locks.lock(waitCtx, req.ContainerID)
		stop()
		cancel()
		if err != nil {
			return errReply(types.ErrTryAgainLater,
				fmt.Sprintf("gave up waiting for another call on container %s", req.ContainerID), err.Error())
		}
		defer unlock()
	}
	return s.dispatch(req.Command, conf, call)
}

// dispatch calls the handler and converts its answer. A panic in the
// handler becomes an internal error instead of a dropped connection.
func (s *Server) dispatch(cmd string, conf *cni.NetConf, call *Call) (reply *cni.Reply, status int) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error(nil, "CNI handler panicked", "cmd", cmd, "containerID", call.ContainerID, "panic", p, "stack", string(debug.Stack()))
			reply, status = errReply(types.ErrInternal, fmt.Sprintf("sluice agent: %s panicked", cmd), fmt.Sprint(p))
		}
	}()
	ctx := s.callCtx
	switch cmd {
	case cni.CmdAdd:
		res, err := s.h.Add(ctx, call)
		if err != nil {
			return handlerError(cmd, err)
		}
		if res == nil {
			return errReply(types.ErrInternal, "sluice agent: ADD produced no result", "")
		}
		// GetAsVersion fills in an empty CNIVersion; work on a copy so the
		// handler's value is never written to.
		cp := *res
		conv, err := cp.GetAsVersion(call.CNIVersion)
		if err != nil {
			return errReply(types.ErrInternal,
				fmt.Sprintf("sluice agent: cannot express the ADD result in CNI version %s", call.CNIVersion), err.Error())
		}
		raw, err := json.Marshal(conv)
		if err != nil {
			return errReply(types.ErrInternal, "sluice agent: cannot encode the ADD result", err.Error())
		}
		return &cni.Reply{Result: raw}, http.StatusOK
	case cni.CmdDel:
		if err := s.h.Del(ctx, call); err != nil {
			return handlerError(cmd, err)
		}
	case cni.CmdCheck:
		if err := s.h.Check(ctx, call); err != nil {
			return handlerError(cmd, err)
		}
	case cni.CmdGC:
		if err := s.h.GC(ctx, conf.ValidAttachments); err != nil {
			return handlerError(cmd, err)
		}
	case cni.CmdStatus:
		if err := s.h.Status(ctx); err != nil {
			var e *types.Error
			if errors.As(err, &e) {
				return &cni.Reply{Error: e}, http.StatusOK
			}
			return errReply(cni.ErrPluginNotAvailable, "the sluice agent cannot serve ADD", err.Error())
		}
	}
	return &cni.Reply{}, http.StatusOK
}

func handlerError(cmd string, err error) (*cni.Reply, int) {
	var e *types.Error
	if errors.As(err, &e) {
		return &cni.Reply{Error: e}, http.StatusOK
	}
	return errReply(types.ErrInternal, fmt.Sprintf("sluice agent: %s failed", cmd), err.Error())
}

func errReply(code uint, msg, details string) (*cni.Reply, int) {
	return &cni.Reply{Error: types.NewError(code, msg, details)}, http.StatusOK
}

// logWriter hands the HTTP server's own complaints (malformed requests) to
// the structured log.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Info("HTTP server", "msg", strings.TrimSpace(string(b)))
	return len(b), nil
}
