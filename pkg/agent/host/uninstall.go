package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/link"
)

// OwnerWatch follows the DaemonSet an agent runs in, to tell an uninstall from a restart
// when the agent is stopped. A rolling update or a restart leaves the DaemonSet in place and
// the node's network must keep working until the next agent takes over; `helm uninstall` or
// `kubectl delete` deletes the DaemonSet first (the garbage collector then deletes its pods),
// and the agent then removes what it installed. The watch sees the deletion before the pod
// is told to stop; anything uncertain (no answer, no permission) counts as "not deleted":
// leaving the node's rules in place never opens what policy isolates.
type OwnerWatch struct {
	Namespace, Name string
	deleted         atomic.Bool
	synced          cache.InformerSynced
	kube            kubernetes.Interface
}

// WatchOwner starts watching the DaemonSet namespace/name until ctx ends.
func WatchOwner(ctx context.Context, kube kubernetes.Interface, namespace, name string) *OwnerWatch {
	w := &OwnerWatch{Namespace: namespace, Name: name, kube: kube}
	f := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(namespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := f.Apps().V1().DaemonSets().Informer()
	note := func(obj any) {
		if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.DeletionTimestamp != nil {
			w.deleted.Store(true)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    note,
		UpdateFunc: func(_, obj any) { note(obj) },
		DeleteFunc: func(any) { w.deleted.Store(true) },
	})
	w.synced = inf.HasSynced
	f.Start(ctx.Done())
	return w
}

// Deleted reports whether the DaemonSet is known to be deleted or being deleted. If the
// watch has not seen it go, one list confirms (the stop may have raced the event); an error
// answers false.
func (w *OwnerWatch) Deleted(ctx context.Context) bool {
	if w.deleted.Load() {
		return true
	}
	if !w.synced() {
		return false // never saw the DaemonSet's state: assume it is there
	}
	l, err := w.kube.AppsV1().DaemonSets(w.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", w.Name).String()})
	if err != nil {
		return false
	}
	return len(l.Items) == 0 || l.Items[0].DeletionTimestamp != nil
}

// Uninstall removes what the agent installed on its node: the CNI configuration first (so
// the runtime starts no new pod on a network that is going away) and the plugin, the
// nftables table, the overlay device and the direct routes on underlay (""
// when unknown), the CNI socket and the IPAM state. Pods still on the node lose their
// network; their interfaces go with them.
func Uninstall(ctx context.Context, p Paths, nft dataplane.Backend, underlay string, log logr.Logger) error {
	var errs []error
	rm := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	rm(filepath.Join(p.CNIConfDir, ConflistName))
	rm(filepath.Join(p.CNIBinDir, PluginName))
	// Adding before deleting makes the delete succeed whether or not the table exists.
	tx := nft.NewBatch()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := tx.Run(ctx); err != nil {
		errs = append(errs, fmt.Errorf("delete table inet %s: %w", dataplane.Table, err))
	}
	if err := link.RemoveOverlay(); err != nil {
		errs = append(errs, fmt.Errorf("delete %s: %w", link.VXLANDevice, err))
	}
	if underlay != "" {
		if err := link.SyncDirectRoutes(underlay, nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("direct routes: %w", err))
		}
	}
	rm(p.CNISocket)
	if err := os.RemoveAll(filepath.Join(p.StateDir, "ipam")); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err == nil {
		log.Info("Uninstalled: removed the CNI configuration and plugin, the nftables table, the overlay and the node's IPAM state")
	}
	return err
}
