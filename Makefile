# wsfleet. `make run` starts a local fleet; `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := bin
FUZZTIME ?= 60s

CMDS := gateway router devfleet loadtest

.PHONY: all build run test vet fmt-check bench bench-rss fuzz clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

run: build
	$(BIN)/devfleet

# vet, formatting, every test under the race detector, then the allocation
# tests again without it (the race detector makes sync.Pool drop items).
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -count=1 -run 'TestAllocs' ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Go micro-benchmarks with allocation counts.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Gateway RSS per idle authenticated connection (docs/benchmarks.md).
bench-rss: build
	$(GO) test -tags benchrss -run TestIdleRSS -count=1 -v -timeout 10m ./gateway/rssbench/ $(RSSFLAGS)

# Every fuzz target for FUZZTIME each (seeds in testdata/ run in `make test`).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf $(BIN)
