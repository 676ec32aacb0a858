# perpdex — two commands: `make demo` and `make test`. Each bootstraps what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# ape-foundry looks for `anvil` on PATH: ours ships inside the npm package.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all demo test bench fuzz devnet venv node clean compile

all: test

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

venv: $(STAMP)
node: $(NODE_STAMP)

CONTRACTS := $(shell find contracts -name '*.vy' -o -name '*.vyi')
BUILD := .build/__local__.json

# ape's own cache can miss a change; rebuild whenever a contract source changed
$(BUILD): $(STAMP) $(CONTRACTS)
	$(BIN)/ape compile --force > /dev/null
	touch $@

compile: $(BUILD)

demo: $(STAMP) $(NODE_STAMP) $(BUILD)
	$(BIN)/python -m perpdex.demo

test: $(STAMP) $(NODE_STAMP) $(BUILD)
	$(BIN)/python -m pytest tests -q

bench: $(STAMP) $(NODE_STAMP) $(BUILD)
	$(BIN)/python -m perpdex.bench

fuzz: $(STAMP) $(NODE_STAMP) $(BUILD)
	PERPDEX_FUZZ_PROFILE=long $(BIN)/python tests/fuzz/run_long.py

devnet: $(STAMP) $(NODE_STAMP) $(BUILD)
	bash scripts/devnet.sh

clean:
	rm -rf .build .pytest_cache .hypothesis
