package informer

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestKeepMeta(t *testing.T) {
	now := metav1.Now()
	full := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "u", ResourceVersion: "7", Generation: 3, CreationTimestamp: now, DeletionTimestamp: &now,
			Labels: map[string]string{"x": "1", "y": "2"}, Annotations: map[string]string{"keep": "k", "drop": "d"},
			OwnerReferences: []metav1.OwnerReference{{Name: "o"}}, Finalizers: []string{"f"}, GenerateName: "a-",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}
	}
	identity := metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "u", ResourceVersion: "7", Generation: 3, CreationTimestamp: now, DeletionTimestamp: &now}
	for _, c := range []struct {
		name        string
		keep        func(string) bool
		annotations []string
		labels      map[string]string
		ann         map[string]string
	}{
		{"all labels, no annotation", nil, nil, map[string]string{"x": "1", "y": "2"}, nil},
		{"one label, one annotation", OnlyLabel("y"), []string{"keep", "absent"}, map[string]string{"y": "2"}, map[string]string{"keep": "k"}},
		{"no label", func(string) bool { return false }, nil, nil, nil},
	} {
		m := full()
		KeepMeta(&m, c.keep, c.annotations...)
		want := identity
		want.Labels, want.Annotations = c.labels, c.ann
		if !reflect.DeepEqual(m, want) {
			t.Errorf("%s: %+v, want %+v", c.name, m, want)
		}
		again := m
		KeepMeta(&again, c.keep, c.annotations...)
		if !reflect.DeepEqual(again, m) {
			t.Errorf("%s: not idempotent: %+v then %+v", c.name, m, again)
		}
	}
}
