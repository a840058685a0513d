package cniserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/go-logr/logr"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/sluice-net/sluice/pkg/cni"
)

// fakeHandler records calls and answers what the test sets.
type fakeHandler struct {
	mu     sync.Mutex
	calls  []string // "ADD id ifname"
	last   *Call
	gc     [][]types.GCAttachment
	addErr error
	delErr error
	chkErr error
	stErr  error
	result *current.Result
	// hook runs inside Add/Del/Check, outside mu.
	hook func(cmd string, c *Call)
}

var _ Handler = &fakeHandler{}

func (f *fakeHandler) record(cmd string, c *Call) {
	f.mu.Lock()
	if c != nil {
		f.calls = append(f.calls, cmd+" "+c.ContainerID+" "+c.IfName)
		cp := *c
		f.last = &cp
	} else {
		f.calls = append(f.calls, cmd)
	}
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		hook(cmd, c)
	}
}

func (f *fakeHandler) Add(_ context.Context, c *Call) (*current.Result, error) {
	f.record("ADD", c)
	if f.addErr != nil {
		return nil, f.addErr
	}
	if f.result != nil {
		return f.result, nil
	}
	return testResult(), nil
}

func (f *fakeHandler) Del(_ context.Context, c *Call) error {
	f.record("DEL", c)
	return f.delErr
}

func (f *fakeHandler) Check(_ context.Context, c *Call) error {
	f.record("CHECK", c)
	return f.chkErr
}

func (f *fakeHandler) GC(_ context.Context, valid []types.GCAttachment) error {
	f.record("GC", nil)
	f.mu.Lock()
	f.gc = append(f.gc, valid)
	f.mu.Unlock()
	return nil
}

func (f *fakeHandler) Status(context.Context) error {
	f.record("STATUS", nil)
	return f.stErr
}

func (f *fakeHandler) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func testResult() *current.Result {
	ip, ipn, _ := net.ParseCIDR("10.128.1.5/32")
	ipn.IP = ip
	gw := net.ParseIP("10.128.1.1")
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	zero := 0
	return &current.Result{
		Interfaces: []*current.Interface{{Name: "eth0", Mac: "0a:58:0a:80:01:05", Sandbox: "/var/run/netns/x"}},
		IPs:        []*current.IPConfig{{Interface: &zero, Address: *ipn, Gateway: gw}},
		Routes:     []*types.Route{{Dst: *all, GW: gw}},
	}
}

// startServer runs a server on a fresh socket (short path: sun_path is 108
// bytes) and stops it at the end of the test.
func startServer(t *testing.T, h Handler, ready bool) (*Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cnis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "cni.sock")
	s := New(sock, h, logr.Discard())
	s.SetReady(ready)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitSocket(t, sock)
	return s, sock
}

func waitSocket(t *testing.T, sock string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server did not listen on %s", sock)
}

func conf(version string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"cniVersion":%q,"name":"sluice","type":"sluice-cni"}`, version))
}

const k8sArgsStr = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1"

func addReq(id string) cni.Request {
	return cni.Request{
		Command: cni.CmdAdd, ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0",
		Args: k8sArgsStr, Config: conf("1.1.0"),
	}
}

func call(t *testing.T, sock string, req cni.Request) *cni.Reply {
	t.Helper()
	r, err := cni.Call(context.Background(), sock, req)
	if err != nil {
		t.Fatalf("Call(%s): transport error %v", req.Command, err)
	}
	return r
}

func wantCode(t *testing.T, r *cni.Reply, code uint, contains ...string) {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("want error code %d, got success %s", code, r.Result)
	}
	if r.Error.Code != code {
		t.Fatalf("want error code %d, got %d: %v", code, r.Error.Code, r.Error)
	}
	if r.Error.Msg == "" {
		t.Errorf("error without msg: %+v", r.Error)
	}
	for _, s := range contains {
		if !strings.Contains(r.Error.Error(), s) {
			t.Errorf("error %q does not mention %q", r.Error.Error(), s)
		}
	}
}

func wantOK(t *testing.T, r *cni.Reply) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("want success, got %v (code %d)", r.Error, r.Error.Code)
	}
}

func TestSocketPermissionsAndCleanup(t *testing.T) {
	dir, err := os.MkdirTemp("", "cnis")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "a", "b", "cni.sock")
	s := New(sock, &fakeHandler{}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitSocket(t, sock)

	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	if p := fi.Mode().Perm(); p != 0o700 {
		t.Errorf("socket directory mode %v, want 0700", p)
	}
	fi, err = os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}

	// A second server on the same path must not steal a live socket.
	s2 := New(sock, &fakeHandler{}, logr.Discard())
	if err := s2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Run on a live socket: %v, want refusal", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Run returned: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	dir, err := os.MkdirTemp("", "cnis")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "cni.sock")
	// A crashed agent leaves its socket file behind: listen, then close
	// without unlinking.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatal("stale socket not left behind")
	}

	s := New(sock, &fakeHandler{}, logr.Discard())
	s.SetReady(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitSocket(t, sock)
	wantOK(t, call(t, sock, addReq("c1")))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNonSocketNotReplaced(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "cni.sock")
	os.WriteFile(sock, []byte("precious"), 0o644)
	err := New(sock, &fakeHandler{}, logr.Discard()).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Fatal("regular file was replaced")
	}
}

func TestAddResultInRequestedVersion(t *testing.T) {
	h := &fakeHandler{result: testResult()}
	_, sock := startServer(t, h, true)
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"} {
		t.Run(v, func(t *testing.T) {
			req := addReq("c-" + strings.ReplaceAll(v, ".", ""))
			req.Config = conf(v)
			r := call(t, sock, req)
			wantOK(t, r)
			got, err := create.CreateFromBytes(r.Result)
			if err != nil {
				t.Fatalf("result %s: %v", r.Result, err)
			}
			if got.Version() != v {
				t.Errorf("result version %s, want %s", got.Version(), v)
			}
			var raw map[string]any
			json.Unmarshal(r.Result, &raw)
			if raw["cniVersion"] != v {
				t.Errorf("result cniVersion %v, want %s", raw["cniVersion"], v)
			}
			cur, err := current.NewResultFromResult(got)
			if err != nil {
				t.Fatal(err)
			}
			if len(cur.IPs) != 1 || cur.IPs[0].Address.String() != "10.128.1.5/32" {
				t.Errorf("IPs %v", cur.IPs)
			}
		})
	}
	c := h.last
	if c.PodNamespace != "ns1" || c.PodName != "web-0" || c.PodUID != "uid-1" || c.IfName != "eth0" ||
		c.Netns == "" || c.CNIVersion != "0.3.0" || !bytes.Equal(c.RawConfig, conf("0.3.0")) {
		t.Errorf("handler got %+v", c)
	}
	if h.result.CNIVersion != "" {
		t.Error("the handler's result was written to")
	}
}

func TestNotReady(t *testing.T) {
	h := &fakeHandler{}
	s, sock := startServer(t, h, false)

	wantCode(t, call(t, sock, addReq("c1")), types.ErrTryAgainLater, "not ready")
	chk := addReq("c1")
	chk.Command = cni.CmdCheck
	wantCode(t, call(t, sock, chk), types.ErrTryAgainLater)
	wantCode(t, call(t, sock, cni.Request{Command: cni.CmdGC, Config: conf("1.1.0")}), types.ErrTryAgainLater)
	wantCode(t, call(t, sock, cni.Request{Command: cni.CmdStatus, Config: conf("1.1.0")}), cni.ErrPluginNotAvailable)

	del := addReq("c1")
	del.Command = cni.CmdDel
	wantOK(t, call(t, sock, del))
	if got := h.callList(); len(got) != 1 || got[0] != "DEL c1 eth0" {
		t.Fatalf("handler calls while not ready: %v, want only the DEL", got)
	}

	s.SetReady(true)
	wantOK(t, call(t, sock, addReq("c1")))
	wantOK(t, call(t, sock, cni.Request{Command: cni.CmdStatus, Config: conf("1.1.0")}))
}

func TestNotReadyIsHTTP503(t *testing.T) {
	_, sock := startServer(t, &fakeHandler{}, false)
	body, _ := json.Marshal(cni.Request{Version: cni.ProtocolVersion, Command: cni.CmdAdd, ContainerID: "c1",
		Netns: "/x", IfName: "eth0", Config: conf("1.1.0")})
	resp, err := rawPost(sock, body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
}

func rawPost(sock string, body []byte) (*http.Response, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://x"+cni.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func TestBadRequestBody(t *testing.T) {
	_, sock := startServer(t, &fakeHandler{}, true)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://x"+cni.Path, "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r cni.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	wantCode(t, &r, types.ErrDecodingFailure)

	resp2, err := c.Get("http://x" + cni.Path)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp2.StatusCode)
	}
}

func TestValidation(t *testing.T) {
	h := &fakeHandler{}
	_, sock := startServer(t, h, true)
	mod := func(f func(r *cni.Request)) cni.Request {
		r := addReq("c1")
		f(&r)
		return r
	}
	cases := []struct {
		name string
		req  cni.Request
		code uint
		says []string
	}{
		{"protocol version", mod(func(r *cni.Request) { r.Version = 7 }), types.ErrIncompatibleCNIVersion, []string{"7", "1"}},
		{"unknown command", mod(func(r *cni.Request) { r.Command = "FROB" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_COMMAND", "FROB"}},
		{"config not JSON", mod(func(r *cni.Request) { r.Config = json.RawMessage(`"x"`) }), types.ErrDecodingFailure, nil},
		{"config without type", mod(func(r *cni.Request) { r.Config = json.RawMessage(`{"cniVersion":"1.1.0","name":"n"}`) }), types.ErrInvalidNetworkConfig, []string{"type"}},
		{"config of another plugin", mod(func(r *cni.Request) {
			r.Config = json.RawMessage(`{"cniVersion":"1.1.0","name":"n","type":"bridge"}`)
		}), types.ErrInvalidNetworkConfig, []string{"bridge"}},
		{"config without name", mod(func(r *cni.Request) { r.Config = json.RawMessage(`{"cniVersion":"1.1.0","type":"sluice-cni"}`) }), types.ErrInvalidNetworkConfig, []string{"name"}},
		{"unknown cniVersion", mod(func(r *cni.Request) { r.Config = conf("9.9.9") }), types.ErrIncompatibleCNIVersion, []string{"9.9.9"}},
		{"relative agentSocket", mod(func(r *cni.Request) {
			r.Config = json.RawMessage(`{"cniVersion":"1.1.0","name":"n","type":"sluice-cni","agentSocket":"x.sock"}`)
		}), types.ErrInvalidNetworkConfig, []string{"agentSocket", "x.sock"}},
		{"no netns on ADD", mod(func(r *cni.Request) { r.Netns = "" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS"}},
		{"relative netns", mod(func(r *cni.Request) { r.Netns = "netns/x" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS", "netns/x"}},
		{"no netns on CHECK", mod(func(r *cni.Request) { r.Command = cni.CmdCheck; r.Netns = "" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS"}},
		{"bad ifName", mod(func(r *cni.Request) { r.IfName = "eth/0" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME", "eth/0"}},
		{"long ifName", mod(func(r *cni.Request) { r.IfName = "abcdefghijklmnop" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME", "abcdefghijklmnop"}},
		{"empty ifName on DEL", mod(func(r *cni.Request) { r.Command = cni.CmdDel; r.IfName = "" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME"}},
		{"no containerID", mod(func(r *cni.Request) { r.ContainerID = "" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_CONTAINERID"}},
		{"bad containerID", mod(func(r *cni.Request) { r.ContainerID = "-x y" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_CONTAINERID", "-x y"}},
		{"unknown CNI_ARGS", mod(func(r *cni.Request) { r.Args = "K8S_POD_NAME=a;FOO=bar" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_ARGS", "FOO=bar"}},
		{"malformed CNI_ARGS", mod(func(r *cni.Request) { r.Args = "K8S_POD_NAME" }), types.ErrInvalidEnvironmentVariables, []string{"CNI_ARGS"}},
		{"CHECK before 0.4.0", mod(func(r *cni.Request) { r.Command = cni.CmdCheck; r.Config = conf("0.3.1") }), types.ErrIncompatibleCNIVersion, []string{"CHECK", "0.3.1"}},
		{"GC before 1.1.0", cni.Request{Command: cni.CmdGC, Config: conf("1.0.0")}, types.ErrIncompatibleCNIVersion, []string{"GC"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, call(t, sock, tc.req), tc.code, tc.says...)
		})
	}
	if got := h.callList(); len(got) != 0 {
		t.Errorf("invalid requests reached the handler: %v", got)
	}

	// DEL needs no netns (the namespace may be gone); known CNI_ARGS alone
	// need no IgnoreUnknown.
	wantOK(t, call(t, sock, mod(func(r *cni.Request) { r.Command = cni.CmdDel; r.Netns = "" })))
	wantOK(t, call(t, sock, mod(func(r *cni.Request) { r.Args = "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b" })))
	wantOK(t, call(t, sock, mod(func(r *cni.Request) { r.Args = "" })))
	wantOK(t, call(t, sock, mod(func(r *cni.Request) { r.Args = "IgnoreUnknown=true;FOO=bar" })))
}

func TestHandlerErrors(t *testing.T) {
	h := &fakeHandler{
		addErr: types.NewError(types.ErrUnknownContainer, "no such container", "gone"),
		delErr: fmt.Errorf("remove veth: %w", errors.New("device busy")),
		chkErr: errors.New("address 10.128.1.5 missing"),
		stErr:  errors.New("address pool exhausted"),
	}
	_, sock := startServer(t, h, true)

	r := call(t, sock, addReq("c1"))
	if r.Error == nil || *r.Error != (types.Error{Code: 3, Msg: "no such container", Details: "gone"}) {
		t.Errorf("typed error not passed through: %+v", r.Error)
	}
	del := addReq("c1")
	del.Command = cni.CmdDel
	wantCode(t, call(t, sock, del), types.ErrInternal, "DEL", "device busy")
	chk := addReq("c1")
	chk.Command = cni.CmdCheck
	wantCode(t, call(t, sock, chk), types.ErrInternal, "10.128.1.5 missing")
	wantCode(t, call(t, sock, cni.Request{Command: cni.CmdStatus, Config: conf("1.1.0")}), cni.ErrPluginNotAvailable, "exhausted")

	h.stErr = types.NewError(cni.ErrPluginNotAvailableLimitedConnectivity, "overlay down", "")
	wantCode(t, call(t, sock, cni.Request{Command: cni.CmdStatus, Config: conf("1.1.0")}), cni.ErrPluginNotAvailableLimitedConnectivity)
}

type panicHandler struct{ fakeHandler }

func (*panicHandler) Add(context.Context, *Call) (*current.Result, error) { panic("boom") }

func TestHandlerPanicAndNilResult(t *testing.T) {
	_, sock := startServer(t, &panicHandler{}, true)
	wantCode(t, call(t, sock, addReq("c1")), types.ErrInternal, "boom")
	// The container's lock was released.
	wantCode(t, call(t, sock, addReq("c1")), types.ErrInternal, "boom")

	_, sock2 := startServer(t, &nilResultHandler{}, true)
	wantCode(t, call(t, sock2, addReq("c1")), types.ErrInternal, "no result")
}

type nilResultHandler struct{ fakeHandler }

func (*nilResultHandler) Add(context.Context, *Call) (*current.Result, error) { return nil, nil }

func TestGCValidAttachments(t *testing.T) {
	h := &fakeHandler{}
	_, sock := startServer(t, h, true)
	wantOK(t, call(t, sock, cni.Request{Command: cni.CmdGC, Config: json.RawMessage(
		`{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]}`)}))
	// Only the key of the spec's draft (libcni sends both).
	wantOK(t, call(t, sock, cni.Request{Command: cni.CmdGC, Config: json.RawMessage(
		`{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni","cni.dev/attachments":[{"containerID":"c","ifname":"eth0"}]}`)}))
	// No attachment is valid: everything goes.
	wantOK(t, call(t, sock, cni.Request{Command: cni.CmdGC, Config: conf("1.1.0")}))
	want := [][]types.GCAttachment{
		{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "net1"}},
		{{ContainerID: "c", IfName: "eth0"}},
		nil,
	}
	if fmt.Sprint(h.gc) != fmt.Sprint(want) {
		t.Errorf("GC got %v, want %v", h.gc, want)
	}
}

// Calls for one container never overlap; calls for different containers do.
func TestPerContainerSerialisation(t *testing.T) {
	var (
		mu        sync.Mutex
		active    = map[string]int{}
		overlap   bool
		bothIn    = make(chan struct{})
		bothOnce  sync.Once
		inFlight  int
		maxFlight int
	)
	h := &fakeHandler{}
	h.hook = func(cmd string, c *Call) {
		mu.Lock()
		active[c.ContainerID]++
		if active[c.ContainerID] > 1 {
			overlap = true
		}
		inFlight++
		if inFlight > maxFlight {
			maxFlight = inFlight
		}
		if inFlight >= 2 && len(active) >= 2 {
			n := 0
			for _, v := range active {
				if v > 0 {
					n++
				}
			}
			if n >= 2 {
				bothOnce.Do(func() { close(bothIn) })
			}
		}
		mu.Unlock()
		// Hold the call until two containers are inside at once (or a
		// while), so that any missing serialisation shows as overlap.
		select {
		case <-bothIn:
			time.Sleep(2 * time.Millisecond)
		case <-time.After(200 * time.Millisecond):
		}
		mu.Lock()
		active[c.ContainerID]--
		inFlight--
		mu.Unlock()
	}
	s, sock := startServer(t, h, true)

	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		for _, id := range []string{"ctr-a", "ctr-b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := addReq(id)
				if i%2 == 1 {
					req.Command = cni.CmdDel
				}
				if r, err := cni.Call(context.Background(), sock, req); err != nil || r.Error != nil {
					t.Errorf("call: %v %v", err, r)
				}
			}()
		}
	}
	wg.Wait()
	if overlap {
		t.Error("two calls for one container ran at the same time")
	}
	select {
	case <-bothIn:
	default:
		t.Error("calls for different containers never ran in parallel")
	}
	if n := s.locks.size(); n != 0 {
		t.Errorf("%d lock entries left", n)
	}
}

// Stopping the server lets a call in flight finish and answer.
func TestGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := &fakeHandler{}
	h.hook = func(string, *Call) {
		close(entered)
		<-release
	}
	dir, err := os.MkdirTemp("", "cnis")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "cni.sock")
	s := New(sock, h, logr.Discard())
	s.SetReady(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitSocket(t, sock)

	got := make(chan *cni.Reply, 1)
	go func() {
		r, err := cni.Call(context.Background(), sock, addReq("c1"))
		if err != nil {
			t.Errorf("in-flight call: %v", err)
		}
		got <- r
	}()
	<-entered
	cancel()
	// New calls are refused while the old one finishes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := cni.Call(context.Background(), sock, addReq("c2"))
		var e *types.Error
		if errors.As(err, &e) && e.Code == types.ErrTryAgainLater {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new call during shutdown: %v, want TRY_AGAIN_LATER", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if r := <-got; r == nil || r.Error != nil {
		t.Fatalf("in-flight call lost: %+v", r)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestKeyedLockCancel(t *testing.T) {
	k := newKeyedLock()
	unlock, err := k.lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock: %v", err)
	}
	u2, err := k.lock(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	u2()
	unlock()
	if k.size() != 0 {
		t.Fatalf("%d entries left", k.size())
	}
}
