package informer

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestObjectUnwrapsTombstones(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	for _, obj := range []any{pod, cache.DeletedFinalStateUnknown{Key: "a", Obj: pod}} {
		got, ok := Object[*corev1.Pod](obj)
		if !ok || got != pod {
			t.Errorf("Object(%T) = %v, %v; want the pod", obj, got, ok)
		}
	}
	if _, ok := Object[*corev1.Node](pod); ok {
		t.Error("Object[*Node](pod) reported a node")
	}
}

func TestOnChangeSeesEveryEvent(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	var got []any
	h := OnChange(func(obj any) { got = append(got, obj) })
	h.OnAdd(pod, false)
	h.OnUpdate(nil, pod)
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "a", Obj: pod})
	if len(got) != 3 {
		t.Fatalf("got %d calls, want 3", len(got))
	}
	for i, obj := range got {
		if obj != pod {
			t.Errorf("call %d got %T, want the pod", i, obj)
		}
	}
}
