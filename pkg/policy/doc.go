// Package policy is Sluice's reference model of pod reachability: given namespaces, pods,
// NetworkPolicies and the cluster's isolation mode it answers "may src open a connection to
// dst:port/proto, and which rule decides". It does no I/O and is deterministic; the agent's
// compiled nftables rules, sluicectl trace / what-if and the e2e truth tables must all agree
// with it (issue 5).
//
// Use: Compile(Input) validates and builds a *Model; Model.Evaluate(Query) returns a Verdict.
//
// # Modes
//
//   - Subnet: everything is allowed; policies are ignored.
//   - Multitenant: allowed iff both pods' namespaces have the same VNID or either VNID is 0
//     (global). Policies are ignored. A pod whose namespace has no VNID is denied (fail
//     closed). Non-pod endpoints (external addresses, nodes) count as global: in OpenShift
//     SDN they enter the pod network through the node, which is VNID 0.
//   - NetworkPolicy (the default, also for Input.Mode ""): Kubernetes semantics below.
//
// In every mode a pod reaching itself is allowed (Decision Loopback): it never leaves the
// pod, and upstream's e2e suite ignores loopback for the same reason.
//
// # NetworkPolicy semantics
//
//   - A pod is isolated for ingress (egress) only when some policy in its namespace selects
//     it (spec.podSelector; empty selects all pods of the namespace) and has that type.
//   - Effective policyTypes: as listed when spec.policyTypes is set; otherwise Ingress always
//     and Egress iff spec.egress is non-empty (the API server's defaulting). Rules of a
//     direction the policy does not have are inert, exactly as in Kubernetes.
//   - A connection is allowed iff egress is allowed at the source (when the source is a pod)
//     AND ingress is allowed at the destination (when the destination is a pod). A direction
//     is allowed when the pod is not isolated for it, or any rule of any isolating policy
//     matches (union; no deny, no order). The Verdict reports the first match in a fixed
//     order (policies by namespace/name, then rule, peer and port index) so reasons are
//     stable, and, when nothing matches, every isolating policy.
//   - Rules: empty or absent from/to = every peer, pods and non-pods; empty or absent ports
//     = every port of every protocol (ICMP included: ask with Port 0).
//   - Peers: podSelector alone = pods of the policy's namespace; namespaceSelector alone =
//     all pods of matching namespaces; both in one peer = AND; several peers = OR.
//     Selectors go through metav1.LabelSelectorAsSelector (matchLabels and matchExpressions
//     In, NotIn, Exists, DoesNotExist). Selectors never match non-pod endpoints. Every
//     namespace carries kubernetes.io/metadata.name=<name>; the model adds it if the input
//     lacks it, as the API server would have.
//   - ipBlock (with except, each a strict subset of cidr) is matched against the peer's
//     address whatever it is, pod addresses included. Kubernetes leaves ipBlock on pod IPs
//     implementation-defined; we apply it because the dataplane sees real pod source and
//     destination addresses (routed veths, no SNAT inside the cluster) and upstream's e2e
//     "egress access to server in CIDR block" and "except clause" cases rely on it. A pod
//     without an IP never matches an ipBlock.
//   - Ports: protocol defaults to TCP (TCP, UDP, SCTP); numeric port, or port..endPort
//     inclusive; a named port matches when the DESTINATION pod has a containerPort with that
//     name and the same protocol whose number is the queried port, in both directions
//     (ingress: the selected pod; egress: the peer pod). A destination that is not a pod
//     never matches a named port. Ports of restartable (sidecar) init containers count.
//   - A pod is always reachable from its own node (Endpoint of kind Node whose Node equals
//     the pod's spec.nodeName): ingress policy is not consulted (Result NodeLocal), as
//     Kubernetes requires. Egress policy of a pod towards its node still applies, and a
//     node reaching a pod on another node is just an address to ingress policy (ipBlock).
//
// # Never widen
//
// Compile runs Validate on every policy and fails, listing every problem with its policy,
// field path and value (InvalidPolicyError, joined with errors.Join), on anything it cannot
// represent exactly: unknown protocols or policyTypes, bad selectors (operators, values),
// unparsable CIDRs (net/netip is stricter than the API server's legacy parser: leading-zero
// octets are refused), IPv4-mapped IPv6 CIDRs, except not a strict subset of cidr, empty
// peers, ipBlock combined with selectors, bad or out-of-range ports, endPort without a
// numeric port or below port, invalid port names. Policies are validated in every mode,
// since the mode can change live. Compile also refuses duplicate namespaces or pods and
// pods whose namespace is missing.
//
// # Not modelled
//
// hostNetwork pods (PodFromCore refuses them: model them as Node endpoints); one address
// per pod (dual-stack pods need one model per family); admin-tier policies
// (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy); EgressNetworkPolicy
// and EgressIP; Services (queries are about pod addresses after DNAT); return traffic, which
// conntrack always allows.
package policy
