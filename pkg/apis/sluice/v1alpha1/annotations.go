package v1alpha1

// Annotations of a NetNamespace. They are part of the API: sluicectl and operators (kubectl
// annotate) write the request, sluice-controller answers and keeps its own record. Their
// values are described in docs/multitenant.md.
const (
	// AnnotationMultitenantChange asks sluice-controller to change the NetNamespace's netID.
	// Its value is MultitenantChangeGlobal, MultitenantChangeIsolate, or
	// MultitenantChangeJoinPrefix followed by the namespace to join ("join:frontend"). The
	// controller removes it in the same update that applies the change, or sets
	// AnnotationMultitenantChangeError instead when the change cannot be made.
	AnnotationMultitenantChange = "sluice.dev/multitenant-change"
	// AnnotationMultitenantChangeError is the controller's answer to a change it could not
	// make: what was asked and why not. A new request should remove it.
	AnnotationMultitenantChangeError = "sluice.dev/multitenant-change-error"
	// AnnotationAllocatedNetID records, in decimal, a netID the controller handed out as
	// unique (on creation or isolation). While spec.netID equals it, the namespace is meant to
	// be alone on its VNID, so another NetNamespace that holds it too is a duplicate to
	// settle. When they differ, spec.netID was set on purpose (a join, or an operator's edit)
	// and sharing it is intended.
	AnnotationAllocatedNetID = "sluice.dev/allocated-netid"
)

// Values of AnnotationMultitenantChange.
const (
	MultitenantChangeGlobal     = "global"
	MultitenantChangeIsolate    = "isolate"
	MultitenantChangeJoinPrefix = "join:"
)
