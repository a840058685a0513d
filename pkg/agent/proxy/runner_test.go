package proxy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDropManagedFields(t *testing.T) {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	out, err := DropManagedFields(s)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Service)
	if got.ManagedFields != nil || got.Name != "web" || got.Labels["a"] != "b" {
		t.Errorf("after the transform: %+v", got.ObjectMeta)
	}
	// Tombstones and other non-objects pass through untouched.
	if v, err := DropManagedFields("x"); err != nil || v != "x" {
		t.Errorf("non-object: %v %v", v, err)
	}
}
