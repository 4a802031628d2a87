# Prediction Factory — the commands a person runs. Needs only Python 3.11 (and Java 17 for Spark).
SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help install demo up test lint fmt schema clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install:  ## install uv if missing, then every workspace member and the dev tools (locked)
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
		{ echo "uv not found: installing it with pip"; $(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet uv; }
	$(UV) sync --frozen --all-packages --python $(PYTHON)

demo: install  ## bring the embedded stack up, submit the example configs, show what happened
	$(UV) run --frozen pfactory demo

up: install  ## run the embedded stack (broker, workers, gateway) until Ctrl-C
	$(UV) run --frozen pfactory up

test: install  ## run the whole suite: unit, integration (real Tansu broker, moto_server) and end-to-end
	$(UV) run --frozen pytest

MEMBERS := $(sort $(dir $(wildcard libs/*/src/pfactory/*/__init__.py gateway/src/pfactory/*/__init__.py cli/src/pfactory/*/__init__.py workers/*/src/pfactory/*/__init__.py)))
MYPY_PATH := $(subst $(eval) ,:,$(sort $(foreach m,$(MEMBERS),$(firstword $(subst /pfactory/, ,$(m))))))
MYPY_PACKAGES := $(foreach m,$(MEMBERS),-p pfactory.$(notdir $(patsubst %/,%,$(m))))

lint: install  ## ruff, and strict mypy on every member
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	MYPYPATH=$(MYPY_PATH) $(UV) run --frozen mypy $(MYPY_PACKAGES)

fmt: install  ## format the code
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

schema: install  ## export the config JSON Schemas to ./schemas
	$(UV) run --frozen pfactory schema export schemas

clean:  ## remove local state
	rm -rf .pfactory .pytest_cache .mypy_cache .ruff_cache
