// Package informer holds the two things every Sluice component does with
// client-go informer events: unwrap the object of an event (a delete may
// deliver a tombstone) and turn any change into a call of one function.
package informer

import "k8s.io/client-go/tools/cache"

// Object is the object of an informer event as a T, unwrapping the
// tombstone a delete handler may get instead.
func Object[T any](obj any) (T, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	t, ok := obj.(T)
	return t, ok
}

// OnChange calls fn with the object of every add, update (the new object)
// and delete (unwrapped from its tombstone).
func OnChange(fn func(obj any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    fn,
		UpdateFunc: func(_, obj any) { fn(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			fn(obj)
		},
	}
}

// Kick calls fn on every add, update and delete, whatever the object.
func Kick(fn func()) cache.ResourceEventHandlerFuncs {
	return OnChange(func(any) { fn() })
}
