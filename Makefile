# perpdex — two commands: `make demo` and `make test`. Each bootstraps what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# ape-foundry looks for `anvil` on PATH: ours ships inside the npm package.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)
# pip installs without compiling every module of every package (--no-compile: about 18 s of CPU
# for 8,700 files); each process then compiles what it imports, once, into this cache inside the
# virtual environment, not next to the sources (whatever the calling environment says).
export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache
unexport PYTHONDONTWRITEBYTECODE

.PHONY: all demo test bench sim-bench sim-scaling cli-bench fuzz devnet venv node clean compile web chromium

all: test

# Bootstrap steps print one line each; their tools' output goes to .bootstrap/STEP.log, shown
# if the step fails. $(call step,STEP,COMMANDS)
LOGS := .bootstrap
step = mkdir -p $(LOGS) && { $(2); } > $(LOGS)/$(1).log 2>&1 || \
	{ tail -n 40 $(LOGS)/$(1).log; echo "$(1) failed: the whole output is in $(LOGS)/$(1).log"; exit 1; }

$(STAMP): pyproject.toml requirements.lock
	@echo "setting up the Python environment in $(VENV)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(call step,pip,$(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install --no-compile -c requirements.lock -e .)
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo "installing anvil (the npm package in node_modules)…"
	@$(call step,npm,npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
	@touch $@

venv: $(STAMP)
node: $(NODE_STAMP)

CONTRACTS := $(shell find contracts -name '*.vy' -o -name '*.vyi')
BUILD := .build/__local__.json

# One compilation for ape's tools and titanoboa's (perpdex/build.py): ape's manifest and
# .build/titanoboa.pickle; rebuilt whenever a contract source changed
$(BUILD): $(STAMP) $(CONTRACTS) ape-config.yaml perpdex/build.py perpdex/compiled.py
	@echo "compiling contracts…"
	@$(call step,compile,$(BIN)/python -m perpdex.build)
	@touch $@

compile: $(BUILD)

# The trader's page (web/): tsc type-checks web/src (web/tsconfig.json, nothing emitted), then
# esbuild bundles it with the contracts' ABIs into web/dist.
WEB_SOURCES := $(wildcard web/src/*.ts web/*.html web/*.css web/*.mjs web/tsconfig.json)
WEB := web/dist/index.html

$(WEB): $(NODE_STAMP) $(BUILD) $(WEB_SOURCES)
	@echo "type-checking and building the web page (web/dist)…"
	@$(call step,web,tsc --noEmit -p web && node web/build.mjs)

# make web [WEB_PORT=8000] [PORT=8545] [MANIFEST=deployments/31337.json]: the page, for the
# devnet `make devnet` runs (its node and manifest), at http://127.0.0.1:8000/
web: $(STAMP) $(WEB)
	@$(BIN)/python -m perpdex.web --port $(or $(WEB_PORT),8000) --rpc http://127.0.0.1:$(or $(PORT),8545) \
		$(if $(MANIFEST),--manifest $(MANIFEST))

# tests/web drives Debian's chromium through chromedriver: installed with apt-get where we can
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium and chromium-driver (apt-get) for the browser test…"; \
			$(call step,chromium,apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver); \
		else \
			echo "the browser test (tests/web) needs Debian's chromium and chromium-driver in /usr/bin:" \
				"run 'sudo apt-get install chromium chromium-driver' (or make test as root)"; exit 1; \
		fi; \
	fi

demo: $(STAMP) $(BUILD)
	@echo "replaying the March 2020 crash on the compiled contracts (python -m perpdex.sim.demo, about a minute)…"
	@$(BIN)/python -m perpdex.sim.demo

test: $(STAMP) $(NODE_STAMP) $(BUILD) $(WEB) chromium
	@echo "running the test suite (pytest tests; the anvil tests start their own nodes)…"
	@$(BIN)/python -m pytest tests -q

bench: $(STAMP) $(NODE_STAMP) $(BUILD)
	$(BIN)/python -m perpdex.bench

# the simulator's speed: 5,000 accounts through March 2020 (216 hourly steps) -> bench/sim.json
sim-bench: $(STAMP) $(BUILD)
	$(BIN)/python -m perpdex.sim.bench

# time per step against accounts: 1,000 / 5,000 / 10,000 -> bench/sim-1000.json, bench/sim.json, bench/sim-10000.json
sim-scaling: $(STAMP) $(BUILD)
	$(BIN)/python -m perpdex.sim.bench --accounts 1000 --out bench/sim-1000.json
	$(BIN)/python -m perpdex.sim.bench --accounts 5000 --out bench/sim.json
	$(BIN)/python -m perpdex.sim.bench --accounts 10000 --out bench/sim-10000.json

cli-bench: $(STAMP) $(NODE_STAMP) $(BUILD)
	$(BIN)/python -m perpdex.cli_bench

fuzz: $(STAMP) $(NODE_STAMP) $(BUILD)
	PERPDEX_FUZZ_PROFILE=long $(BIN)/python tests/fuzz/run_long.py

# make devnet [PORT=9545] [PRICES=walk|none|march-2020|august-2024]
devnet: $(STAMP) $(NODE_STAMP) $(BUILD)
	@bash scripts/devnet.sh $(if $(PORT),--port $(PORT)) $(if $(PRICES),--prices $(PRICES))

clean:
	rm -rf .build .pytest_cache .hypothesis $(LOGS)
