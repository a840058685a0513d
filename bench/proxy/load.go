// This file holds the workload: the filler Services and EndpointSlices
// every proxy programs at each size.

package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/bench/internal/labrun"
)

// load creates filler Services (no selector, port 80 → 8080) with one
// EndpointSlice each of --endpoints fake addresses, until there are n.
func (b *bench) load(n int) error {
	if b.services >= n {
		return nil
	}
	logf("creating Services %d … %d (%d endpoints each)", b.services, n-1, *endpointsF)
	start := time.Now()
	if err := labrun.Parallel(b.ctx, *workersF, b.services, n, func(i int) error {
		if err := b.createFiller(i); err != nil {
			return err
		}
		if (i+1)%2000 == 0 {
			logf("  %d Services (%.0f/s)", i+1, float64(i+1-b.services)/time.Since(start).Seconds())
		}
		return nil
	}); err != nil {
		return err
	}
	logf("created %d Services and slices in %s", n-b.services, time.Since(start).Round(time.Second))
	b.services = n
	return nil
}

func (b *bench) createFiller(i int) error {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	base := netip.MustParseAddr("10.160.0.0").As4()
	var addrs []netip.Addr
	for j := range *endpointsF {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i**endpointsF+j+1)
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
	}
	es := sliceFor(name, 8080, addrs)
	return retry(b.ctx, func() error {
		_, err := b.cs.CoreV1().Services(namespace).Create(b.ctx, svc, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}, func() error {
		_, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Create(b.ctx, es, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func retry(ctx context.Context, fns ...func() error) error {
	for _, fn := range fns {
		var err error
		for attempt := range 10 {
			if err = fn(); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
