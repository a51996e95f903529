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

.PHONY: help venv sandbox-tools prometheus scanners run contest test test-fast lint bench bench-integrity bench-proposer bench-contest gpu-check bench-operator bench-scale e2e docs image clean

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

# Debian's prometheus package, unpacked (no service, no root needed once the package lists exist):
# the end-to-end test scrapes the operator with it.
PROMETHEUS_DIR ?= $(HOME)/.cache/autoresearch-operator/prometheus
PROMETHEUS := $(PROMETHEUS_DIR)/usr/bin/prometheus

prometheus: $(PROMETHEUS) ## Fetch Debian's prometheus into ~/.cache (the metrics end-to-end test runs it)

$(PROMETHEUS):
	@echo "==> fetching Debian's prometheus package into $(PROMETHEUS_DIR)"
	@mkdir -p $(PROMETHEUS_DIR)/deb
	@cd $(PROMETHEUS_DIR)/deb && rm -f prometheus_*.deb && \
		{ apt-get download prometheus 2>/dev/null || \
		  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download prometheus; }; } || \
		{ echo "error: could not fetch Debian's prometheus package (apt-get download prometheus)"; exit 1; }
	@dpkg-deb -x $(PROMETHEUS_DIR)/deb/prometheus_*.deb $(PROMETHEUS_DIR)
	@$(PROMETHEUS) --version | head -1

# checkov (own venv) and kube-score (built from its Go module), pinned in the script, cached in
# ~/.cache/autoresearch-operator: tests/chart/test_security_scan.py scans what the operator deploys.
scanners: ## Install the security scanners checkov and kube-score into ~/.cache (the scan test runs them)
	@PYTHON=$(PYTHON) hack/scanners.sh

run: venv sandbox-tools ## Run an example org locally on the CPU (mutate proposer unless OPENAI_API_KEY is set)
	$(VENV)/bin/autoresearch run $(EXAMPLE) --workdir $(RUNS) --corpus $(CORPUS) --quick --proposer auto
	$(VENV)/bin/autoresearch compare --workdir $(RUNS)
	$(VENV)/bin/autoresearch plot --workdir $(RUNS) --output $(RUNS)/progress.png

contest: venv sandbox-tools ## Run the example contest locally on the CPU: four program.md files, two rounds, about 30 min (mutate unless OPENAI_API_KEY is set)
	$(VENV)/bin/autoresearch contest program-examples/contest.yaml --workdir $(RUNS) --corpus $(CORPUS) --quick --time-budget 5 --proposer auto
	$(VENV)/bin/autoresearch plot --contest contest --workdir $(RUNS) --output $(RUNS)/contest.png

test: venv sandbox-tools prometheus scanners ## Run every test: unit, trainer on the CPU, loop integration, cluster, Prometheus, security scans
	$(VENV)/bin/pytest

test-fast: venv ## Run the tests that take seconds (no training, no cluster)
	$(VENV)/bin/pytest -m "not slow and not cluster"

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check operator tests trainer-image hack benchmarks
	$(VENV)/bin/mypy

bench: venv sandbox-tools ## Benchmarks: duty cycle of the local loop, trainer throughput (gpu_check.py, tiny, CPU), honest runs vs harness attacks
	$(PY) benchmarks/duty_cycle.py --corpus $(CORPUS)
	$(PY) benchmarks/gpu_check.py --corpus $(CORPUS) --profile tiny --time-budget 30 --device cpu --report $(RUNS)/trainer-throughput.json
	$(PY) benchmarks/harness_attacks.py --corpus $(CORPUS) --data-cache $(RUNS)/bench-data --workdir $(RUNS)/harness-attacks --report $(RUNS)/harness-attacks.json

bench-integrity: venv sandbox-tools ## Keep decisions vs noise (real tiny CPU orgs + a simulation of the policy), beside the old one-run rule: about 12 min
	$(PY) benchmarks/integrity.py --corpus $(CORPUS) --workdir $(RUNS)/integrity --report $(RUNS)/integrity.json --alternative confirm_runs=4 $(INTEGRITY_ARGS)

bench-proposer: venv ## LLM replies as real models write them: share of a 52-reply corpus turned into the intended candidate or rejection; the prompt's size in tokens
	$(PY) benchmarks/reply_corpus.py
	$(PY) benchmarks/prompt_size.py

bench-contest: venv sandbox-tools ## Does meta-research pay? A 3-entrant, 2-round CPU contest: gain per GPU-hour of round 1 vs round 2, with intervals: about 11 min
	$(PY) benchmarks/contest.py --corpus $(CORPUS) --workdir $(RUNS)/bench-contest --report $(RUNS)/bench-contest.json $(CONTEST_ARGS)

# With PY=python3 (a GPU machine's own torch, no network) it neither builds .venv nor installs bwrap.
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),venv sandbox-tools) ## The GPU path in one run: full profile, 300 s, cuda; tokens/s, MFU, val/test bpb, duty -> runs/gpu-check.json
	$(PY) benchmarks/gpu_check.py --corpus $(CORPUS) --profile full --time-budget 300 --device cuda $(GPU_CHECK_ARGS)

e2e: venv sandbox-tools prometheus ## Bring the test cluster up, install the CRD, run the operator and its end-to-end tests
	$(VENV)/bin/pytest tests/cluster tests/operator -m cluster

bench-operator: venv sandbox-tools ## Operator overhead per experiment on the test cluster (Job done -> status, next Job)
	$(PY) benchmarks/operator_overhead.py --experiments 6 --poll-seconds 1

bench-scale: venv ## Operator at scale on kwok (own cluster): 50 orgs, 200 GPU nodes; scheduling, CPU, RSS, API requests
	$(PY) benchmarks/operator_scale.py --orgs 50 --experiments 4 --nodes 200

docs: venv ## Regenerate crds/, the chart's CRD copies, docs/crd-reference.md, docs/crd-contest-reference.md and the prompt example in docs/proposers.md
	$(VENV)/bin/autoresearch crd > crds/researchorg.yaml.tmp && mv crds/researchorg.yaml.tmp crds/researchorg.yaml
	cp crds/researchorg.yaml charts/autoresearch-operator/crds/researchorg.yaml
	$(VENV)/bin/autoresearch crd --reference > docs/crd-reference.md.tmp && mv docs/crd-reference.md.tmp docs/crd-reference.md
	$(VENV)/bin/autoresearch crd --kind contest > crds/researchcontest.yaml.tmp && mv crds/researchcontest.yaml.tmp crds/researchcontest.yaml
	cp crds/researchcontest.yaml charts/autoresearch-operator/crds/researchcontest.yaml
	$(VENV)/bin/autoresearch crd --kind contest --reference > docs/crd-contest-reference.md.tmp && mv docs/crd-contest-reference.md.tmp docs/crd-contest-reference.md
	$(PY) benchmarks/prompt_size.py --write-doc docs/proposers.md

# Image names default to the chart's (values.yaml images.*.repository, tag = Chart.yaml appVersion).
REGISTRY ?= ghcr.io/autoresearch-operator
IMAGE_TAG ?= $(shell sed -nE 's/^appVersion:[[:space:]]*"?([^"[:space:]]+)"?.*$$/\1/p' charts/autoresearch-operator/Chart.yaml)
OPERATOR_IMAGE ?= $(REGISTRY)/operator:$(IMAGE_TAG)
TRAINER_IMAGE ?= $(REGISTRY)/trainer:$(IMAGE_TAG)
DOCKER ?= $(firstword $(foreach tool,docker podman,$(if $(shell command -v $(tool) 2>/dev/null),$(tool))))

image: ## Build the operator and trainer images (needs docker or podman)
	@test -n "$(DOCKER)" || { echo "make image: neither docker nor podman is installed (or pass DOCKER=...)" >&2; exit 1; }
	$(DOCKER) build -f operator/Dockerfile -t $(OPERATOR_IMAGE) .
	$(DOCKER) build -f trainer-image/Dockerfile -t $(TRAINER_IMAGE) trainer-image

clean: ## Remove local runs and caches (keeps .venv)
	rm -rf $(RUNS) .pytest_cache .mypy_cache .ruff_cache

-include hack/cluster/cluster.mk
