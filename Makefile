# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install lint typecheck test proptest demo bench conformance clean protos fuzz

# grpc-js-xds, the third xDS client the tests run (tests/grpcjs), at the versions the lock file
# pins; node_modules is not committed.
GRPCJS := tests/grpcjs

install: $(VENV)/.installed $(GRPCJS)/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# npm ci has been seen to hang on the registry: each try is bounded, and a hung one tried again.
$(GRPCJS)/node_modules/.installed: $(GRPCJS)/package.json $(GRPCJS)/package-lock.json
	cd $(GRPCJS) && for try in 1 2 3; do \
		timeout 300 npm ci --no-audit --no-fund --loglevel=error --fetch-timeout=60000 && exit 0; \
		echo "npm ci: try $$try failed" >&2; \
	done; exit 1
	touch $@

# Our own API (protos/), compiled into the package; tests/test_protos.py fails when the committed
# modules are not what this makes. Messages and type stubs only: the servicer and the client
# register the methods themselves, so no untyped generated gRPC code enters the package.
PROTOS := $(wildcard protos/xdsfleet/*/*/*.proto)
protos: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. $(PROTOS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Lint and types first: CI runs exactly this.
test: lint typecheck
	$(BIN)/pytest

# The protocol machines' property tests with many more examples than `make test` runs
# (minutes, not seconds); a failure prints the shortest sequence of steps that breaks a rule.
proptest: install
	XDSFLEET_HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/test_protocol_properties.py tests/test_protocol_wakes.py --timeout 0 -p no:cacheprovider

# The built-in fleet served to a real Envoy gateway, with local backends for each member.
demo: install
	$(BIN)/python -m harness.demo

# The document fuzzer for long: `make test` runs 40 examples per property, this 5,000.
FUZZ_EXAMPLES ?= 5000
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz_documents.py -o timeout=0 -q

bench: install
	$(BIN)/python -m benchmarks

# The upstream Gateway API HTTPRoute conformance cases replayed through `serve` and real Envoys
# (conformance/, docs/fleet.md "Gateway API support"). GATEWAY_API: the conformance/ folder of a
# kubernetes-sigs/gateway-api checkout (never kept here); without it the harness says so, exit 2.
GATEWAY_API ?=
conformance: install
	$(BIN)/python -m conformance --upstream "$(GATEWAY_API)" $(TESTS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info $(GRPCJS)/node_modules

# A fleet cluster and two member clusters in kind, xdsfleet and Envoys deployed, traffic and
# failure checks (k8s/e2e/run.sh). Needs Docker, kind and kubectl: without them it says so and
# fails, it never pretends to pass.
.PHONY: e2e-kind
e2e-kind:
	k8s/e2e/run.sh

# Every failover scenario at 200 requests/s with full figures, PNG timelines and the figures
# section of docs/failover.md, beside a DNS-failover baseline (dnsmasq, from Debian, installed
# when missing). Needs root for network namespaces; about 15 minutes.
.PHONY: bench-dr
bench-dr: install
	@command -v dnsmasq >/dev/null || ( apt-get update -q && apt-get install -y -q dnsmasq )
	$(BIN)/python -m benchmarks.dr --dns
