# microshop's everyday commands. Needs only Python >= 3.11 and make: uv is installed into .tools/ if missing.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install up test test-unit test-e2e lint typecheck imports check bench clean

help: ## List the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.5"

.venv/.installed: uv.lock pyproject.toml $(wildcard */pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: .venv/.installed ## Install everything into .venv (from uv.lock)

up: install ## Run the shop: every service as its own process, on http://127.0.0.1:8000 (ARGS="--scale products=2")
	.venv/bin/microshop up $(ARGS)

test: install ## Run all tests (unit, API, end-to-end on the embedded defaults; infra tests when servers run)
	.venv/bin/pytest

test-unit: install ## Unit and API tests only (no processes started)
	.venv/bin/pytest -m "not e2e"

test-e2e: install ## End-to-end tests through the gateway
	.venv/bin/pytest -m e2e

lint: install ## ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: install ## mypy --strict on the kit, the contracts and the launcher
	.venv/bin/mypy kit/src contracts/src launcher/src

imports: install ## Services never import each other
	.venv/bin/lint-imports

check: lint typecheck imports ## Every static check CI runs

.PHONY: deploy-check
deploy-check: install ## Validate deploy/ offline: hadolint, yamllint, kubernetes-validate, checkov
	.venv/bin/hadolint deploy/docker/*/Dockerfile
	.venv/bin/yamllint --strict -c deploy/.yamllint.yaml deploy
	.venv/bin/kubernetes-validate --strict --quiet $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))
	.venv/bin/checkov --config-file deploy/.checkov.yaml --directory deploy

bench: install ## Benchmarks (see bench/README.md)
	.venv/bin/python bench/run.py

clean: ## Remove local state (var/) and caches; keeps .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
