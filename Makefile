# wsfleet. `make run` starts a local fleet; `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := bin
FUZZTIME ?= 60s
# jwx parses token JSON with goccy/go-json instead of encoding/json: half
# the CPU and memory per JWT check (BenchmarkVerify).
export GOFLAGS := -tags=jwx_goccy $(GOFLAGS)

# The binaries of this module; the benchmark harness and the naive baseline
# gateway are built from bench/ (make bench-build).
CMDS := gateway router devfleet loadtest

.PHONY: all build run test test-js vet fmt-check bench bench-rss bench-build bench-fleet bench-resume-storm bench-router-latency bench-test fuzz clean helm-test helm-template images

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# The local fleet (cmd/devfleet; RUNFLAGS="--gateways 3 --nats-servers 3"
# for several nodes). It builds what `make build` builds, saying so: the
# first build downloads the modules and compiles every package, for minutes.
run:
	@mkdir -p $(BIN)
	@echo "building $(addprefix $(BIN)/,$(CMDS)) (the first build downloads the modules and compiles some 400 packages: a few minutes)"
	@set -o pipefail; $(GO) build -v -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS)) 2>&1 | awk ' \
	  /^go: downloading / { print; fflush(); next } \
	  /^[^ #:]+$$/ { if (++n % 50 == 0) { print "  compiled " n " packages..."; fflush() } next } \
	  { print; fflush() } \
	  END { if (n) print "  compiled " n (n == 1 ? " package" : " packages") }'
	$(BIN)/devfleet$(if $(RUNFLAGS), $(RUNFLAGS))

# vet, formatting, every test under the race detector, then the allocation
# tests again without it (the race detector makes sync.Pool drop items);
# the chart's and the benchmark harness's modules too.
test: vet fmt-check helm-test bench-test test-js
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -count=1 -run 'TestAllocs' ./...

# The JavaScript client's unit tests (clients/js: Node's test runner, no
# dependencies to install).
test-js:
	cd clients/js && node --test test/

vet:
	$(GO) vet ./...

# The Helm chart (helm/wsfleet), tested by a Go module of its own (helm/,
# Helm's and Kubernetes' packages stay out of go.mod): helm lint --strict and
# helm template for every helm/wsfleet/ci/*-values.yaml, each object decoded
# strictly into the Kubernetes API types, invariants checked against the
# gateway, router and loadtest binaries built from this tree, which then run
# on the rendered configuration. No helm binary needed.
helm-test:
	cd helm && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

# The chart rendered like `helm template` (VALUES=helm/wsfleet/ci/....yaml, HELM_LINT=1 to lint).
helm-template:
	@cd helm && $(GO) run ./cmd/wsfleet-template $(if $(VALUES),-f $(abspath $(VALUES))) $(if $(HELM_LINT),--lint) wsfleet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Go micro-benchmarks with allocation counts (BENCHCOUNT=3 for three runs).
BENCHCOUNT ?= 1
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./...

# Gateway RSS per idle authenticated connection (docs/benchmarks.md).
bench-rss: build
	$(GO) test -tags benchrss -run 'TestIdleRSS|TestTopicRSS|TestSSEIdleRSS' -count=1 -v -timeout 20m ./gateway/rssbench/ $(RSSFLAGS)

# The fleet benchmark harness, a Go module of its own (bench/, built against
# this tree through a replace directive; what only the harness and the naive
# baseline need stays out of go.mod): bin/bench-fleet, bin/baseline-gateway
# (bench/cmd/...) and bin/nats-server.
bench-build:
	@mkdir -p $(BIN)
	cd bench && $(GO) build -trimpath -o $(abspath $(BIN))/ ./cmd/bench-fleet ./cmd/baseline-gateway
	cd bench && $(GO) build -trimpath -o $(abspath $(BIN))/nats-server github.com/nats-io/nats-server/v2

# The benchmark harness's module: vet and its tests under the race detector.
bench-test:
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...

# The fleet benchmark (bench/cmd/bench-fleet): NATS, K gateway processes on
# one port (SO_REUSEPORT), the router and bin/loadtest, all on loopback;
# connect → hold → deliver → broadcast for wsfleet and for the naive
# baseline (bench/cmd/baseline-gateway); one table of figures, ratios and
# targets. Takes ~11 minutes at the default 100,000 connections.
# BENCHFLAGS="--conns 20000 --runs 1", "--json bench.json", "--million"
# (1,000,000 held, wsfleet only).
bench-fleet: build bench-build
	$(BIN)/bench-fleet --bin $(BIN) $(BENCHFLAGS)

# A reconnect storm with "since" on gateways with --resume: every
# connection reset at once while messages flow, none lost or doubled
# (bench/resume-storm.sh; N=20000 RATE=1000 by default, one gateway per
# 18,000 connections; docs/benchmarks.md).
bench-resume-storm: build bench-build
	N=$(or $(N),20000) RATE=$(or $(RATE),1000) bash bench/resume-storm.sh

# The router's publish latency (the JetStream ack with resume) under
# loadtest deliver through it on a devfleet (bench/router-latency.sh; FLEET
# gives devfleet's flags, "--gateways 2 --nats-servers 3" by default).
bench-router-latency: build bench-build
	FLEET="$(or $(FLEET),--gateways 2 --nats-servers 3)" bash bench/router-latency.sh

# Every fuzz target for FUZZTIME each (seeds in testdata/ run in `make test`).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf $(BIN)

# Container images built without a container daemon (internal/ociimage): a
# tarball per image in dist/images/ for `docker load -i` or `podman load -i`,
# named $(IMAGE_REGISTRY)/wsfleet/<gateway|router|loadtest>:$(VERSION): the
# static binary at /usr/local/bin/<name> (the entrypoint), the build host's
# CA certificates (/etc/ssl/certs/ca-certificates.crt, Debian's
# ca-certificates), the non-root user 65532. The same tree, Go toolchain, CA
# bundle and SOURCE_DATE_EPOCH (default: the last commit's time) give the
# same digests. IMAGEFLAGS="-arch arm64" for arm64; docs/deploy.md#images.
IMAGE_REGISTRY ?= localhost
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
images:
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
	  $(GO) run ./internal/ociimage/cmd/mkimage -go $(GO) -out dist/images -registry $(IMAGE_REGISTRY) -version $(VERSION) $(IMAGEFLAGS)
