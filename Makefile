# Sluice. `make lab` starts the lab; `make test` runs every test tier.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := $(CURDIR)/bin
LAB     := $(BIN)/sluice-lab

.PHONY: all build deps lab lab-down test unit integration e2e kube-binaries need-root bench bench-podnet bench-netpol bench-proxy clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Debian packages the lab and the root test tiers use.
deps: need-root
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	command -v iperf3 >/dev/null 2>&1 || missing="$$missing iperf3"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi

need-root:
	@[ "$$(id -u)" = 0 ] || { echo "this target needs root (network namespaces): run it with sudo" >&2; exit 2; }

# Builds (once, cached outside the repo) etcd and the Kubernetes binaries.
kube-binaries: build
	$(LAB) build

lab: deps kube-binaries
	install -m 0755 $(BIN)/sluice-lab $(BIN)/sluice-agent $(BIN)/sluice-controller $(BIN)/sluice-cni $(BIN)/sluicectl /usr/local/bin/
	sluice-lab up --demo

lab-down: need-root build
	$(LAB) down

test: unit integration e2e

unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

integration: deps build
	$(GO) test -tags integration -count=1 -v ./test/integration/...

e2e: deps kube-binaries
	$(GO) test -tags e2e -count=1 -v -timeout 60m ./test/e2e/...

# Benchmarks: side by side with their anchors, Markdown on stdout
# (copied into docs/performance.md with the machine and command).
bench: bench-podnet bench-netpol bench-proxy bench-proxyscale

bench-podnet: deps build
	$(GO) build -o $(BIN)/bench-podnet ./bench/podnet
	$(BIN)/bench-podnet

bench-proxyscale: deps
	$(GO) build -o $(BIN)/bench-proxyscale ./bench/proxyscale
	$(BIN)/bench-proxyscale

bench-netpol: deps build kube-binaries
	$(GO) build -o $(BIN)/bench-netpol ./bench/netpol
	$(BIN)/bench-netpol

# The service proxy against kube-proxy (nftables, iptables modes), on a lab of its own.
bench-proxy: deps build kube-binaries
	$(GO) build -o $(BIN)/bench-proxy ./bench/proxy
	$(BIN)/bench-proxy

clean:
	rm -rf $(BIN)
