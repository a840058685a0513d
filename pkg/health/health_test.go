package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestEndpoints(t *testing.T) {
	var s Server
	caches := NewFlag("informer caches not synced")
	s.Ready.Set("caches", caches.Check)
	s.Ready.Set("privileges", func() error { return errors.New("missing CAP_NET_ADMIN") })
	s.Live.Set("process", func() error { return nil })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Serve(ctx, addr); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	code, body := get("/readyz")
	want := "caches: informer caches not synced\nprivileges: missing CAP_NET_ADMIN"
	if code != 503 || body != want {
		t.Errorf("/readyz = %d %q, want 503 %q", code, body, want)
	}
	caches.Set(nil)
	s.Ready.Set("privileges", func() error { return nil })
	if code, body := get("/readyz"); code != 200 || body != "ok" {
		t.Errorf("/readyz after both cleared = %d %q, want 200 ok", code, body)
	}
	// The port is taken now: a second server says so instead of serving nothing.
	if err := (&Server{}).Serve(ctx, addr); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("second Serve on %s: err = %v, want an error naming the address", addr, err)
	}
}
