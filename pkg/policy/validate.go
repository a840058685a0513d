package policy

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// InvalidPolicyError is returned (joined, one per policy) by Compile for a policy the model
// cannot represent exactly.
type InvalidPolicyError struct {
	Policy string // namespace/name
	Errs   field.ErrorList
}

func (e *InvalidPolicyError) Error() string {
	return fmt.Sprintf("networkpolicy %s: %v", e.Policy, e.Errs.ToAggregate())
}

// Validate lists everything in np the model cannot represent exactly, with field paths and
// values. It mirrors the API server's validation (an object that passed it validates here)
// and is never looser: anything it does not understand is an error, never ignored, so the
// model is either exact or refuses.
func Validate(np *networkingv1.NetworkPolicy) field.ErrorList {
	var errs field.ErrorList
	if np.Namespace == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "namespace"), "a NetworkPolicy is namespaced"))
	}
	spec := field.NewPath("spec")
	errs = append(errs, validateSelector(&np.Spec.PodSelector, spec.Child("podSelector"))...)
	for i, r := range np.Spec.Ingress {
		p := spec.Child("ingress").Index(i)
		errs = append(errs, validatePorts(r.Ports, p.Child("ports"))...)
		for j := range r.From {
			errs = append(errs, validatePeer(&r.From[j], p.Child("from").Index(j))...)
		}
	}
	for i, r := range np.Spec.Egress {
		p := spec.Child("egress").Index(i)
		errs = append(errs, validatePorts(r.Ports, p.Child("ports"))...)
		for j := range r.To {
			errs = append(errs, validatePeer(&r.To[j], p.Child("to").Index(j))...)
		}
	}
	if len(np.Spec.PolicyTypes) > 2 {
		errs = append(errs, field.Invalid(spec.Child("policyTypes"), np.Spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	for i, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, []string{string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)}))
		}
	}
	return errs
}

// validateSelector checks each matchLabels entry and matchExpressions requirement on its
// own, so the error names the exact field.
func validateSelector(ls *metav1.LabelSelector, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic error order
	for _, k := range keys {
		v := ls.MatchLabels[k]
		if _, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: map[string]string{k: v}}); err != nil {
			errs = append(errs, field.Invalid(path.Child("matchLabels").Key(k), v, err.Error()))
		}
	}
	for i, req := range ls.MatchExpressions {
		if _, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req}}); err != nil {
			errs = append(errs, field.Invalid(path.Child("matchExpressions").Index(i), req, err.Error()))
		}
	}
	if len(errs) == 0 {
		// Belt and braces: the whole selector must convert too.
		if _, err := metav1.LabelSelectorAsSelector(ls); err != nil {
			errs = append(errs, field.Invalid(path, ls, err.Error()))
		}
	}
	return errs
}

func validatePorts(ports []networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, p := range ports {
		pp := path.Index(i)
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				errs = append(errs, field.NotSupported(pp.Child("protocol"), *p.Protocol, []string{"TCP", "UDP", "SCTP"}))
			}
		}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, "may not be specified when `port` is not specified"))
			}
		case p.Port.Type == intstr.Int:
			for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
				errs = append(errs, field.Invalid(pp.Child("port"), p.Port.IntVal, msg))
			}
			if p.EndPort != nil {
				if *p.EndPort < p.Port.IntVal {
					errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, "must be greater than or equal to `port`"))
				}
				for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
					errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, msg))
				}
			}
		case p.Port.Type == intstr.String:
			if p.EndPort != nil {
				errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, "may not be specified when `port` is non-numeric"))
			}
			for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("port"), p.Port.StrVal, msg))
			}
		default:
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port.String(), "unknown IntOrString type"))
		}
	}
	return errs
}

func validatePeer(peer *networkingv1.NetworkPolicyPeer, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if peer.PodSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.PodSelector, path.Child("podSelector"))...)
	}
	if peer.NamespaceSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.NamespaceSelector, path.Child("namespaceSelector"))...)
	}
	if peer.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(peer.IPBlock, path.Child("ipBlock"))...)
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a peer"))
	case n > 1 && peer.IPBlock != nil:
		errs = append(errs, field.Forbidden(path, "may not specify both ipBlock and another peer"))
	}
	return errs
}

// validateIPBlock parses with net/netip, which refuses some legacy spellings the API server
// still accepts (leading zeros in IPv4 octets): refusing is the safe side of "never widen".
func validateIPBlock(b *networkingv1.IPBlock, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return append(errs, field.Invalid(path.Child("cidr"), b.CIDR, err.Error()))
	}
	if cidr.Addr().Is4In6() {
		errs = append(errs, field.Invalid(path.Child("cidr"), b.CIDR, "IPv4-mapped IPv6 prefixes are not supported"))
	}
	cidr = cidr.Masked()
	for i, e := range b.Except {
		ep := path.Child("except").Index(i)
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			errs = append(errs, field.Invalid(ep, e, err.Error()))
			continue
		}
		if ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()) {
			errs = append(errs, field.Invalid(ep, e, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}
