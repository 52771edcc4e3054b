# Switchyard. `make run` starts a local endpoint with a demo workload;
# `make test` installs what it needs and runs vet and the race tests.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := bin/switchyard
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DEMO    ?= 5000
# Managers refuse to run tasks as root; a root shell (a fresh VM) says so explicitly.
ROOTFLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
# staticcheck is pinned; `go run` fetches it through the module proxy.
STATICCHECK := v0.8.2
# The managers' Python workers: Debian's python3 when it has cloudpickle.
PYTHON  ?= $(shell /usr/bin/python3 -c 'import cloudpickle' 2>/dev/null && echo /usr/bin/python3 || echo python3)

.PHONY: all build run test deps vet fuzz bench contract clean pytest-sdk

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/switchyard

run: build
	$(BIN) endpoint up --demo $(DEMO) --max-managers 2 --python $(PYTHON) $(ROOTFLAG)

vet: deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

test: vet pytest-sdk
	$(GO) test -race -count=1 -timeout 15m ./...

# The Python SDK's tests, with Debian's python3 against a real endpoint.
pytest-sdk: build
	SWITCHYARD_BIN=$(CURDIR)/$(BIN) PYTHONPATH=python /usr/bin/python3 -m unittest discover -s python/tests -v

fuzz: deps
	$(GO) test -run '^$$' -fuzz FuzzUnpack -fuzztime 60s ./messages

# Modest defaults; e.g. `make bench BENCHFLAGS=--no-persist` to compare.
BENCHFLAGS ?= --tasks 20000 --rtt 200

bench: build
	$(BIN) bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./messages

contract: build
	@test -f ../shared/contract_check.py || { echo "make contract runs the project's shared contract check (../shared/contract_check.py), which a clone does not have; make test covers the same ground"; exit 1; }
	python3 ../shared/contract_check.py e2e

clean:
	rm -rf bin var
