package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/sluice-net/sluice/pkg/cni"
)

// fakeAgent answers each request with reply and remembers the requests.
type fakeAgent struct {
	mu    sync.Mutex
	reqs  []cni.Request
	reply string
}

func startAgent(t *testing.T, reply string) (*fakeAgent, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cnip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{reply: reply}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req cni.Request
		json.NewDecoder(r.Body).Decode(&req)
		a.mu.Lock()
		a.reqs = append(a.reqs, req)
		reply := a.reply
		a.mu.Unlock()
		w.Write([]byte(reply))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a, sock
}

func netconf(version, sock string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"sluice","type":"sluice-cni","agentSocket":%q}`, version, sock))
}

func args(conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "ctr1", Netns: "/var/run/netns/p1", IfName: "eth0",
		Args: "K8S_POD_NAME=web", Path: "/opt/cni/bin", StdinData: conf}
}

func wantCode(t *testing.T, err error, code uint, says ...string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *types.Error", err, err)
	}
	if e.Code != code {
		t.Fatalf("code %d (%v), want %d", e.Code, e, code)
	}
	for _, s := range says {
		if !strings.Contains(e.Error(), s) {
			t.Errorf("%q does not mention %q", e.Error(), s)
		}
	}
}

const result110 = `{"result":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p1"}],` +
	`"ips":[{"interface":0,"address":"10.128.0.7/32","gateway":"10.128.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.128.0.1"}]}}`

func TestAddForwardsAndConverts(t *testing.T) {
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"} {
		t.Run(v, func(t *testing.T) {
			// The agent (wrongly) answers 1.1.0 whatever was asked: the
			// plugin must still print the configuration's version.
			a, sock := startAgent(t, result110)
			var out bytes.Buffer
			p := &Plugin{Stdout: &out}
			conf := netconf(v, sock)
			if err := p.Add(args(conf)); err != nil {
				t.Fatal(err)
			}
			var printed map[string]any
			if err := json.Unmarshal(out.Bytes(), &printed); err != nil {
				t.Fatalf("printed %q: %v", out.String(), err)
			}
			if printed["cniVersion"] != v {
				t.Errorf("printed cniVersion %v, want %s", printed["cniVersion"], v)
			}
			if !strings.Contains(out.String(), "10.128.0.7/32") {
				t.Errorf("printed %s", out.String())
			}
			r := a.reqs[0]
			if r.Version != cni.ProtocolVersion || r.Command != cni.CmdAdd || r.ContainerID != "ctr1" ||
				r.Netns != "/var/run/netns/p1" || r.IfName != "eth0" || r.Args != "K8S_POD_NAME=web" ||
				!bytes.Equal(r.Config, conf) {
				t.Errorf("agent got %+v", r)
			}
		})
	}
}

func TestAgentErrorsUnchanged(t *testing.T) {
	_, sock := startAgent(t, `{"error":{"code":3,"msg":"unknown container","details":"ctr1"}}`)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	for name, f := range map[string]func(*skel.CmdArgs) error{"ADD": p.Add, "DEL": p.Del, "CHECK": p.Check, "GC": p.GC, "STATUS": p.Status} {
		err := f(args(netconf("1.1.0", sock)))
		var e *types.Error
		if !errors.As(err, &e) || *e != (types.Error{Code: 3, Msg: "unknown container", Details: "ctr1"}) {
			t.Errorf("%s: %v, want the agent's error unchanged", name, err)
		}
	}
}

func TestCommandsForwarded(t *testing.T) {
	a, sock := startAgent(t, `{}`)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	conf := netconf("1.1.0", sock)
	for _, f := range []func(*skel.CmdArgs) error{p.Del, p.Check, p.GC, p.Status} {
		if err := f(args(conf)); err != nil {
			t.Fatal(err)
		}
	}
	var cmds []string
	for _, r := range a.reqs {
		cmds = append(cmds, r.Command)
	}
	if strings.Join(cmds, ",") != "DEL,CHECK,GC,STATUS" {
		t.Errorf("agent got %v", cmds)
	}
}

func TestAddWithoutResult(t *testing.T) {
	_, sock := startAgent(t, `{}`)
	wantCode(t, (&Plugin{Stdout: &bytes.Buffer{}}).Add(args(netconf("1.1.0", sock))), types.ErrInternal, "without a result")
	_, sock = startAgent(t, `{"result":{"cniVersion":"7.0.0"}}`)
	wantCode(t, (&Plugin{Stdout: &bytes.Buffer{}}).Add(args(netconf("1.1.0", sock))), types.ErrInternal, "unreadable")
}

func TestAgentDown(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "cni.sock")
	p := &Plugin{Stdout: &bytes.Buffer{}}
	wantCode(t, p.Add(args(netconf("1.1.0", sock))), types.ErrTryAgainLater, sock)
	wantCode(t, p.Del(args(netconf("1.1.0", sock))), types.ErrTryAgainLater, sock)
	// STATUS has its own code for "cannot serve ADD" (CNI 1.1).
	wantCode(t, p.Status(args(netconf("1.1.0", sock))), cni.ErrPluginNotAvailable, sock)
}

func TestBadConfigNeverReachesAgent(t *testing.T) {
	a, sock := startAgent(t, `{}`)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	wantCode(t, p.Add(args([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","agentSocket":%q}`, sock)))), types.ErrInvalidNetworkConfig, "type")
	wantCode(t, p.Add(args([]byte(`{"cniVersion":"9.9.9","name":"n","type":"sluice-cni"}`))), types.ErrIncompatibleCNIVersion, "9.9.9")
	if len(a.reqs) != 0 {
		t.Errorf("agent got %d requests", len(a.reqs))
	}
}
