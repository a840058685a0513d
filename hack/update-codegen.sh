#!/usr/bin/env bash
# Regenerates the deep-copy functions of pkg/apis and the typed clientset, listers and
# informers under pkg/client with k8s.io/code-generator at the version of client-go in go.mod.
# The generators are installed into a throw-away GOBIN, so go.mod is never touched.
#
#   hack/update-codegen.sh            regenerate in place
#   hack/update-codegen.sh --verify   regenerate into a temporary copy and fail on any diff
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "${ROOT}"

MODULE="github.com/sluice-net/sluice"
CODEGEN_VERSION="${CODEGEN_VERSION:-$(go list -m -f '{{.Version}}' k8s.io/client-go)}"
APIS_PKG="${MODULE}/pkg/apis"
CLIENT_PKG="${MODULE}/pkg/client"
GROUP_VERSIONS=(sluice/v1alpha1)
HEADER="${ROOT}/hack/boilerplate.go.txt"

verify=false
if [[ "${1:-}" == "--verify" ]]; then
	verify=true
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

echo "installing k8s.io/code-generator ${CODEGEN_VERSION} generators"
GOBIN="${TMP}/bin" go install \
	"k8s.io/code-generator/cmd/deepcopy-gen@${CODEGEN_VERSION}" \
	"k8s.io/code-generator/cmd/client-gen@${CODEGEN_VERSION}" \
	"k8s.io/code-generator/cmd/lister-gen@${CODEGEN_VERSION}" \
	"k8s.io/code-generator/cmd/informer-gen@${CODEGEN_VERSION}"

# With --verify, generate into a copy of the tree and compare.
OUT="${ROOT}"
if ${verify}; then
	OUT="${TMP}/tree"
	mkdir -p "${OUT}"
	cp -a "${ROOT}/go.mod" "${ROOT}/go.sum" "${ROOT}/pkg" "${OUT}/"
	cd "${OUT}"
fi

input_pkgs=()
input_dirs=()
for gv in "${GROUP_VERSIONS[@]}"; do
	input_pkgs+=("${APIS_PKG}/${gv}")
	input_dirs+=("./pkg/apis/${gv}")
done

echo "deepcopy-gen"
rm -f pkg/apis/*/*/zz_generated.deepcopy.go
"${TMP}/bin/deepcopy-gen" \
	--go-header-file "${HEADER}" \
	--output-file zz_generated.deepcopy.go \
	"${input_dirs[@]}"

rm -rf pkg/client/clientset pkg/client/listers pkg/client/informers

echo "client-gen"
"${TMP}/bin/client-gen" \
	--go-header-file "${HEADER}" \
	--clientset-name versioned \
	--input-base "${APIS_PKG}" \
	--input "$(IFS=,; echo "${GROUP_VERSIONS[*]}")" \
	--output-dir pkg/client/clientset \
	--output-pkg "${CLIENT_PKG}/clientset"

echo "lister-gen"
"${TMP}/bin/lister-gen" \
	--go-header-file "${HEADER}" \
	--output-dir pkg/client/listers \
	--output-pkg "${CLIENT_PKG}/listers" \
	"${input_dirs[@]}"

echo "informer-gen"
"${TMP}/bin/informer-gen" \
	--go-header-file "${HEADER}" \
	--versioned-clientset-package "${CLIENT_PKG}/clientset/versioned" \
	--listers-package "${CLIENT_PKG}/listers" \
	--output-dir pkg/client/informers \
	--output-pkg "${CLIENT_PKG}/informers" \
	"${input_dirs[@]}"

if ${verify}; then
	status=0
	diff -ru "${ROOT}/pkg/apis" "${OUT}/pkg/apis" || status=1
	diff -ru "${ROOT}/pkg/client" "${OUT}/pkg/client" || status=1
	if [[ ${status} -ne 0 ]]; then
		echo "generated code is out of date: run hack/update-codegen.sh" >&2
		exit 1
	fi
	echo "generated code is up to date"
fi
