# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install lint typecheck test demo bench clean

# grpc-js-xds, the third xDS client the tests run (tests/grpcjs), at the versions the lock file
# pins; node_modules is not committed.
GRPCJS := tests/grpcjs

install: $(VENV)/.installed $(GRPCJS)/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(GRPCJS)/node_modules/.installed: $(GRPCJS)/package.json $(GRPCJS)/package-lock.json
	cd $(GRPCJS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Lint and types first: CI runs exactly this.
test: lint typecheck
	$(BIN)/pytest

# The built-in fleet served to a real Envoy gateway, with local backends for each member.
demo: install
	$(BIN)/python -m harness.demo

bench: install
	$(BIN)/python -m benchmarks

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
