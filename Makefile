# autoresearch-operator — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)
CORPUS ?= $(SHARED)/data/tinyshakespeare.txt
RUNS ?= runs
EXAMPLE ?= program-examples/baseline/org.yaml

.PHONY: help venv sandbox-tools run test test-fast lint bench bench-operator e2e clean

help: ## List every target with what it does
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@echo "==> creating the virtual environment in $(VENV) (first run downloads torch: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## Create .venv and install the package with its dev tools

sandbox-tools: ## Install bubblewrap (the training sandbox) when missing and we may
	@command -v bwrap >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "==> installing bubblewrap (sandbox for train.py)"; \
			(apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; }); \
		else echo "warning: bubblewrap (bwrap) is not installed; the harness falls back to a separate user or refuses"; fi; }

run: venv sandbox-tools ## Run an example org locally on the CPU (mutate proposer unless OPENAI_API_KEY is set)
	$(VENV)/bin/autoresearch run $(EXAMPLE) --workdir $(RUNS) --corpus $(CORPUS) --quick --proposer auto
	$(VENV)/bin/autoresearch compare --workdir $(RUNS)
	$(VENV)/bin/autoresearch plot --workdir $(RUNS) --output $(RUNS)/progress.png

test: venv sandbox-tools ## Run every test: unit, trainer on the CPU, loop integration, cluster
	$(VENV)/bin/pytest

test-fast: venv ## Run the tests that take seconds (no training, no cluster)
	$(VENV)/bin/pytest -m "not slow and not cluster"

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check operator tests trainer-image hack benchmarks
	$(VENV)/bin/mypy

bench: venv sandbox-tools ## Benchmarks: duty cycle of the local loop, trainer throughput
	$(PY) benchmarks/duty_cycle.py --corpus $(CORPUS)
	$(PY) benchmarks/trainer_throughput.py --corpus $(CORPUS)

e2e: venv sandbox-tools ## Bring the test cluster up, install the CRD, run the operator and its end-to-end tests
	$(VENV)/bin/pytest tests/cluster tests/operator -m cluster

bench-operator: venv sandbox-tools ## Operator overhead per experiment on the test cluster (Job done -> status, next Job)
	$(PY) benchmarks/operator_overhead.py --experiments 6 --poll-seconds 1

clean: ## Remove local runs and caches (keeps .venv)
	rm -rf $(RUNS) .pytest_cache .mypy_cache .ruff_cache

-include hack/cluster/cluster.mk
