// Package health serves a component's liveness (/healthz) and readiness (/readyz) for the
// kubelet's probes: each endpoint runs its named checks and answers 200 with "ok", or 503
// with one line per failing check naming it and why.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Check returns nil when healthy, else the reason.
type Check func() error

// Checks is a set of named checks, safe for concurrent use.
type Checks struct {
	mu     sync.Mutex
	checks map[string]Check
}

// Set adds or replaces the check called name.
func (c *Checks) Set(name string, check Check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks == nil {
		c.checks = map[string]Check{}
	}
	c.checks[name] = check
}

// Failing runs every check and returns "name: reason" for each that fails, sorted.
func (c *Checks) Failing() []string {
	c.mu.Lock()
	names := make([]string, 0, len(c.checks))
	for n := range c.checks {
		names = append(names, n)
	}
	checks := c.checks
	c.mu.Unlock()
	sort.Strings(names)
	var out []string
	for _, n := range names {
		if err := checks[n](); err != nil {
			out = append(out, n+": "+err.Error())
		}
	}
	return out
}

func (c *Checks) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if failing := c.Failing(); len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(failing, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// Flag is a readiness condition set by the code that knows: not ready, with a reason, until
// Set(nil).
type Flag struct {
	mu  sync.Mutex
	err error
}

// NewFlag returns a flag that fails with reason until it is set.
func NewFlag(reason string) *Flag { return &Flag{err: errors.New(reason)} }

// Set records the condition: nil is healthy.
func (f *Flag) Set(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// Check is the flag as a Check.
func (f *Flag) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Server serves Live on /healthz and /livez, Ready on /readyz.
type Server struct {
	Live, Ready Checks
}

// Serve listens on addr and serves until ctx ends. A listen error is returned at once.
func (s *Server) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health endpoints on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", &s.Live)
	mux.Handle("/livez", &s.Live)
	mux.Handle("/readyz", &s.Ready)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() { _ = srv.Serve(ln) }()
	return nil
}
