package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TCPProber is the real Prober: a TCP connection from the node (the kubelet's
// own namespace) to the pod, as the kubelet's tcpSocket probe makes. httpGet
// and grpc probes are checked the same way, at the TCP level: the lab's test
// server answers with its line, not with HTTP or gRPC.
type TCPProber struct{}

func (TCPProber) Probe(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	return c.Close()
}

// probeWorker runs one pod's readiness probe.
type probeWorker struct {
	cancel context.CancelFunc
	ready  bool
}

// readiness returns whether the pod is ready, starting its probe worker the
// first time. A pod without a readiness probe is ready once running.
func (k *Kubelet) readiness(ctx context.Context, pod *corev1.Pod, rec *podRecord) bool {
	probe, port, err := readinessTarget(pod)
	if probe == nil {
		return true
	}
	uid := string(pod.UID)
	k.mu.Lock()
	defer k.mu.Unlock()
	if w := k.probes[uid]; w != nil {
		return w.ready
	}
	if err != nil {
		// Fail closed: a probe the lab cannot run never reports ready.
		k.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "Readiness probe cannot run in the lab: %v", err)
		k.probes[uid] = &probeWorker{cancel: func() {}}
		return false
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &probeWorker{cancel: cancel}
	k.probes[uid] = w
	go k.runProbe(pctx, w, pod.DeepCopy(), netip.AddrPortFrom(rec.IPs[0], uint16(port)), probe)
	return false
}

func (k *Kubelet) stopProbe(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if w := k.probes[uid]; w != nil {
		w.cancel()
		delete(k.probes, uid)
	}
}

func (k *Kubelet) runProbe(ctx context.Context, w *probeWorker, pod *corev1.Pod, addr netip.AddrPort, p *corev1.Probe) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	success, failure := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	key := pod.Namespace + "/" + pod.Name
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	var ok, bad int32
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		err := k.Prober.Probe(ctx, addr, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			ok, bad = ok+1, 0
		} else {
			ok, bad = 0, bad+1
		}
		k.mu.Lock()
		changed := false
		if !w.ready && ok >= success {
			w.ready, changed = true, true
		} else if w.ready && bad >= failure {
			w.ready, changed = false, true
		}
		k.mu.Unlock()
		if changed {
			if err != nil {
				k.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: %v", err)
			}
			k.queue.Add(key)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readinessTarget finds the pod's readiness probe and the port it checks.
func readinessTarget(pod *corev1.Pod) (*corev1.Probe, int, error) {
	for _, c := range pod.Spec.Containers {
		p := c.ReadinessProbe
		if p == nil {
			continue
		}
		var port intstr.IntOrString
		switch {
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
		case p.GRPC != nil:
			port = intstr.FromInt32(p.GRPC.Port)
		default:
			return p, 0, fmt.Errorf("container %q: only tcpSocket, httpGet and grpc readiness probes are supported", c.Name)
		}
		if port.Type == intstr.Int {
			return p, port.IntValue(), nil
		}
		for _, cp := range c.Ports {
			if cp.Name == port.StrVal {
				return p, int(cp.ContainerPort), nil
			}
		}
		return p, 0, fmt.Errorf("container %q: readiness probe port %q is not a named containerPort", c.Name, port.StrVal)
	}
	return nil, 0, nil
}
