# ml-platform: every target installs what it needs into the repo (.venv, node_modules) on first use.
# Nothing global is assumed beyond Python >= 3.11 and npm.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.8
STAGE ?=
# The pinned Node.js (node_modules/.bin/node) runs jsii and the CDK CLI; the machine's own node is ignored.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export CDK_DISABLE_CLI_TELEMETRY := true
# Where the pinned upstream CRDs and chart defaults live (tests only).
export K8S_REFERENCE ?= $(abspath $(CURDIR)/../shared/k8s-reference)

CDK := node_modules/.bin/cdk
STAGE_CONTEXT := $(if $(STAGE),-c stages=$(STAGE),)

.PHONY: help install synth test lint bench clean manifests snapshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ml-platform needs Python >= 3.11, found " + sys.version'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --quiet --python $(VENV)/bin/python requirements.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	node_modules/.bin/node --version
	touch $@

install: $(VENV)/.installed node_modules/.installed ## install the pinned Python and Node toolchains into the repo

synth: install ## synthesize every stage (or STAGE=dev) into cdk.out and print a summary per stage
	rm -rf cdk.out
	$(CDK) synth --quiet $(STAGE_CONTEXT) > /dev/null
	$(VENV)/bin/python -m scripts.synth_summary cdk.out

test: install ## run every check: unit, policy gates (cfn-lint, cdk-nag, schemas), snapshots
	$(VENV)/bin/python -m pytest -n 2 -q

manifests: synth ## write each stage's Kubernetes manifests as plain YAML into dist/<stage>/
	$(VENV)/bin/python -m scripts.manifests cdk.out dist

snapshots: install ## rewrite the template snapshots after a reviewed change
	UPDATE_SNAPSHOTS=1 $(VENV)/bin/python -m pytest -q tests/snapshot

lint: install ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: install ## wall time and peak memory of a full synth, a one-stage synth and make test
	$(VENV)/bin/python -m scripts.bench

clean: ## remove build output (keeps the installed toolchains)
	rm -rf cdk.out dist .pytest_cache .mypy_cache .ruff_cache

.PHONY: cost diagram

cost: synth ## estimated monthly cost per stage and component (cdk.out + stage configs, dated prices)
	$(VENV)/bin/python -m scripts.cost cdk.out

diagram: synth ## draw each stage as SVG into dist/diagrams/ (dev and prod also into docs/diagrams/)
	$(VENV)/bin/python -m scripts.diagram cdk.out dist/diagrams docs/diagrams

.PHONY: guard
BASE ?= origin/main
guard: install ## fail when a stateful resource would be removed or replaced compared with BASE (a git ref)
	$(VENV)/bin/python -m scripts.guard --base $(BASE)
