# Switchyard. `make run` starts a local endpoint with a demo workload
# (`make run ARGS='--free-ports'` passes flags to `endpoint up`); `make build`
# installs only what building needs, `make test` also what the tests need,
# and runs vet and the race tests.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := bin/switchyard
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DEMO    ?= 5000
# Managers refuse to run tasks as root; a root shell (a fresh VM) says so explicitly.
ROOTFLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
# ARGS are more flags of `switchyard endpoint up` for `make run`, e.g.
# ARGS='--listen-http 127.0.0.1:0' or ARGS='--free-ports'.
ARGS    ?=
# staticcheck is pinned; `go run` fetches it through the module proxy.
STATICCHECK := v0.8.2
# The managers' Python workers: Debian's python3 when it has cloudpickle.
PYTHON  ?= $(shell /usr/bin/python3 -c 'import cloudpickle' 2>/dev/null && echo /usr/bin/python3 || echo python3)

.PHONY: all build run test deps deps-build vet fuzz bench contract clean pytest-sdk

all: build

deps-build:
	@scripts/install-deps.sh build

deps:
	@scripts/install-deps.sh test

build: deps-build
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/switchyard

run: build
	$(BIN) endpoint up --demo $(DEMO) --max-managers 2 --python $(PYTHON) $(ROOTFLAG) $(ARGS)

vet: deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

test: deps vet pytest-sdk
	$(GO) test -race -count=1 -timeout 15m ./...

# The Python SDK's tests, with Debian's python3 against a real endpoint.
pytest-sdk: deps build
	SWITCHYARD_BIN=$(CURDIR)/$(BIN) PYTHONPATH=python /usr/bin/python3 -m unittest discover -s python/tests -v

# Every decoder's fuzz test in turn, FUZZTIME each.
FUZZTIME ?= 30s
FUZZERS = messages:FuzzUnpack client:FuzzFastIDs client:FuzzFastEnded client:FuzzFastCensus client:FuzzIDsBody \
	forwarder:FuzzListItems forwarder:FuzzParseCursor internal/store:FuzzLogReplay internal/taskstore:FuzzDecodeRecord \
	internal/taskspec:FuzzDecodePython manager:FuzzWorkerFrames
fuzz: deps-build
	@set -e; for f in $(FUZZERS); do \
		echo "== $${f#*:} (./$${f%%:*})"; \
		$(GO) test -run '^$$' -fuzz "^$${f#*:}$$" -fuzztime $(FUZZTIME) ./$${f%%:*}; \
	done

# Modest defaults; e.g. `make bench BENCHFLAGS=--no-persist` to compare.
BENCHFLAGS ?= --tasks 20000 --rtt 200

bench: build
	$(BIN) bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./messages

# The contract check (of docs/contract.md) is not part of this repository;
# CONTRACT says where it is: make contract CONTRACT=path/to/contract_check.py
CONTRACT ?=

contract: build
	@test -n "$(CONTRACT)" || { echo "make contract: set CONTRACT=path/to/contract_check.py (the check is not part of a clone)"; exit 1; }
	@test -f "$(CONTRACT)" || { echo "make contract: $(CONTRACT) not found; set CONTRACT=path/to/contract_check.py"; exit 1; }
	python3 $(CONTRACT) e2e

clean:
	rm -rf bin var
