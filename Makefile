# One-command set-up: `make demo` runs the demo (simulator, site, gateway), `make test` runs CI.
# Both create .venv with the project and its development tools on first use; `make test` first
# makes sure the servers the tests start are installed (scripts/ensure-test-servers).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-compiled compiled test-servers lint typecheck demo sandbox bench bench-pure \
	bench-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,speed]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict gateway

# redis-server, redis-cli, nginx, openssl and Python's venv: installed with apt when missing
# (as root, or with sudo -n); otherwise a stop with the exact command to run.
test-servers:
	PYTHON='$(PYTHON)' scripts/ensure-test-servers

# The whole suite; the decision core (gateway/core) must keep 100 % branch coverage.
# test-servers first (it may install python3-venv, which creating .venv needs), then the rest.
# Then the same suite again against the compiled build (test-compiled).
test: test-servers
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest --cov=gateway --cov-branch --cov-report=term:skip-covered -q
	$(BIN)/coverage report --include='gateway/core/*' --fail-under=100 --show-missing
	$(MAKE) --no-print-directory test-compiled

# The compiled build (gateway/compiled.py): a copy of the tree in build/compiled whose
# request-path modules mypyc compiled to C extensions. It runs from there with
# PYTHONPATH=build/compiled (tests/conftest.py checks which build a run imports).
COMPILED := build/compiled

compiled: $(STAMP)
	scripts/build-compiled $(COMPILED) $(CURDIR)/$(BIN)/python

# The whole suite against the compiled build, from its copy of the tree (no coverage: compiled
# code is not traced), but the wheel-install test: it builds and installs the pure-Python wheel
# from the sources, the same with or without the compiled copy (the pure run has it; 20 s).
test-compiled: compiled
	cd $(COMPILED) && GATEWAY_EXPECT_COMPILED=1 PYTHONPATH=$(CURDIR)/$(COMPILED) \
		$(CURDIR)/$(BIN)/pytest -q -p no:cacheprovider --ignore=tests/test_wheel_install.py

# The demo: simulator (8090), demo content site (8000) and gateway (8080, admin 8081) on
# 127.0.0.1; prints the URLs to open. Ctrl-C stops all three.
demo: $(STAMP)
	$(BIN)/python -m gateway.demo

# The local platform simulator alone on http://127.0.0.1:8090/api/v3.0 with the seeded customers.
sandbox: $(STAMP)
	$(BIN)/paywall-gateway sandbox --port 8090

# The benchmark (bench/run.py; the README's "Performance"): every scenario next to its
# reference on 127.0.0.1, about 10-15 minutes on two cores; results in bench/results/<UTC time>/.
# `make bench BENCH=--quick` is a smoke run of a minute or two; BENCH takes any bench/run.py
# option (--scenarios auth,proxy, --duration 5, --rounds 5, ...).
# wrk, nginx and redis-server: installed with apt when missing (scripts/ensure-test-servers).
bench-tools:
	PYTHON='$(PYTHON)' scripts/ensure-test-servers bench

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,speed,bench]'
	touch $(BENCH_STAMP)

# make bench measures the compiled build (from its copy of the tree, results written here);
# make bench-pure the pure-Python one, from the source tree.
bench: bench-tools
	$(MAKE) --no-print-directory $(BENCH_STAMP) compiled
	cd $(COMPILED) && PYTHONPATH=$(CURDIR)/$(COMPILED) \
		BENCH_COMMAND="make bench$(if $(BENCH), BENCH='$(BENCH)')" \
		$(CURDIR)/$(BIN)/python bench/run.py --results $(CURDIR)/bench/results $(BENCH)

bench-pure: bench-tools
	$(MAKE) --no-print-directory $(BENCH_STAMP)
	BENCH_COMMAND="make bench-pure$(if $(BENCH), BENCH='$(BENCH)')" \
		$(BIN)/python bench/run.py $(BENCH)

clean:
	rm -rf $(VENV) $(COMPILED) .coverage .mypy_cache .ruff_cache .pytest_cache .hypothesis
