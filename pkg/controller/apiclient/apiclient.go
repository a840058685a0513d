// Package apiclient holds the API client settings Sluice's controller runs with
// (cmd/sluice-controller's --kube-api-qps, --kube-api-burst and --workers), so that the
// binary and bench/scale, which runs the controller as the binary wires it, share them.
package apiclient

import (
	"errors"
	"fmt"
	"math"

	"k8s.io/client-go/rest"
)

// Defaults of the controller's client rate limit and workers.
//
// client-go's own default (5 QPS, burst 10) lets a controller that writes one HostSubnet per
// node allocate about 3 nodes a second: 30 minutes for 5,000 nodes. The defaults let a burst
// of 5,000 allocations (one create each, plus the status and the checks against the API
// server) through in a few seconds of client-side budget; the API server's own protection is
// API Priority and Fairness, which queues or rejects what it cannot serve. Operators of a
// small API server can lower them.
const (
	DefaultQPS     = 1000
	DefaultBurst   = 2000
	DefaultWorkers = 8
)

// Check validates a rate limit; its errors name the flags.
func Check(qps float64, burst int) error {
	var errs []error
	if math.IsNaN(qps) || math.IsInf(qps, 0) || qps <= 0 || qps > math.MaxFloat32 {
		errs = append(errs, fmt.Errorf("--kube-api-qps %v: want a positive number of requests per second", qps))
	}
	if burst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-burst %d: want at least 1", burst))
	} else if qps > 0 && float64(burst) < qps {
		errs = append(errs, fmt.Errorf("--kube-api-burst %d is less than --kube-api-qps %v: want a burst of at least one second's requests", burst, qps))
	}
	return errors.Join(errs...)
}

// Config is a copy of cfg with the rate limit (qps, burst) and the user agent.
func Config(cfg *rest.Config, qps float64, burst int, userAgent string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst, c.RateLimiter = float32(qps), burst, nil
	c.UserAgent = userAgent
	return c
}
