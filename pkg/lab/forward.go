package lab

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/netns"
)

// Forward accepts TCP connections on listen (in the caller's namespace, the
// host's) and relays each to `to`, dialled from inside the namespace at
// nsPath. It is how kubectl on the host reaches the API server, which lives
// only on the lab's fabric. It logs to klog.FromContext(ctx).
func Forward(ctx context.Context, listen, nsPath, to string) error {
	logger := klog.FromContext(ctx)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	logger.Info("Forwarding", "listen", listen, "netns", nsPath, "to", to)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			up, err := netns.Dial(dctx, nsPath, "tcp", to)
			cancel()
			if err != nil {
				logger.Error(err, "Dial upstream", "to", to)
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			wg.Add(2)
			go pipe(up, c)
			go pipe(c, up)
			wg.Wait()
		}()
	}
}
