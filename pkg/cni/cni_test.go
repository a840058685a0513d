package cni

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		code   uint // 0: valid
		socket string
		says   string
	}{
		{"minimal", `{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni"}`, 0, DefaultSocket, ""},
		{"own socket", `{"cniVersion":"0.4.0","name":"sluice","type":"sluice-cni","agentSocket":"/tmp/a.sock","runtimeConfig":{"x":1}}`, 0, "/tmp/a.sock", ""},
		{"not JSON", `{"cniVersion":`, types.ErrDecodingFailure, "", ""},
		{"array", `[]`, types.ErrDecodingFailure, "", ""},
		{"no type", `{"cniVersion":"1.1.0","name":"sluice"}`, types.ErrInvalidNetworkConfig, "", `"type"`},
		{"other type", `{"cniVersion":"1.1.0","name":"sluice","type":"ptp"}`, types.ErrInvalidNetworkConfig, "", `"ptp"`},
		{"no name", `{"cniVersion":"1.1.0","type":"sluice-cni"}`, types.ErrInvalidNetworkConfig, "", `"name"`},
		{"unknown version", `{"cniVersion":"9.9.9","name":"sluice","type":"sluice-cni"}`, types.ErrIncompatibleCNIVersion, "", "9.9.9"},
		{"no version (0.1.0)", `{"name":"sluice","type":"sluice-cni"}`, types.ErrIncompatibleCNIVersion, "", "0.1.0"},
		{"old version", `{"cniVersion":"0.2.0","name":"sluice","type":"sluice-cni"}`, types.ErrIncompatibleCNIVersion, "", "0.2.0"},
		{"relative socket", `{"cniVersion":"1.1.0","name":"sluice","type":"sluice-cni","agentSocket":"cni.sock"}`, types.ErrInvalidNetworkConfig, "", "cni.sock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseNetConf([]byte(tc.in))
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.AgentSocket != tc.socket {
					t.Errorf("socket %q, want %q", c.AgentSocket, tc.socket)
				}
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *types.Error", err, err)
			}
			if e.Code != tc.code || !strings.Contains(e.Error(), tc.says) {
				t.Errorf("got %d %q, want %d mentioning %s", e.Code, e.Error(), tc.code, tc.says)
			}
		})
	}
}

func TestParseNetConfAttachments(t *testing.T) {
	c, err := ParseNetConf([]byte(`{"cniVersion":"1.1.0","name":"n","type":"sluice-cni",
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
		"cni.dev/attachments":[{"containerID":"z","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ValidAttachments) != 1 || c.ValidAttachments[0].ContainerID != "a" {
		t.Errorf("valid attachments %v", c.ValidAttachments)
	}
	c, _ = ParseNetConf([]byte(`{"cniVersion":"1.1.0","name":"n","type":"sluice-cni","cni.dev/attachments":[{"containerID":"z","ifname":"eth0"}]}`))
	if len(c.ValidAttachments) != 1 || c.ValidAttachments[0].ContainerID != "z" {
		t.Errorf("legacy attachments %v", c.ValidAttachments)
	}
}

func tempSock(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cnic")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "cni.sock")
}

// serve answers every request with h on a fresh unix socket.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := tempSock(t)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func wantCNIError(t *testing.T, err error, code uint, says ...string) {
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

func TestCallRoundTrip(t *testing.T) {
	var got Request
	var path, method string
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		path, method = r.URL.Path, r.Method
		json.NewDecoder(r.Body).Decode(&got)
		w.Write([]byte(`{"result":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/32"}]}}`))
	})
	req := Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "eth0", Args: "A=B",
		Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"n","type":"sluice-cni"}`)}
	r, err := Call(context.Background(), sock, req)
	if err != nil {
		t.Fatal(err)
	}
	if path != Path || method != http.MethodPost {
		t.Errorf("%s %s, want POST %s", method, path, Path)
	}
	req.Version = ProtocolVersion
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(req)
	if string(gb) != string(wb) {
		t.Errorf("agent got %s, want %s", gb, wb)
	}
	if r.Error != nil || !strings.Contains(string(r.Result), "10.0.0.2/32") {
		t.Errorf("reply %+v", r)
	}
}

func TestCallAgentError(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"error":{"code":7,"msg":"bad","details":"worse"}}`))
	})
	r, err := Call(context.Background(), sock, Request{Command: CmdAdd, Config: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Error == nil || *r.Error != (types.Error{Code: 7, Msg: "bad", Details: "worse"}) {
		t.Errorf("reply error %+v", r.Error)
	}
}

func TestCallTransportErrors(t *testing.T) {
	ctx := context.Background()
	req := Request{Command: CmdAdd, Config: json.RawMessage(`{}`)}

	t.Run("no socket", func(t *testing.T) {
		sock := tempSock(t)
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrTryAgainLater, sock, "not running")
	})
	t.Run("no socket directory", func(t *testing.T) {
		sock := filepath.Join(tempSock(t), "deeper", "cni.sock")
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrTryAgainLater, sock)
	})
	t.Run("connection refused", func(t *testing.T) {
		// A dead agent's socket: the file is there, nobody listens.
		sock := tempSock(t)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		_, err = Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrTryAgainLater, sock, "not accepting")
	})
	t.Run("503 without a reply", func(t *testing.T) {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		})
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrTryAgainLater, sock, "shutting down")
	})
	t.Run("503 with the agent's reply", func(t *testing.T) {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":11,"msg":"node network not initialised"}}`))
		})
		r, err := Call(ctx, sock, req)
		if err != nil {
			t.Fatal(err)
		}
		if r.Error == nil || r.Error.Code != 11 || r.Error.Msg != "node network not initialised" {
			t.Errorf("reply %+v", r.Error)
		}
	})
	t.Run("503 with another code", func(t *testing.T) {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":7,"msg":"x"}}`))
		})
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrTryAgainLater)
	})
	t.Run("500", func(t *testing.T) {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "kaboom", http.StatusInternalServerError)
		})
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrInternal, "500", "kaboom", sock)
	})
	t.Run("garbage", func(t *testing.T) {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) })
		_, err := Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrInternal, "unreadable")
	})
	t.Run("hang up", func(t *testing.T) {
		sock := tempSock(t)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				io.ReadFull(c, make([]byte, 10))
				c.Close()
			}
		}()
		_, err = Call(ctx, sock, req)
		wantCNIError(t, err, types.ErrInternal, sock)
	})
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		defer close(block)
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) { <-block })
		tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := Call(tctx, sock, req)
		wantCNIError(t, err, types.ErrInternal, "in time", sock)
	})
}
