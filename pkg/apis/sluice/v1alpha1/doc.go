// Package v1alpha1 holds Sluice's custom resources (group sluice.dev).
//
// +k8s:deepcopy-gen=package
// +groupName=sluice.dev
package v1alpha1
