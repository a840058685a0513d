//go:build integration

// CNI conformance of sluice-cni, driven through libcni exactly as a
// container runtime drives it: the real plugin binary in a plugin directory,
// a conflist, libcni's result cache, and the agent's real CNI server on a
// unix socket behind which a fake Handler records the calls. Needs no root
// and no network namespace (the netns path is never opened: the Handler is
// fake).
package integration

import (
	"context"
	"errors"
	"fmt"
	"github.com/go-logr/logr"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/cni"
)

// recordingHandler is the agent side: it gives each container an address
// and records every call.
type recordingHandler struct {
	mu      sync.Mutex
	calls   []string // "ADD c1 eth0 ns/pod 1.1.0"
	gcValid [][]types.GCAttachment
	// errors to answer with, by command
	fail map[string]error
}

var _ cniserver.Handler = &recordingHandler{}

func (h *recordingHandler) rec(cmd string, c *cniserver.Call) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c != nil {
		h.calls = append(h.calls, fmt.Sprintf("%s %s %s %s/%s %s", cmd, c.ContainerID, c.IfName, c.PodNamespace, c.PodName, c.CNIVersion))
	} else {
		h.calls = append(h.calls, cmd)
	}
	return h.fail[cmd]
}

func (h *recordingHandler) Add(_ context.Context, c *cniserver.Call) (*current.Result, error) {
	if err := h.rec("ADD", c); err != nil {
		return nil, err
	}
	ip := net.IPv4(10, 128, 0, byte(len(c.ContainerID)))
	gw := net.IPv4(10, 128, 0, 1)
	podIf := 0
	return &current.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: c.IfName, Mac: "0a:58:0a:80:00:05", Sandbox: c.Netns}},
		IPs:        []*current.IPConfig{{Interface: &podIf, Address: net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Gateway: gw}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw}},
	}, nil
}

func (h *recordingHandler) Del(_ context.Context, c *cniserver.Call) error {
	return h.rec("DEL", c)
}

func (h *recordingHandler) Check(_ context.Context, c *cniserver.Call) error {
	return h.rec("CHECK", c)
}

func (h *recordingHandler) GC(_ context.Context, valid []types.GCAttachment) error {
	h.mu.Lock()
	h.gcValid = append(h.gcValid, valid)
	h.mu.Unlock()
	return h.rec("GC", nil)
}

func (h *recordingHandler) Status(context.Context) error { return h.rec("STATUS", nil) }

// take returns the calls recorded since the last take.
func (h *recordingHandler) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.calls
	h.calls = nil
	return c
}

// cniEnv is one runtime's view: a plugin directory holding the sluice-cni
// binary, libcni with a cache directory, and an agent.
type cniEnv struct {
	pluginDir, confDir, sock string
	cni                      *libcni.CNIConfig
	h                        *recordingHandler
	srv                      *cniserver.Server
}

// buildCNI builds cmd/sluice-cni into a fresh plugin directory.
func buildCNI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cni.PluginType),
		"github.com/sluice-net/sluice/cmd/sluice-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("build sluice-cni: %v\n%s", err, out)
	}
	return dir
}

// TestCNIConformance builds the plugin once and runs each scenario with its
// own agent and libcni cache.
func TestCNIConformance(t *testing.T) {
	bin := buildCNI(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *cniEnv)
	}{
		{"Lifecycle", testCNILifecycle},
		{"Versions", testCNIVersions},
		{"BadConfiguration", testCNIBadConfiguration},
		{"AgentDown", testCNIAgentDown},
		{"AgentNotReady", testCNIAgentNotReady},
		{"AgentErrors", testCNIAgentErrors},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, newCNIEnv(t, bin)) })
	}
}

func newCNIEnv(t *testing.T, bin string) *cniEnv {
	t.Helper()
	// sun_path is 108 bytes: keep the socket path short.
	runDir, err := os.MkdirTemp("", "scni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	e := &cniEnv{
		pluginDir: bin,
		confDir:   t.TempDir(),
		sock:      filepath.Join(runDir, "agent", "cni.sock"),
		h:         &recordingHandler{fail: map[string]error{}},
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{e.pluginDir}, t.TempDir(), nil)
	e.srv = cniserver.New(e.sock, e.h, logr.Discard())
	e.srv.SetReady(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cniserver: %v", err)
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", e.sock); err == nil {
			c.Close()
			break
		}
		if i > 1000 {
			t.Fatal("cniserver did not start")
		}
		select {
		case err := <-done:
			t.Fatalf("cniserver: %v", err)
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e
}

// conflist writes and loads a configuration list as a runtime would from
// its CNI conf dir.
func (e *cniEnv) conflist(t *testing.T, version, sock string) *libcni.NetworkConfigList {
	t.Helper()
	text := fmt.Sprintf(`{"cniVersion": %q, "name": "sluice", "plugins": [{"type": "sluice-cni", "agentSocket": %q}]}`, version, sock)
	f := filepath.Join(e.confDir, "10-sluice-"+version+".conflist")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func podRT(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       "/var/run/netns/cni-conformance-" + id, // never opened
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "ns1"},
			{"K8S_POD_NAME", "pod-" + id},
			{"K8S_POD_INFRA_CONTAINER_ID", id},
			{"K8S_POD_UID", "uid-" + id},
		},
	}
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) carries no CNI error", err, err)
	}
	return e.Code
}

func wantCNICode(t *testing.T, err error, code uint, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want CNI error %d, got success", code)
	}
	if got := cniCode(t, err); got != code {
		t.Fatalf("CNI error code %d (%v), want %d", got, err, code)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q does not mention %q", err.Error(), s)
		}
	}
}

func wantCalls(t *testing.T, h *recordingHandler, want ...string) {
	t.Helper()
	if got := h.take(); !slices.Equal(got, want) {
		t.Errorf("agent calls:\n got  %q\n want %q", got, want)
	}
}

func testCNILifecycle(t *testing.T, e *cniEnv) {
	ctx := context.Background()
	list := e.conflist(t, "1.1.0", e.sock)

	// ADD returns the agent's result in the requested version.
	res, err := e.cni.AddNetworkList(ctx, list, podRT("c1"))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "1.1.0" {
		t.Errorf("ADD result version %s", res.Version())
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.128.0.2/32" || r.IPs[0].Gateway.String() != "10.128.0.1" {
		t.Errorf("ADD result %+v", r)
	}
	wantCalls(t, e.h, "ADD c1 eth0 ns1/pod-c1 1.1.0")

	// The runtime's cache has the result, as CHECK needs.
	if cached, err := e.cni.GetNetworkListCachedResult(list, podRT("c1")); err != nil || cached == nil {
		t.Errorf("cached result: %v %v", cached, err)
	}

	if err := e.cni.CheckNetworkList(ctx, list, podRT("c1")); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	wantCalls(t, e.h, "CHECK c1 eth0 ns1/pod-c1 1.1.0")

	if err := e.cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	wantCalls(t, e.h, "STATUS")

	// GC: libcni first DELs cached attachments the runtime no longer lists
	// (c2), then sends GC with the valid ones.
	if _, err := e.cni.AddNetworkList(ctx, list, podRT("c2")); err != nil {
		t.Fatal(err)
	}
	e.h.take()
	valid := []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}, {ContainerID: "c9", IfName: "net1"}}
	if err := e.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	wantCalls(t, e.h, "DEL c2 eth0 ns1/pod-c2 1.1.0", "GC")
	if len(e.h.gcValid) != 1 || !slices.Equal(e.h.gcValid[0], valid) {
		t.Errorf("GC valid attachments %v, want %v", e.h.gcValid, valid)
	}

	// DEL, again, and for a container never added: all succeed.
	for _, id := range []string{"c1", "c1", "never-seen"} {
		if err := e.cni.DelNetworkList(ctx, list, podRT(id)); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
	}
	wantCalls(t, e.h, "DEL c1 eth0 ns1/pod-c1 1.1.0", "DEL c1 eth0 ns1/pod-c1 1.1.0", "DEL never-seen eth0 ns1/pod-never-seen 1.1.0")
	// DEL without a netns (it is gone) is fine too.
	rt := podRT("c3")
	rt.NetNS = ""
	if err := e.cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
}

func testCNIVersions(t *testing.T, e *cniEnv) {
	ctx := context.Background()

	info, err := e.cni.GetVersionInfo(ctx, cni.PluginType)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(info.SupportedVersions(), v) {
			t.Errorf("VERSION lists %v, missing %s", info.SupportedVersions(), v)
		}
	}

	for _, v := range []string{"1.0.0", "0.4.0", "0.3.1"} {
		t.Run(v, func(t *testing.T) {
			list := e.conflist(t, v, e.sock)
			if _, err := e.cni.ValidateNetworkList(ctx, list); err != nil {
				t.Errorf("ValidateNetworkList: %v", err)
			}
			id := "v" + strings.ReplaceAll(v, ".", "")
			res, err := e.cni.AddNetworkList(ctx, list, podRT(id))
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("ADD result version %s, want %s", res.Version(), v)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil || len(r.IPs) != 1 {
				t.Fatalf("result %v: %v", res, err)
			}
			want := []string{"ADD " + id + " eth0 ns1/pod-" + id + " " + v}
			if v != "0.3.1" { // CHECK exists since 0.4.0
				if err := e.cni.CheckNetworkList(ctx, list, podRT(id)); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
				want = append(want, "CHECK "+id+" eth0 ns1/pod-"+id+" "+v)
			}
			if err := e.cni.DelNetworkList(ctx, list, podRT(id)); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			want = append(want, "DEL "+id+" eth0 ns1/pod-"+id+" "+v)
			// STATUS and GC are 1.1 verbs: libcni does not call them.
			if err := e.cni.GetStatusNetworkList(ctx, list); err != nil {
				t.Errorf("STATUS: %v", err)
			}
			wantCalls(t, e.h, want...)
		})
	}
}

func testCNIBadConfiguration(t *testing.T, e *cniEnv) {
	ctx := context.Background()
	plugin := filepath.Join(e.pluginDir, cni.PluginType)
	args := &invoke.Args{Command: "ADD", ContainerID: "c1", NetNS: "/var/run/netns/x", IfName: "eth0", Path: e.pluginDir}

	// What libcni does once it has a configuration: exec the plugin with it
	// on stdin. The plugin's own answer to broken input:
	cases := []struct {
		name, conf string
		code       uint
		says       string
	}{
		{"malformed JSON", `{"cniVersion": "1.1.0", "name": "sluice", "type": `, types.ErrDecodingFailure, ""},
		{"missing type", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"sluice","agentSocket":%q}`, e.sock), types.ErrInvalidNetworkConfig, "type"},
		{"wrong type", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"sluice","type":"bridge","agentSocket":%q}`, e.sock), types.ErrInvalidNetworkConfig, "bridge"},
		{"missing name", `{"cniVersion":"1.1.0","type":"sluice-cni"}`, types.ErrInvalidNetworkConfig, "name"},
		{"unknown cniVersion", `{"cniVersion":"9.9.9","name":"sluice","type":"sluice-cni"}`, types.ErrIncompatibleCNIVersion, ""},
		{"relative agentSocket", `{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni","agentSocket":"cni.sock"}`, types.ErrInvalidNetworkConfig, "agentSocket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := invoke.ExecPluginWithResult(ctx, plugin, []byte(tc.conf), args, nil)
			wantCNICode(t, err, tc.code, tc.says)
		})
	}
	wantCalls(t, e.h) // nothing reached the agent

	// The same through libcni's front door: it refuses what it cannot parse
	// itself, and passes an unknown version on to the plugin, which refuses.
	t.Run("libcni", func(t *testing.T) {
		if _, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "sluice", "plugins": [`)); err == nil {
			t.Error("libcni accepted a malformed conflist")
		}
		_, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "sluice", "plugins": [{"agentSocket": "/x"}]}`))
		if err == nil || !strings.Contains(err.Error(), "type") {
			t.Errorf("libcni on a plugin entry without type: %v", err)
		}
		bad := e.conflist(t, "9.9.9", e.sock)
		_, err = e.cni.AddNetworkList(ctx, bad, podRT("c1"))
		wantCNICode(t, err, types.ErrIncompatibleCNIVersion)
		if _, err := e.cni.ValidateNetworkList(ctx, bad); err == nil {
			t.Error("ValidateNetworkList accepted cniVersion 9.9.9")
		}
		wantCalls(t, e.h)
	})
	// Broken environment, handled by skel before the plugin's code runs.
	t.Run("bad ifName", func(t *testing.T) {
		a := *args
		a.IfName = "eth0/../x"
		_, err := invoke.ExecPluginWithResult(ctx, plugin, []byte(`{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni"}`), &a, nil)
		wantCNICode(t, err, types.ErrInvalidEnvironmentVariables)
	})
}

func testCNIAgentDown(t *testing.T, e *cniEnv) {
	ctx := context.Background()
	missing := filepath.Join(filepath.Dir(e.sock), "nobody.sock")
	list := e.conflist(t, "1.1.0", missing)

	_, err := e.cni.AddNetworkList(ctx, list, podRT("c1"))
	wantCNICode(t, err, types.ErrTryAgainLater, missing)
	err = e.cni.DelNetworkList(ctx, list, podRT("c1"))
	wantCNICode(t, err, types.ErrTryAgainLater, missing)
	// STATUS reports "cannot serve ADD" with the spec's STATUS code.
	err = e.cni.GetStatusNetworkList(ctx, list)
	wantCNICode(t, err, cni.ErrPluginNotAvailable, missing)
}

func testCNIAgentNotReady(t *testing.T, e *cniEnv) {
	ctx := context.Background()
	list := e.conflist(t, "1.1.0", e.sock)
	e.srv.SetReady(false)

	_, err := e.cni.AddNetworkList(ctx, list, podRT("c1"))
	wantCNICode(t, err, types.ErrTryAgainLater, "not ready")
	err = e.cni.GetStatusNetworkList(ctx, list)
	wantCNICode(t, err, cni.ErrPluginNotAvailable)
	// A runtime can always clean up.
	if err := e.cni.DelNetworkList(ctx, list, podRT("c1")); err != nil {
		t.Fatalf("DEL while not ready: %v", err)
	}
	wantCalls(t, e.h, "DEL c1 eth0 ns1/pod-c1 1.1.0")

	e.srv.SetReady(true)
	if _, err := e.cni.AddNetworkList(ctx, list, podRT("c1")); err != nil {
		t.Fatalf("ADD once ready: %v", err)
	}
}

func testCNIAgentErrors(t *testing.T, e *cniEnv) {
	ctx := context.Background()
	list := e.conflist(t, "1.1.0", e.sock)
	if _, err := e.cni.AddNetworkList(ctx, list, podRT("c1")); err != nil {
		t.Fatal(err)
	}
	// The agent's CNI error reaches the runtime unchanged...
	e.h.fail["CHECK"] = types.NewError(types.ErrUnknownContainer, "container c1 has no interface", "eth0 missing")
	err := e.cni.CheckNetworkList(ctx, list, podRT("c1"))
	wantCNICode(t, err, types.ErrUnknownContainer, "container c1 has no interface", "eth0 missing")
	// ...and any other failure is 999 with its cause.
	e.h.fail["ADD"] = errors.New("veth: file exists")
	_, err = e.cni.AddNetworkList(ctx, list, podRT("c2"))
	wantCNICode(t, err, types.ErrInternal, "veth: file exists")
	e.h.fail["STATUS"] = errors.New("address pool exhausted")
	err = e.cni.GetStatusNetworkList(ctx, list)
	wantCNICode(t, err, cni.ErrPluginNotAvailable, "exhausted")
}
