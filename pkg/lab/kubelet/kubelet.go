// Package kubelet is the lab's kubelet: it registers its node, keeps it Ready
// with leases, and runs the pods bound to it the way a container runtime does
// as far as the network can tell — a network namespace per pod, CNI ADD/DEL
// through libcni with the node's own configuration, and a test server standing
// in for the containers, serving every containerPort. It reports phase, IPs,
// readiness and conditions back to the API server. Containers' images and
// commands are not run.
package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/lab/testserver"
)

// Sandboxes creates and deletes pods' network namespaces.
type Sandboxes interface {
	Create(ctx context.Context, name string) (path string, err error)
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]string, error)
}

// Containers runs the test server that stands in for a pod's containers.
type Containers interface {
	Start(rec *podRecord, ports testserver.Ports) error
	Running(rec *podRecord) bool
	Stop(rec *podRecord, grace time.Duration) error
}

// Prober checks one readiness probe target from the node.
type Prober interface {
	Probe(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error
}

// Options configure a Kubelet.
type Options struct {
	NodeName    string
	NodeIP      netip.Addr
	StateDir    string // pod records live in StateDir/pods
	NetnsPrefix string // pod namespaces are NetnsPrefix + part of the pod UID
	Client      kubernetes.Interface
	Network     Network
	Sandboxes   Sandboxes
	Containers  Containers
	Prober      Prober
	Log         klog.Logger // default: klog's global logger, which the -v flag tunes
}

// Kubelet runs the pods of one node.
type Kubelet struct {
	Options
	podDir   string
	lister   corelisters.PodLister
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder

	mu      sync.Mutex
	records map[string]*podRecord // by pod UID
	probes  map[string]*probeWorker
}

// New makes a Kubelet.
func New(o Options) *Kubelet {
	if o.Log.GetSink() == nil {
		o.Log = klog.Background()
	}
	return &Kubelet{
		Options: o,
		podDir:  filepath.Join(o.StateDir, "pods"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
		records: map[string]*podRecord{},
		probes:  map[string]*probeWorker{},
	}
}

// Run registers the node and serves until ctx ends.
func (k *Kubelet) Run(ctx context.Context) error {
	if err := os.MkdirAll(k.podDir, 0o755); err != nil {
		return err
	}
	if err := k.loadRecords(); err != nil {
		return err
	}
	eb := record.NewBroadcaster(record.WithContext(ctx))
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.Client.CoreV1().Events("")})
	defer eb.Shutdown()
	k.recorder = eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: k.NodeName})

	if err := k.registerNode(ctx); err != nil {
		return err
	}
	go wait.UntilWithContext(ctx, k.heartbeat, 10*time.Second)
	go wait.UntilWithContext(ctx, k.renewLease, 10*time.Second)

	f := informers.NewSharedInformerFactoryWithOptions(k.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.NodeName).String()
	}))
	inf := f.Core().V1().Pods()
	k.lister = inf.Lister()
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, o any) { k.enqueue(o) },
		DeleteFunc: k.enqueue,
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return errors.New("pod cache did not sync")
	}
	k.gc(ctx)
	go wait.UntilWithContext(ctx, k.watchContainers, 2*time.Second)
	defer k.queue.ShutDown()
	for range 4 {
		go wait.UntilWithContext(ctx, k.worker, time.Second)
	}
	k.Log.Info("Kubelet running", "node", k.NodeName, "ip", k.NodeIP)
	<-ctx.Done()
	return nil
}

func (k *Kubelet) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		k.queue.Add(key)
	}
}

func (k *Kubelet) worker(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		err := k.syncPod(ctx, key)
		if err != nil {
			k.Log.Error(err, "Pod sync failed; retrying", "pod", key)
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

// ContainerID derives the sandbox (infra container) ID from the pod UID.
func ContainerID(uid string) string {
	h := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(h[:])
}

func (k *Kubelet) syncPod(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return k.teardownKey(ctx, key, "")
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != k.NodeName {
		return nil
	}
	// A pod recreated under the same name has a new UID: the old one goes.
	if err := k.teardownKey(ctx, key, string(pod.UID)); err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		return k.terminate(ctx, pod)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return k.teardownUID(ctx, string(pod.UID), 0)
	}
	if pod.Spec.HostNetwork {
		return k.updateStatus(ctx, pod, []netip.Addr{k.NodeIP}, true, nil)
	}
	rec, err := k.ensureSandbox(ctx, pod)
	if err != nil {
		k.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		if uerr := k.updateStatus(ctx, pod, nil, false, err); uerr != nil {
			k.Log.Error(uerr, "Pod status update failed", "pod", key)
		}
		return err
	}
	if !k.Containers.Running(rec) {
		if rec.Started {
			rec.Restarts++
		}
		if err := k.Containers.Start(rec, PodPorts(pod)); err != nil {
			return fmt.Errorf("start test server: %w", err)
		}
		if !rec.Started {
			k.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started test server for %s on %v", name, rec.IPs)
		}
		rec.Started = true
		if err := k.saveRecord(rec); err != nil {
			return err
		}
	}
	ready := k.readiness(ctx, pod, rec)
	return k.updateStatus(ctx, pod, rec.IPs, ready, nil)
}

// ensureSandbox creates the pod's namespace and attaches it to the network,
// or returns the record of one that exists.
func (k *Kubelet) ensureSandbox(ctx context.Context, pod *corev1.Pod) (*podRecord, error) {
	uid := string(pod.UID)
	k.mu.Lock()
	rec := k.records[uid]
	k.mu.Unlock()
	if rec != nil && rec.Attached {
		return rec, nil
	}
	if rec == nil {
		nsName := k.NetnsPrefix + uid[:8]
		rec = &podRecord{Sandbox: Sandbox{
			ContainerID: ContainerID(uid),
			Netns:       nsName,
			Namespace:   pod.Namespace,
			Name:        pod.Name,
			UID:         uid,
		}}
		// Written before anything is created: after a crash, gc finds it.
		if err := k.saveRecord(rec); err != nil {
			return nil, err
		}
	}
	path, err := k.Sandboxes.Create(ctx, rec.Netns)
	if err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", rec.Netns, err)
	}
	rec.NetnsPath = path
	ips, err := k.Network.Add(ctx, rec.Sandbox)
	if err != nil {
		// Like a container runtime: a sandbox that failed to attach is torn
		// down completely and created afresh on the next attempt.
		if derr := k.teardownUID(ctx, uid, 0); derr != nil {
			k.Log.Error(derr, "Could not tear the sandbox down after a failed CNI ADD", "pod", rec.key())
		}
		return nil, err
	}
	rec.IPs, rec.Attached = ips, true
	if err := k.saveRecord(rec); err != nil {
		return nil, err
	}
	k.Log.Info("Pod attached", "pod", rec.key(), "netns", rec.Netns, "ips", ips)
	return rec, nil
}

// terminate stops a pod being deleted, within its grace period, and then
// removes the API object, as the kubelet does once containers are gone.
func (k *Kubelet) terminate(ctx context.Context, pod *corev1.Pod) error {
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if err := k.teardownUID(ctx, string(pod.UID), grace); err != nil {
		return err
	}
	k.stopProbe(string(pod.UID))
	zero := int64(0)
	uid := pod.UID
	err := k.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// teardownKey tears down every sandbox recorded for key whose UID is not keep.
func (k *Kubelet) teardownKey(ctx context.Context, key, keep string) error {
	k.mu.Lock()
	var uids []string
	for uid, r := range k.records {
		if r.key() == key && uid != keep {
			uids = append(uids, uid)
		}
	}
	k.mu.Unlock()
	var errs []error
	for _, uid := range uids {
		errs = append(errs, k.teardownUID(ctx, uid, 0))
	}
	return errors.Join(errs...)
}

// teardownUID stops the test server, detaches the sandbox (CNI DEL), deletes
// the namespace and forgets the record, in that order; a failure leaves the
// record so that the next attempt repeats the remaining steps.
func (k *Kubelet) teardownUID(ctx context.Context, uid string, grace time.Duration) error {
	k.mu.Lock()
	rec := k.records[uid]
	k.mu.Unlock()
	if rec == nil {
		return nil
	}
	k.stopProbe(uid)
	if err := k.Containers.Stop(rec, grace); err != nil {
		return fmt.Errorf("stop test server of %s: %w", rec.key(), err)
	}
	if rec.NetnsPath == "" {
		rec.NetnsPath = netnsPath(rec.Netns)
	}
	if err := k.Network.Del(ctx, rec.Sandbox); err != nil {
		return fmt.Errorf("detach %s: %w", rec.key(), err)
	}
	if err := k.Sandboxes.Delete(ctx, rec.Netns); err != nil {
		return fmt.Errorf("delete network namespace of %s: %w", rec.key(), err)
	}
	if err := removeRecord(k.podDir, uid); err != nil {
		return err
	}
	k.mu.Lock()
	delete(k.records, uid)
	k.mu.Unlock()
	k.Log.Info("Pod torn down", "pod", rec.key(), "uid", uid)
	return nil
}

func netnsPath(name string) string { return filepath.Join("/var/run/netns", name) }

// gc removes what no pod owns any more: records of pods that are gone (the
// kubelet was down while they were deleted) and namespaces with this node's
// prefix that no record knows; then it tells CNI which attachments are valid.
func (k *Kubelet) gc(ctx context.Context) {
	pods, _ := k.lister.List(everything)
	live := map[string]bool{}
	for _, p := range pods {
		live[string(p.UID)] = true
	}
	k.mu.Lock()
	var stale []string
	for uid := range k.records {
		if !live[uid] {
			stale = append(stale, uid)
		}
	}
	k.mu.Unlock()
	for _, uid := range stale {
		if err := k.teardownUID(ctx, uid, 0); err != nil {
			k.Log.Error(err, "Garbage collection: pod teardown failed", "uid", uid)
		}
	}
	names, err := k.Sandboxes.List(ctx)
	if err == nil {
		known := map[string]bool{}
		k.mu.Lock()
		for _, r := range k.records {
			known[r.Netns] = true
		}
		k.mu.Unlock()
		for _, n := range names {
			if strings.HasPrefix(n, k.NetnsPrefix) && !known[n] {
				k.Log.Info("Garbage collection: deleting an orphaned network namespace", "netns", n)
				k.Sandboxes.Delete(ctx, n)
			}
		}
	}
	var valid []Sandbox
	k.mu.Lock()
	for _, r := range k.records {
		if r.Attached {
			valid = append(valid, r.Sandbox)
		}
	}
	k.mu.Unlock()
	if err := k.Network.GC(ctx, valid); err != nil {
		k.Log.Error(err, "CNI GC failed")
	}
}

// watchContainers requeues pods whose test server died, so it is restarted.
func (k *Kubelet) watchContainers(ctx context.Context) {
	k.mu.Lock()
	var keys []string
	for _, r := range k.records {
		if r.Started && !k.Containers.Running(r) {
			keys = append(keys, r.key())
		}
	}
	k.mu.Unlock()
	for _, key := range keys {
		k.queue.Add(key)
	}
}

func (k *Kubelet) loadRecords() error {
	ents, err := os.ReadDir(k.podDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(k.podDir, e.Name()))
		if err != nil {
			return err
		}
		var r podRecord
		if err := json.Unmarshal(b, &r); err != nil {
			k.Log.Error(err, "Ignoring an unreadable pod record", "file", e.Name())
			continue
		}
		k.records[r.UID] = &r
	}
	return nil
}

func (k *Kubelet) saveRecord(r *podRecord) error {
	k.mu.Lock()
	k.records[r.UID] = r
	k.mu.Unlock()
	b, _ := json.MarshalIndent(r, "", "  ")
	p := recordPath(k.podDir, r.UID)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// PodPorts collects the containerPorts of every container by protocol.
func PodPorts(pod *corev1.Pod) testserver.Ports {
	var p testserver.Ports
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			proto := cp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			k := string(proto) + strconv.Itoa(int(cp.ContainerPort))
			if seen[k] {
				continue
			}
			seen[k] = true
			switch proto {
			case corev1.ProtocolTCP:
				p.TCP = append(p.TCP, int(cp.ContainerPort))
			case corev1.ProtocolUDP:
				p.UDP = append(p.UDP, int(cp.ContainerPort))
			case corev1.ProtocolSCTP:
				p.SCTP = append(p.SCTP, int(cp.ContainerPort))
			}
		}
	}
	return p
}

// updateStatus writes the pod's status: Running with its IPs when ips is set,
// Pending with the sandbox error otherwise.
func (k *Kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, ips []netip.Addr, ready bool, sandboxErr error) error {
	st := pod.Status.DeepCopy()
	now := metav1.Now()
	st.HostIP = k.NodeIP.String()
	st.HostIPs = []corev1.HostIP{{IP: k.NodeIP.String()}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	running := sandboxErr == nil && len(ips) > 0
	if running {
		st.Phase = corev1.PodRunning
		st.PodIP = ips[0].String()
		st.PodIPs = nil
		for _, ip := range ips {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		st.Message, st.Reason = "", ""
	} else {
		st.Phase = corev1.PodPending
	}
	sandboxMsg, sandboxReason := "", ""
	if sandboxErr != nil {
		sandboxMsg, sandboxReason = sandboxErr.Error(), "FailedCreatePodSandBox"
	}
	setCondition(st, corev1.PodReadyToStartContainers, running, sandboxReason, sandboxMsg, now)
	setCondition(st, corev1.PodInitialized, true, "", "", now)
	notReady := ""
	if running && !ready {
		notReady = "ReadinessProbeFailed"
	} else if !running {
		notReady = "ContainersNotReady"
	}
	setCondition(st, corev1.ContainersReady, running && ready, notReady, "", now)
	setCondition(st, corev1.PodReady, running && ready, notReady, "", now)
	var restarts int32
	k.mu.Lock()
	if r := k.records[string(pod.UID)]; r != nil {
		restarts = r.Restarts
	}
	k.mu.Unlock()
	var cs []corev1.ContainerStatus
	for _, c := range pod.Spec.Containers {
		s := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: running && ready, RestartCount: restarts}
		started := running
		s.Started = &started
		if running {
			s.ContainerID = "sluice-lab://" + ContainerID(string(pod.UID))[:16]
			s.State.Running = &corev1.ContainerStateRunning{StartedAt: *st.StartTime}
			for _, old := range pod.Status.ContainerStatuses {
				if old.Name == c.Name && old.State.Running != nil {
					s.State.Running.StartedAt = old.State.Running.StartedAt
				}
			}
		} else {
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		cs = append(cs, s)
	}
	st.ContainerStatuses = cs
	if apiequality.Semantic.DeepEqual(st, &pod.Status) {
		return nil
	}
	p := pod.DeepCopy()
	p.Status = *st
	_, err := k.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason, msg string, now metav1.Time) {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != s {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = s, reason, msg
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: now})
}
