package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// HealthServer answers load balancers' health checks for Services with
// externalTrafficPolicy Local: on each health-check node port,
// GET /healthz returns 200 while this node has a ready local endpoint and
// 503 otherwise, with kube-proxy's JSON body, so existing load balancers
// work unchanged. Listeners open and close as the ports come and go.
type HealthServer struct {
	Addr string // listen address without port; "" = every address
	Log  logr.Logger

	mu        sync.Mutex
	counts    map[uint16]int
	listeners map[uint16]*http.Server
}

// Update replaces the set of health-check ports and their local endpoint
// counts (the shape of HealthChecks' result). Ports that cannot be opened
// are logged and retried on the next update.
func (h *HealthServer) Update(counts map[uint16]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listeners == nil {
		h.listeners = map[uint16]*http.Server{}
	}
	h.counts = counts
	for port, srv := range h.listeners {
		if _, ok := counts[port]; !ok {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = srv.Shutdown(ctx)
			cancel()
			delete(h.listeners, port)
		}
	}
	for port := range counts {
		if h.listeners[port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(h.Addr, strconv.Itoa(int(port))))
		if err != nil {
			h.Log.Error(err, "Cannot open a health-check node port", "port", port)
			continue
		}
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.listeners[port] = srv
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.Log.Error(err, "Health-check server stopped", "port", port)
			}
		}()
	}
}

// Close stops every listener.
func (h *HealthServer) Close() {
	h.Update(nil)
}

func (h *HealthServer) handler(port uint16) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		n := h.counts[port]
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if n == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, `{"localEndpoints": %d, "serviceProxyHealthy": true}`+"\n", n)
	})
}

// ProxyHealth answers the node-wide health checks kube-proxy serves on its
// healthz address (port 10256), which load balancers of Services with
// externalTrafficPolicy Cluster probe: /livez is 200 while every change is
// programmed within HealthTimeout; /healthz also needs the node to be
// eligible for traffic (not being deleted, not tainted for removal by the
// cluster autoscaler). The JSON body carries kube-proxy's field names.
type ProxyHealth struct {
	Sync     func(now time.Time) (healthy bool, lastSynced time.Time) // Proxier.SyncHealth
	Eligible func() bool                                              // nil: always
}

func (h *ProxyHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" && r.URL.Path != "/livez" {
		http.NotFound(w, r)
		return
	}
	now := time.Now()
	healthy, last := h.Sync(now)
	eligible := h.Eligible == nil || h.Eligible()
	ok := healthy && (eligible || r.URL.Path == "/livez")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	lastUpdated := ""
	if !last.IsZero() {
		lastUpdated = last.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, `{"lastUpdated": %q, "currentTime": %q, "nodeEligible": %t}`+"\n", lastUpdated, now.UTC().Format(time.RFC3339Nano), eligible)
}

// NodeEligible: the node may receive load-balancer traffic (kube-proxy's
// rule): it is not being deleted and not tainted ToBeDeletedByClusterAutoscaler.
func NodeEligible(n *corev1.Node) bool {
	return n.DeletionTimestamp == nil &&
		!slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == "ToBeDeletedByClusterAutoscaler" })
}
