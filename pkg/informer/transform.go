package informer

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// KeepMeta trims an object's metadata for an informer cache (a transform,
// cache.TransformFunc, calls it): it keeps the identity the cache and the
// reflector use (name, namespace, UID, resourceVersion, generation,
// creation and deletion timestamps), the labels keepLabel accepts (nil:
// all of them) and the annotations named; owner references, finalizers,
// managedFields and every other annotation go. Applied twice it changes
// nothing more.
func KeepMeta(m *metav1.ObjectMeta, keepLabel func(string) bool, annotations ...string) {
	kept := metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		Labels: m.Labels,
	}
	if keepLabel != nil {
		kept.Labels = nil
		for k, v := range m.Labels {
			if keepLabel(k) {
				if kept.Labels == nil {
					kept.Labels = map[string]string{}
				}
				kept.Labels[k] = v
			}
		}
	}
	for _, k := range annotations {
		if v, ok := m.Annotations[k]; ok {
			if kept.Annotations == nil {
				kept.Annotations = map[string]string{}
			}
			kept.Annotations[k] = v
		}
	}
	*m = kept
}

// OnlyLabel accepts the label key.
func OnlyLabel(key string) func(string) bool {
	return func(k string) bool { return k == key }
}
