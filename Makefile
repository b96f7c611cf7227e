# Set-up for shopctl. Every target is idempotent and quick when its work is done.
#   make up     the demo shop, running (installs what is missing first)
#   make test   the whole test suite against real Docker, Consul, RabbitMQ and PostgreSQL
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SERVICE_REQS := $(wildcard services/*/requirements.txt)
STAMP := $(VENV)/.shopctl-installed

.PHONY: up test venv system engines lint clean

up: venv system engines
	$(BIN)/shopctl up

test: venv system engines
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# The stamp depends on every file that changes what gets installed.
$(STAMP): pyproject.toml setup.py services/shopkit/pyproject.toml $(SERVICE_REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e services/shopkit $(addprefix -r ,$(SERVICE_REQS))
	touch $@

# System parts: Docker engine, debootstrap, RabbitMQ, consul, prometheus, PostgreSQL (only those
# missing).
system:
	bash scripts/install-system.sh

# Start the engines the tests need when they do not answer yet (Docker, RabbitMQ).
engines:
	bash scripts/start-engines.sh

lint: venv
	$(BIN)/ruff check shopctl services tests

clean:
	rm -rf $(VENV) .pytest_cache
