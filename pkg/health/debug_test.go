package health

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServeDebugServesProfilesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := ServeDebug(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []byte, error) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	code, body, err := get("/debug/pprof/heap?debug=1")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), "heap profile:") {
		t.Fatalf("heap profile as text: %d %v %.80q", code, err, body)
	}
	// The binary form is a gzipped protobuf, what `go tool pprof` reads.
	code, body, err = get("/debug/pprof/heap")
	if err != nil || code != http.StatusOK || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		t.Fatalf("heap profile: %d %v, %d bytes starting %.4q", code, err, len(body), body)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, err := get("/debug/pprof/"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still serving after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeDebugListenError(t *testing.T) {
	if _, err := ServeDebug(context.Background(), "256.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("error %v, want one naming the address", err)
	}
}
