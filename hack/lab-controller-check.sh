#!/usr/bin/env bash
# Checks the CRDs and sluice-controller against a real API server: a running sluice-lab
# started with --pod-network none (so that the lab runs no controller of its own).
#
#   sluice-lab up --state-dir /tmp/ctl-lab --api-port 26443 --pod-network none
#   hack/lab-controller-check.sh /tmp/ctl-lab [path/to/sluice-lab] [path/to/sluice-controller]
#   sluice-lab down --state-dir /tmp/ctl-lab
#
# It applies the CRDs (deploy/helm/sluice/crds), checks that bad ClusterNetworks are rejected with
# the expected messages, applies a ClusterNetwork, runs two sluice-controller replicas on the
# host with the lab's kubeconfig, and checks one leader, a HostSubnet per node, the status,
# a failover that keeps every allocation, and that a deleted node's subnet is freed.
set -o errexit -o nounset -o pipefail

STATE="${1:?usage: $0 STATE_DIR [SLUICE_LAB] [SLUICE_CONTROLLER]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LAB="${2:-${ROOT}/bin/sluice-lab}"
CTL="${3:-${ROOT}/bin/sluice-controller}"
K() { "${LAB}" --state-dir "${STATE}" kubectl -- "$@"; }
WORK="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "${p}" 2>/dev/null || true; done
	rm -rf "${WORK}"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

K apply --server-side -f "${ROOT}/deploy/helm/sluice/crds"
K wait --for=condition=Established --timeout=60s -f "${ROOT}/deploy/helm/sluice/crds"

cn() { printf 'apiVersion: sluice.dev/v1alpha1\nkind: ClusterNetwork\nmetadata: {name: %s}\nspec:\n%s\n' "$1" "$2"; }
reject() { # name spec want
	local out
	if out="$(cn "$1" "$2" | K apply --server-side -f - 2>&1)"; then
		fail "accepted: $2"
	fi
	[[ "${out}" == *"$3"* ]] || fail "rejected without \"$3\": ${out}"
	echo "rejected as expected: ${out}"
}
ok='  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}]
  serviceNetwork: 172.30.0.0/16'
reject other "${ok}" 'metadata.name: Unsupported value: "other": supported values: "default"'
reject default '  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}, {cidr: 10.128.0.0/15, hostSubnetLength: 9}]
  serviceNetwork: 172.30.0.0/16' 'spec.clusterNetworks[1].cidr 10.128.0.0/15 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14'
reject default '  clusterNetworks: [{cidr: 10.128.0.0/33, hostSubnetLength: 9}]
  serviceNetwork: 172.30.0.0/16' 'spec.clusterNetworks[0].cidr: Invalid value: "10.128.0.0/33": cidr is not a valid CIDR'
reject default '  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 23}]
  serviceNetwork: 172.30.0.0/16' 'hostSubnetLength 23 leaves no host subnet in 10.128.0.0/14, which has 18 host bits'
reject default '  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 1}]
  serviceNetwork: 172.30.0.0/16' 'hostSubnetLength leaves no pod address'
reject default '  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}]
  serviceNetwork: 10.130.0.0/16' 'spec.serviceNetwork 10.130.0.0/16 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14'
reject default "${ok}
  mode: Flat" 'spec.mode: Unsupported value: "Flat"'
reject default "${ok}
  vxlanPort: 0" 'spec.vxlanPort: Invalid value: 0'
reject default "${ok}
  mtu: 100000" 'spec.mtu: Invalid value: 100000'
cn default "${ok}" | K apply --server-side -f -

for i in 1 2; do
	setsid "${CTL}" --kubeconfig="${STATE}/kubeconfig" --id="check-${i}" >"${WORK}/ctl-${i}.log" 2>&1 </dev/null &
	pids+=("$!")
done

nodes="$(K get nodes -o jsonpath='{.items[*].metadata.name}')"
want="$(wc -w <<<"${nodes}")"
for _ in $(seq 60); do
	got="$(K get hostsubnets --no-headers 2>/dev/null | wc -l)"
	[[ "${got}" -ge "${want}" ]] && break
	sleep 1
done
K get hostsubnets
[[ "${got}" -eq "${want}" ]] || fail "${got} HostSubnets for ${want} nodes"
dups="$(K get hostsubnets -o jsonpath='{range .items[*]}{.spec.subnet}{"\n"}{end}' | sort | uniq -d)"
[[ -z "${dups}" ]] || fail "subnets held twice: ${dups}"
leader="$(K -n kube-system get lease sluice-controller -o jsonpath='{.spec.holderIdentity}')"
echo "leader: ${leader}"
[[ "${leader}" == check-1 || "${leader}" == check-2 ]] || fail "leader ${leader}"
K get clusternetwork default
[[ "$(K get clusternetwork default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] || fail "not Ready"

before="$(K get hostsubnets -o jsonpath='{range .items[*]}{.metadata.name}={.spec.subnet} {end}')"
i="${leader#check-}"
kill -TERM "${pids[$((i - 1))]}"
for _ in $(seq 30); do
	now="$(K -n kube-system get lease sluice-controller -o jsonpath='{.spec.holderIdentity}')"
	[[ "${now}" != "${leader}" && -n "${now}" ]] && break
	sleep 1
done
echo "leader after SIGTERM to ${leader}: ${now}"
[[ "${now}" != "${leader}" ]] || fail "no failover"
sleep 2
after="$(K get hostsubnets -o jsonpath='{range .items[*]}{.metadata.name}={.spec.subnet} {end}')"
[[ "${before}" == "${after}" ]] || fail "allocations changed on failover: ${before} -> ${after}"

printf 'apiVersion: v1\nkind: Node\nmetadata: {name: check-node}\n' | K create -f - >/dev/null
K patch node check-node --subresource=status --type=merge -p '{"status":{"addresses":[{"type":"InternalIP","address":"172.28.0.250"}]}}' >/dev/null
for _ in $(seq 30); do K get hostsubnet check-node >/dev/null 2>&1 && break; sleep 1; done
K get hostsubnet check-node
K delete node check-node >/dev/null
for _ in $(seq 30); do K get hostsubnet check-node >/dev/null 2>&1 || break; sleep 1; done
! K get hostsubnet check-node >/dev/null 2>&1 || fail "HostSubnet of a deleted node is still there"
echo "PASS: CRD validation, allocation, one leader, failover, freeing"
