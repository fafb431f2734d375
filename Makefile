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

.PHONY: help deps venv kafka install test lint demo stack-up stack-down stack-status bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# When it installs PostgreSQL, a drop-in read by Debian's postgresql-common keeps the package
# from creating and starting its own "main" cluster on port 5432: `jobpulse stack up` runs its
# cluster from the state dir, on the port of JOBPULSE_POSTGRES_URL (5432 by default).
deps: ## Debian packages: redis-server, postgresql, chromium, Java 17, Maven (apt-get update only if needed)
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

install: deps venv kafka

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

bench: install ## Benchmarks: dataflow vs a plain loop, throughput, state size, producer rates, dashboard load (prints numbers)
	$(BIN)/python -m benchmarks

clean: ## Remove the virtualenv and tool caches (not the stack state in .jobpulse/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
